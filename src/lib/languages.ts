/**
 * Languages, one home: the tag syntax and the one rule that says whether a file in one
 * language serves a node or a computer of others (docs/replication.md: a subscription's languages).
 *
 * Tags are BCP 47 as the catalog writes them, lowercase: a primary tag (`de`), then
 * subtags such as a region (`de-de`) or a script (`sr-cyrl-rs`). `neutral` marks a file
 * of no language (and, for an update's metadata, no file at all).
 *
 * A file in `file` matches a set of languages when:
 * - it is `neutral` (every site and computer takes those), or
 * - it is one of them (`de-de` for `de-de`), or
 * - it is a region (or script) of one of them (`de-de` and `de-at` for a node that says
 *   `de`: the primary tag covers its regions), or
 * - one of them is a region of it (`de` for a computer or node that says `de-de`: a file
 *   in the primary language serves every region of it).
 * Regions of one language do not match each other (`de-at` is not `de-de`). The same
 * rule decides what a parent replicates to a child, what a node fetches for its
 * subtree, and which files an agent is offered, so a file a computer needs is always
 * on its node.
 */

/** A language tag as the catalog writes them, or `neutral`. */
export const LANGUAGE_TAG = /^(neutral|[a-z]{2,3}(-[a-z0-9]{2,8})*)$/;
/** A language a node or computer has (not `neutral`), at most 35 characters. */
export const LANGUAGE = /^(?=.{2,35}$)[a-z]{2,3}(-[a-z0-9]{2,8})*$/;

/** Whether a file in `file` serves a node or computer of `languages` (see above). */
export function languageMatches(file: string, languages: readonly string[]): boolean {
  if (file === 'neutral') return true;
  return languages.some((l) => l === file || file.startsWith(`${l}-`) || l.startsWith(`${file}-`));
}

/** The same over a comma list of file languages ('' = none: metadata only, which every set takes). */
export function anyLanguageMatches(fileLanguages: string, languages: readonly string[]): boolean {
  if (fileLanguages === '') return true;
  return fileLanguages.split(',').some((l) => languageMatches(l, languages));
}

/**
 * `languageMatches` in SQL over the column (or expression) `col`, with its arguments.
 * Languages are validated tags ([a-z0-9-]) and so are the catalog's, so neither holds
 * a LIKE wildcard.
 */
export function languageMatchSql(col: string, languages: readonly string[]): [string, string[]] {
  const parts = [`${col} = 'neutral'`];
  const args: string[] = [];
  for (const l of languages) {
    parts.push(`${col} = ?`, `${col} LIKE ?`, `? LIKE ${col} || '-%'`);
    args.push(l, `${l}-%`, l);
  }
  return [`(${parts.join(' OR ')})`, args];
}

/**
 * `anyLanguageMatches` in SQL over a comma list column `col` ('' matches: metadata
 * only), with its arguments: each item as `languageMatches` takes it, by LIKE on the
 * list with commas around it (tags hold no LIKE wildcard, as above).
 */
export function languageListMatchSql(col: string, languages: readonly string[]): [string, string[]] {
  const padded = `(',' || ${col} || ',')`;
  const parts = [`${col} = ''`, `${padded} LIKE '%,neutral,%'`];
  const args: string[] = [];
  for (const l of languages) {
    // The item is the language, or more specific (en-us for en), or less (en for en-us, at each '-').
    args.push(`%,${l},%`, `%,${l}-%`);
    for (let i = l.indexOf('-'); i > 0; i = l.indexOf('-', i + 1)) args.push(`%,${l.slice(0, i)},%`);
  }
  for (let i = 0; i < args.length; i++) parts.push(`${padded} LIKE ?`);
  return [`(${parts.join(' OR ')})`, args];
}
