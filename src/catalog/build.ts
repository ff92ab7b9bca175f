import { createWriteStream } from 'node:fs';
import { readFile, rename, rm } from 'node:fs/promises';

import { gunzipSync, createGzip } from 'node:zlib';
import { pipeline } from 'node:stream/promises';
import { Readable } from 'node:stream';
import { FORMAT, FORMAT_VERSION, catalogUpdateSchema, type CatalogHeader, type CatalogUpdate, type CatalogUpdateV1 } from './format.js';
import { cvrfRules, cvrfToUpdate, fixKey, mergeFixes, parseCvrf, type CvrfFix } from './convert/cvrf.js';
import { parseWsus } from './convert/wsus.js';
import { maxSeverity } from './convert/util.js';
import { loadPrivateKey, signFile } from './signing.js';

/**
 * `patchtree catalog build`: converts the vendor's feeds into one catalog file.
 * The feeds are a publisher's inputs of a few megabytes and are read whole; the
 * catalog is written as a stream, one line per update, so the output can be large.
 */

export interface BuildOptions {
  cvrf: readonly string[];
  wsus: readonly string[];
  version: string;
  publisher?: string;
  out: string;
  sign?: string;
  createdAt?: Date;
  /** Told each step as it starts (a terminal shows it as progress). */
  onProgress?: (step: string) => void;
}

export interface BuildSummary {
  version: string;
  out: string;
  signature: string | null;
  updates: number;
  fromCvrf: number;
  fromWsus: number;
  joined: number;
  files: number;
  /** Vendor Fix remediations without a KB, by their description (e.g. "CBL-Mariner Releases"). */
  skippedFixes: Record<string, number>;
  skippedFixesTotal: number;
  skippedFiles: number;
  /** Files the catalog names no installer for (an .exe whose arguments are not known): downloaded, never run. */
  noInstaller: number;
}

/** Reads a feed file (gzip'd or not) and parses it; errors name the file. */
async function parseInput<T>(file: string, parse: (text: string) => T): Promise<T> {
  try {
    const buf = await readFile(file);
    return parse((buf[0] === 0x1f && buf[1] === 0x8b ? gunzipSync(buf) : buf).toString('utf8'));
  } catch (err) {
    throw new Error(`${file}: ${(err as Error).message}`);
  }
}

/**
 * Joins WSUS updates to CVRF fixes by KB and product: the WSUS update keeps its id,
 * title, classification and files; CVRF adds CVEs, severity, supersedence, restart
 * behaviour and the fixed build. A KB that CVRF lists for one product only joins
 * even when the WSUS product name does not match it.
 */
export function joinFeeds(fixes: Map<string, CvrfFix>, wsus: CatalogUpdate[]): { updates: CatalogUpdate[]; joined: number } {
  const byKb = new Map<string, CvrfFix[]>();
  for (const fix of fixes.values()) {
    const list = byKb.get(fix.kb);
    if (list) list.push(fix);
    else byKb.set(fix.kb, [fix]);
  }
  const used = new Set<string>();
  const out: CatalogUpdate[] = [];
  let joined = 0;
  for (const w of wsus) {
    const candidates = w.kb ? (byKb.get(w.kb) ?? []) : [];
    const fix = candidates.find((f) => f.product === w.product) ?? (candidates.length === 1 ? candidates[0] : undefined);
    const key = fix ? fixKey(fix.kb, fix.product) : '';
    if (!fix || used.has(key)) {
      out.push(w);
      continue;
    }
    used.add(key);
    joined++;
    const c = cvrfToUpdate(fix);
    out.push({
      ...w,
      product: fix.product,
      productFamily: w.productFamily ?? fix.productFamily,
      severity: maxSeverity(w.severity, fix.severity),
      cves: c.cves,
      ...(c.cveDetails ? { cveDetails: c.cveDetails } : {}),
      supersedes: c.supersedes,
      restart: fix.restart,
      applicability: cvrfRules(fix).applicability,
      installed: cvrfRules(fix).installed,
    });
  }
  for (const [key, fix] of fixes) if (!used.has(key)) out.push(cvrfToUpdate(fix));
  return { updates: out, joined };
}

/**
 * Writes a catalog file (gzip'd NDJSON) atomically: to a temporary name, then renamed.
 * Version-1 lines go with a version-1 header (tests and benches of old catalogs).
 */
export async function writeCatalog(
  out: string,
  header: CatalogHeader,
  updates: Iterable<CatalogUpdate | CatalogUpdateV1> | AsyncIterable<CatalogUpdate | CatalogUpdateV1>,
): Promise<void> {
  const tmp = `${out}.tmp-${process.pid}`;
  async function* lines(): AsyncGenerator<string> {
    yield `${JSON.stringify(header)}\n`;
    for await (const u of updates) yield `${JSON.stringify(u)}\n`;
  }
  try {
    const ws = createWriteStream(tmp);
    await pipeline(Readable.from(lines()), createGzip(), ws);
    await rename(tmp, out);
  } catch (err) {
    await rm(tmp, { force: true });
    throw err;
  }
}

export async function buildCatalog(opts: BuildOptions): Promise<BuildSummary> {
  if (opts.cvrf.length === 0 && opts.wsus.length === 0) throw new Error('give at least one --cvrf or --wsus input');
  const fixes = new Map<string, CvrfFix>();
  const skipped = new Map<string, number>();
  const inputs = opts.cvrf.length + opts.wsus.length;
  let read = 0;
  const step = (s: string) => opts.onProgress?.(s);
  for (const f of opts.cvrf) {
    step(`reading ${f} (${++read} of ${inputs})`);
    const result = await parseInput(f, parseCvrf);
    mergeFixes(fixes, result.fixes);
    for (const [k, n] of result.skipped) skipped.set(k, (skipped.get(k) ?? 0) + n);
  }
  const wsusUpdates: CatalogUpdate[] = [];
  let skippedFiles = 0;
  let noInstaller = 0;
  for (const f of opts.wsus) {
    step(`reading ${f} (${++read} of ${inputs})`);
    const result = await parseInput(f, parseWsus);
    wsusUpdates.push(...result.updates);
    skippedFiles += result.skippedFiles;
    noInstaller += result.noInstaller;
  }
  step('joining the feeds');
  const { updates, joined } = joinFeeds(fixes, wsusUpdates);
  // The same WSUS update may come from two exports: keep the first.
  const unique = new Map<string, CatalogUpdate>();
  for (const u of updates) if (!unique.has(u.id)) unique.set(u.id, u);
  const sorted = [...unique.values()].sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
  for (const u of sorted) {
    const r = catalogUpdateSchema.safeParse(u);
    if (!r.success) throw new Error(`converted update ${u.id} (KB${u.kb}) is invalid: ${r.error.issues[0]?.message} at ${r.error.issues[0]?.path.join('.')}`);
  }
  const header: CatalogHeader = {
    format: FORMAT,
    formatVersion: FORMAT_VERSION,
    version: opts.version,
    publisher: opts.publisher ?? 'patchtree publisher',
    createdAt: (opts.createdAt ?? new Date()).toISOString(),
    updates: sorted.length,
  };
  step(`writing ${sorted.length} updates to ${opts.out}`);
  await writeCatalog(opts.out, header, sorted);
  let signature: string | null = null;
  if (opts.sign) {
    step('signing');
    await signFile(opts.out, await loadPrivateKey(opts.sign));
    signature = `${opts.out}.sig`;
  }
  const skippedFixes = Object.fromEntries([...skipped].sort((a, b) => b[1] - a[1]));
  return {
    version: opts.version,
    out: opts.out,
    signature,
    updates: sorted.length,
    fromCvrf: fixes.size,
    fromWsus: wsusUpdates.length,
    joined,
    files: sorted.reduce((n, u) => n + u.files.length, 0),
    skippedFixes,
    skippedFixesTotal: [...skipped.values()].reduce((a, b) => a + b, 0),
    skippedFiles,
    noInstaller,
  };
}
