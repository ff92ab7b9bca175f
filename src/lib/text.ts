import { z } from 'zod';

/**
 * A name people give or see (a computer, a policy, a token, a filter): trimmed, 1 to
 * `max` characters, no control character. A NUL used to be stored and then shown
 * cut short; a line break would forge a line of a log or a CSV.
 */
export const displayName = (max: number) =>
  z
    .string()
    .trim()
    .min(1)
    .max(max)
    // biome-ignore lint/suspicious/noControlCharactersInRegex: refusing control characters is the point
    .regex(/^[^\u0000-\u001f\u007f]*$/, 'no control characters (NUL, tab, line breaks)');
