import { z } from '@hono/zod-openapi';
import type { Context } from 'hono';

/*
 * What every report route shares: the query parts it takes, and its CSV answer
 * (fields, lines, and the streamed download of every page).
 */

/** One CSV field: quoted when it must be; text a spreadsheet would run as a formula is defused. */
export function csvField(v: unknown): string {
  if (v === null || v === undefined) return '';
  let s = typeof v === 'string' ? v : String(v);
  if (typeof v === 'string' && /^[=+\-@\t\r]/.test(s)) s = `'${s}`;
  return /[",\r\n]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
}
export const csvLine = (values: readonly unknown[]) => `${values.map(csvField).join(',')}\r\n`;

export const wantsCsv = (c: Context) =>
  c.req.query('format') === 'csv' || (c.req.query('format') === undefined && /\btext\/csv\b/.test(c.req.header('accept') ?? ''));

/**
 * A CSV download: the header row, then every page `next` yields, streamed (the
 * report is never held whole in memory).
 */
export function csvResponse(name: string, header: readonly string[], pages: () => AsyncGenerator<unknown[][]>): Response {
  const enc = new TextEncoder();
  const it = pages();
  let started = false;
  const body = new ReadableStream<Uint8Array>({
    async pull(ctl) {
      if (!started) {
        started = true;
        ctl.enqueue(enc.encode(csvLine(header)));
        return;
      }
      const { value, done } = await it.next();
      if (done) return ctl.close();
      ctl.enqueue(enc.encode(value.map(csvLine).join('')));
    },
    async cancel() {
      await it.return(undefined);
    },
  });
  return new Response(body, { headers: { 'content-type': 'text/csv; charset=utf-8', 'content-disposition': `attachment; filename="${name}.csv"` } });
}

/** Every page of a keyset-paged report. */
export async function* allPages<T>(
  fetchPage: (cursor: string | undefined) => Promise<{ items: T[]; nextCursor: string | null }>,
  row: (item: T) => unknown[],
): AsyncGenerator<unknown[][]> {
  let cursor: string | undefined;
  for (;;) {
    const p = await fetchPage(cursor);
    if (p.items.length) yield p.items.map(row);
    if (!p.nextCursor) return;
    cursor = p.nextCursor;
  }
}

export const page = { limit: z.coerce.number().int().min(1).max(1000).default(100), cursor: z.string().max(500).optional() };
export const format = { format: z.enum(['json', 'csv']).optional().describe('csv (or Accept: text/csv): every row, streamed') };
export const scope = {
  scope: z
    .enum(['node', 'tree'])
    .default('node')
    .describe("tree: this node and every node below it (the roll-up), with a per-node breakdown and each node's freshness"),
};
