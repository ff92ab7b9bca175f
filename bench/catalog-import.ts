/**
 * bench/catalog-import: a generated catalog of N updates (default 100,000; about
 * nine rows each with files, CVEs and supersedence, so ~900,000 rows, rules as JSON)
 * imported into a real `patchtree serve` process over HTTP, against the same rows
 * inserted straight into SQLite with the `libsql` binding in one transaction, one
 * process (the limit). Prints time, rows/s and peak RSS (VmHWM) of both.
 *
 *   node dist/bench/catalog-import.js [--updates N]
 *   (BENCH_PROFILE_DIR=dir writes CPU profiles of the node's threads there)
 */
import { spawn } from 'node:child_process';
import { rm, stat } from 'node:fs/promises';
import { openAsBlob } from 'node:fs';
import { cpus } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { auth, benchArgs, benchProcesses, benchTempDir, runBench, startNode, stopBenchProcesses, vmHwmMB, wholeNumber } from './util.js';
import { writeCatalog } from '../src/catalog/build.js';
import { generateKeys, loadPrivateKey, signFile } from '../src/catalog/signing.js';
import type { CatalogUpdate } from '../src/catalog/format.js';
import { openDatabase } from '../src/db/index.js';
import { openNative } from '../src/db/native.js';

export const LANGS = ['de-de', 'fr-fr', 'ja-jp', 'pt-br', 'es-es', 'it-it', 'zh-cn', 'ko-kr'];
const PRODUCTS = [
  'Windows 11 Version 23H2 for x64-based Systems',
  'Windows 10 Version 22H2 for x64-based Systems',
  'Microsoft Office 2016 (32-bit edition)',
  'Windows Server 2022',
];

export function* generate(n: number): Generator<CatalogUpdate> {
  for (let i = 0; i < n; i++) {
    const kb = String(1000000 + i);
    const product = PRODUCTS[i % PRODUCTS.length]!;
    const hex = (k: number) => (i * 4 + k).toString(16).padStart(64, '0');
    yield {
      id: `bench-${i.toString(36).padStart(6, '0')}`,
      revision: 1,
      kb,
      bulletin: null,
      title: `2024-${String((i % 12) + 1).padStart(2, '0')} Security Update for ${product} (KB${kb})`,
      vendor: 'Microsoft',
      productFamily: product.startsWith('Microsoft Office') ? 'Office' : 'Windows',
      product,
      classification: 'Security Updates',
      severity: (['Critical', 'Important', 'Moderate', 'Low'] as const)[i % 4]!,
      cves: [0, 1, 2, 3].map((k) => `CVE-2024-${String(10000 + ((i * 4 + k) % 90000)).padStart(5, '0')}`),
      releaseDate: `2024-${String((i % 12) + 1).padStart(2, '0')}-${String((i % 28) + 1).padStart(2, '0')}`,
      supersedes: i > 0 ? [String(1000000 + i - 1)] : [],
      restart: 'required',
      install: { successCodes: [0], rebootCodes: [3010, 1641] },
      applicability: { product },
      installed: { any: [{ kb }, { product, version: { gte: `10.0.${20000 + (i % 3000)}.${i % 5000}` } }] },
      files: [
        {
          name: `kb${kb}-x64.msu`,
          url: `http://download.example.com/${kb}/kb${kb}-x64.msu`,
          size: 1000 + i,
          sha256: hex(0),
          language: 'neutral',
          installer: { type: 'wusa' },
        },
        {
          name: `kb${kb}-${LANGS[i % 8]}.cab`,
          url: `http://download.example.com/${kb}/${LANGS[i % 8]}.cab`,
          size: 500 + i,
          sha256: hex(1),
          language: LANGS[i % 8]!,
          installer: { type: 'dism' },
        },
        {
          name: `kb${kb}-${LANGS[(i + 3) % 8]}.cab`,
          url: `http://download.example.com/${kb}/${LANGS[(i + 3) % 8]}.cab`,
          size: 500 + i,
          sha256: hex(2),
          language: LANGS[(i + 3) % 8]!,
          installer: { type: 'dism' },
        },
      ],
    };
  }
}

/** The limit: the same rows straight into SQLite, one transaction, prepared statements. */
async function limit(dbFile: string, n: number): Promise<void> {
  (await openDatabase(`file:${dbFile}`)).close(); // same schema and pragmas via the migrations
  const db = openNative(dbFile);
  const start = performance.now();
  const up =
    db.prepare(`INSERT INTO updates (id, revision, kb, bulletin, title, description, vendor, product_family, product, classification, severity, cves, cve_details,
    release_date, supersedes, vendor_superseded, restart, success_codes, reboot_codes, applicability, installed, more_info_url, languages, expired,
    content_hash, release_version, first_version, updated_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,0,?,?,?,?)`);
  const file = db.prepare('INSERT INTO update_files (update_id, sha256, name, url, size, language, position, installer) VALUES (?,?,?,?,?,?,?,?)');
  const cve = db.prepare('INSERT INTO update_cves (update_id, cve) VALUES (?,?)');
  const sup = db.prepare('INSERT INTO update_supersedes (update_id, kb) VALUES (?,?)');
  let rows = 0;
  db.exec('BEGIN IMMEDIATE');
  for (const u of generate(n)) {
    up.run(
      u.id,
      1,
      u.kb,
      null,
      u.title,
      null,
      u.vendor,
      u.productFamily,
      u.product,
      u.classification,
      u.severity,
      JSON.stringify(u.cves),
      '[]',
      u.releaseDate,
      JSON.stringify(u.supersedes),
      0,
      u.restart,
      '[0]',
      '[3010,1641]',
      JSON.stringify(u.applicability),
      JSON.stringify(u.installed),
      null,
      [...new Set(u.files.map((f) => f.language))].sort().join(','),
      'x'.repeat(64),
      'v1',
      'v1',
      Date.now(),
    );
    for (const [i, f] of u.files.entries()) file.run(u.id, f.sha256, f.name, f.url, f.size, f.language, i, JSON.stringify(f.installer));
    for (const c of u.cves) cve.run(u.id, c);
    for (const s of u.supersedes) sup.run(u.id, s);
    rows += 1 + u.files.length + u.cves.length + u.supersedes.length;
  }
  db.exec('COMMIT');
  const seconds = (performance.now() - start) / 1000;
  db.close();
  console.log(JSON.stringify({ seconds, rows, peakRssMB: await vmHwmMB('self') }));
}

/**
 * The limit, measured in a process of its own (this script with --limit-db, so that the
 * caller's memory and threads do not weigh on it): its figures, the database file left
 * for the caller to remove. bench/replication measures against it too.
 */
export function measureLimit(dbFile: string, n: number): Promise<{ seconds: number; rows: number; peakRssMB: number }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [fileURLToPath(import.meta.url), '--updates', String(n), '--limit-db', dbFile], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    benchProcesses.push(child); // stopped if the bench is interrupted
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.on('exit', (code) => (code === 0 ? resolve(JSON.parse(out)) : reject(new Error(`the limit's process exited ${code}`))));
  });
}

const HELP = `usage: node dist/bench/catalog-import.js [--updates N]

A generated N-update catalog (about nine rows an update) imported into a real node over
HTTP, against the same rows inserted straight into SQLite in one process (the limit):
time, rows/s and peak RSS of both. (--limit-db FILE runs only the limit, into FILE,
and prints its figures as JSON: what bench/replication measures against.)

options:
  --updates N     the catalog's updates (default 100000)
  -h, --help      this help`;

async function main(): Promise<void> {
  const values = benchArgs('catalog-import', HELP, { updates: { type: 'string', default: '100000' }, 'limit-db': { type: 'string' } });
  const n = wholeNumber(values.updates, 'updates', 1);
  if (values['limit-db']) return limit(values['limit-db'], n);

  const dir = await benchTempDir('patchtree-bench-');
  try {
    const keys = await generateKeys(join(dir, 'keys'));
    const catalog = join(dir, 'catalog.ndjson.gz');
    let t0 = performance.now();
    await writeCatalog(
      catalog,
      { format: 'patchtree-catalog', formatVersion: 2, version: 'bench-1', publisher: 'bench', createdAt: new Date().toISOString(), updates: n },
      generate(n),
    );
    await signFile(catalog, await loadPrivateKey(keys.keyFile));
    const size = (await stat(catalog)).size;
    console.log(`catalog: ${n} updates, ${(size / 1e6).toFixed(1)} MB gzip, written in ${((performance.now() - t0) / 1000).toFixed(1)} s`);

    // The node: a real process, the catalog uploaded over HTTP.
    const node = await startNode(dir, 'node', keys.pubFile);
    const rssBefore = await vmHwmMB(node.pid);
    const form = new FormData();
    form.append('catalog', await openAsBlob(catalog), 'catalog.ndjson.gz');
    form.append('signature', await openAsBlob(`${catalog}.sig`), 'catalog.ndjson.gz.sig');
    t0 = performance.now();
    const res = await fetch(`${node.url}/api/v1/catalog/imports`, { method: 'POST', body: form, headers: auth });
    const body = (await res.json()) as { added?: number; durationMs?: number };
    const importSeconds = (performance.now() - t0) / 1000;
    if (res.status !== 201) throw new Error(`import failed: ${res.status} ${JSON.stringify(body)}`);
    const nodeRss = await vmHwmMB(node.pid);
    await stopBenchProcesses();

    const lim = await measureLimit(join(dir, 'limit.db'), n);
    const rows = lim.rows;
    console.log(`machine: ${cpus().length} cores (${cpus()[0]?.model}), Node ${process.version}`);
    console.log(`rows per import: ${rows} (updates ${n}, files ${n * 3}, cves ${n * 4}, supersedence ${n - 1})`);
    console.log(
      `import (HTTP upload -> verify -> worker -> commit): ${importSeconds.toFixed(2)} s (${Math.round(rows / importSeconds)} rows/s; in-transaction part ${((body.durationMs ?? 0) / 1000).toFixed(2)} s), node peak RSS ${nodeRss} MB (idle ${rssBefore} MB)`,
    );
    console.log(
      `limit (same rows, libsql binding, one transaction): ${lim.seconds.toFixed(2)} s (${Math.round(rows / lim.seconds)} rows/s), peak RSS ${lim.peakRssMB} MB`,
    );
    console.log(`ratio import/limit: ${(importSeconds / lim.seconds).toFixed(2)}x (goal: <= 2x, node RSS < 300 MB)`);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

// Run only when executed, not when imported (other benches reuse generate()).
if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) runBench(main);
