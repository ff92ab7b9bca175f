import { parentPort, workerData } from 'node:worker_threads';
import { AppError } from '../lib/errors.js';
import { PARSE_AHEAD, PARSE_BATCH, parseCatalog, type ParseMessage, type ParsedLine } from './parse-lines.js';

/**
 * Worker thread entry of an import's parse stage (parse-lines.ts): posts the parsed
 * lines in batches, at most PARSE_AHEAD of them unread; the importer answers each
 * batch it takes with 'more'.
 */
async function run(file: string, origin: string, port: NonNullable<typeof parentPort>): Promise<void> {
  let credit = PARSE_AHEAD;
  let wake: (() => void) | null = null;
  port.on('message', () => {
    credit++;
    wake?.();
  });
  const post = async (m: ParseMessage) => {
    while (credit <= 0) await new Promise<void>((r) => (wake = r));
    wake = null;
    credit--;
    port.postMessage(m);
  };
  try {
    let batch: ParsedLine[] = [];
    for await (const item of parseCatalog(file, origin)) {
      batch.push(item);
      if (batch.length >= PARSE_BATCH) {
        await post({ items: batch });
        batch = [];
      }
    }
    if (batch.length) await post({ items: batch });
    port.postMessage({ end: true } satisfies ParseMessage);
  } catch (err) {
    const code = err instanceof AppError ? err.code : 'internal';
    port.postMessage({ failed: { code, detail: (err as Error).message } } satisfies ParseMessage);
  }
  port.close();
}

if (parentPort) void run((workerData as { file: string }).file, (workerData as { origin: string }).origin, parentPort);
