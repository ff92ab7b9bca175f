/** Small SQL text helpers shared by the query modules. */

/** Escapes `\`, `%` and `_` for a LIKE pattern written with `ESCAPE '\'`. */
export function escapeLike(s: string): string {
  return s.replace(/[\\%_]/g, (c) => `\\${c}`);
}

/** `?,?,?` for an `IN (...)` list of these values. */
export function placeholders(values: readonly unknown[]): string {
  return values.map(() => '?').join(',');
}

/** A stored millisecond time as ISO 8601, or null when there is none. */
export function isoTime(t: number | null | undefined): string | null {
  return t === null || t === undefined ? null : new Date(Number(t)).toISOString();
}

/**
 * One page of a keyset-paged list, from rows fetched with `LIMIT limit + 1`: the
 * extra row says there is more, and the cursor names the page's last row.
 */
export function keysetPage<R, T>(
  rows: readonly R[],
  limit: number,
  map: (r: R) => T,
  cursorOf: (last: R) => string,
): { items: T[]; nextCursor: string | null } {
  return { items: rows.slice(0, limit).map(map), nextCursor: rows.length > limit ? cursorOf(rows[limit - 1]!) : null };
}
