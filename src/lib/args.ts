import { parseArgs, type ParseArgsConfig } from 'node:util';

/**
 * The command line's one way to read a command's arguments: `--help` and `-h` print
 * the command's help on stdout (the caller exits 0), and an option the command does
 * not have is refused naming the closest one it has (the caller exits 2).
 */

/** A mistake in how a command was called: printed on one line, exit code 2. */
export class UsageError extends Error {}

export type Options = NonNullable<ParseArgsConfig['options']>;

export interface Command<O extends Options> {
  /** The command as typed, e.g. `patchtree catalog build`. */
  name: string;
  /** What `--help` prints: the usage line(s), what it does, each option. */
  help: string;
  options: O;
  positionals?: boolean;
}

/** Edit distance (insertions, deletions, substitutions, adjacent swaps), for suggestions. */
export function distance(a: string, b: string): number {
  const d: number[][] = Array.from({ length: a.length + 1 }, (_, i) => [i, ...Array<number>(b.length).fill(0)]);
  for (let j = 1; j <= b.length; j++) d[0]![j] = j;
  for (let i = 1; i <= a.length; i++)
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      let v = Math.min(d[i - 1]![j]! + 1, d[i]![j - 1]! + 1, d[i - 1]![j - 1]! + cost);
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) v = Math.min(v, d[i - 2]![j - 2]! + 1);
      d[i]![j] = v;
    }
  return d[a.length]![b.length]!;
}

/** The candidate closest to `word` (a prefix of one counts as close), or null when none is near. */
export function closest(word: string, candidates: readonly string[]): string | null {
  let best: string | null = null;
  let bestD = Infinity;
  for (const c of candidates) {
    // A prefix either way is near: `--serv` for --server, `--data-dir` for --data.
    const d = c.startsWith(word) || (c.length >= 3 && word.startsWith(c)) ? 0.5 : distance(word, c);
    if (d < bestD) {
      best = c;
      bestD = d;
    }
  }
  return bestD <= Math.max(2, Math.floor(word.length / 3)) ? best : null;
}

/** The message for an option a command does not have: the closest it has, and where its help is. */
export function unknownOption(option: string, known: readonly string[], command: string): string {
  const word = option.replace(/^-+/, '').split('=')[0]!;
  const near = closest(word, known);
  return `unknown option '${option}'${near ? `; did you mean --${near}?` : ''} (${command} --help lists the options)`;
}

/** Whether the arguments ask for help. */
export const wantsHelp = (args: readonly string[]): boolean => args.includes('--help') || args.includes('-h');

/**
 * Parses a command's arguments; null when they asked for help (printed). Throws
 * UsageError for an unknown option (with the closest known one), a value missing, or
 * a positional argument where the command takes none.
 */
export function parseCommand<O extends Options>(cmd: Command<O>, args: readonly string[]) {
  if (wantsHelp(args)) {
    console.log(cmd.help);
    return null;
  }
  try {
    return parseArgs({ args: [...args], options: cmd.options, strict: true, allowPositionals: Boolean(cmd.positionals) });
  } catch (err) {
    throw usageOf(err, Object.keys(cmd.options), cmd.name);
  }
}

/** A parseArgs error as a UsageError (an unknown option with a suggestion); other errors as they are. */
export function usageOf(err: unknown, known: readonly string[], command: string): Error {
  const e = err as Error & { code?: string };
  if (e.code === 'ERR_PARSE_ARGS_UNKNOWN_OPTION') {
    const option = /'([^']+)'/.exec(e.message)?.[1] ?? '?';
    return new UsageError(unknownOption(option, known, command));
  }
  if (typeof e.code === 'string' && e.code.startsWith('ERR_PARSE_ARGS')) return new UsageError(`${e.message.split('\n')[0]} (${command} --help)`);
  return e;
}
