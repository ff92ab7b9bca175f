import { sql, type SQL } from 'drizzle-orm';

/** `languageMatchSql` for drizzle's `sql` over an expression. */
export function languageMatchDrizzle(col: SQL, languages: readonly string[]): SQL {
  return sql`(${col} = 'neutral'${sql.join(
    languages.map((l) => sql` OR ${col} = ${l} OR ${col} LIKE ${`${l}-%`} OR ${l} LIKE ${col} || '-%'`),
    sql``,
  )})`;
}
