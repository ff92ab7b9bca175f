/** Small SQL text helpers shared by the query modules. */

/** Escapes `\`, `%` and `_` for a LIKE pattern written with `ESCAPE '\'`. */
export function escapeLike(s: string): string {
  return s.replace(/[\\%_]/g, (c) => `\\${c}`);
}

/** `?,?,?` for an `IN (...)` list of these values. */
export function placeholders(values: readonly unknown[]): string {
  return values.map(() => '?').join(',');
}
