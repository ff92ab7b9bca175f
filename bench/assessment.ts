/**
 * bench/assessment, against a real node process on loopback:
 *  0. the fleet arrives: N simulated computers (default 100,000) report full
 *     inventories over HTTP, each assessed before it is answered (reports/s);
 *  1. full assessment of the fleet against a U-update catalog (default 20,000):
 *     wall time and the node's peak RSS (goal < 60 s);
 *  2. absorbing one inventory delta: request to stored results, p50/p99 over 200
 *     deltas (goal < 50 ms);
 *  3. reassessing the fleet after importing 100 new updates: import to the
 *     assessment caught up with the change log (goal < 5 s).
 *
 * The catalog is shaped like Microsoft's: 20 OS products and 180 applications,
 * each with a chain of monthly cumulative updates that supersede the one before,
 * installed by build (as CVRF's fixed builds are) or by KB.
 *
 *   node dist/bench/assessment.js [--computers 100000] [--updates 20000]
 */
import { rm } from 'node:fs/promises';
import { cpus } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { writeCatalog } from '../src/catalog/build.js';
import { generateKeys, loadPrivateKey, signFile } from '../src/catalog/signing.js';
import type { CatalogUpdate } from '../src/catalog/format.js';
import { simulate } from '../src/assessment/simulate.js';
import { auth, benchArgs, benchProcesses, benchTempDir, importCatalog, runBench, startNode, vmHwmMB, wholeNumber } from './util.js';

const OS = 20;
const APPS = 180;

function productName(p: number): string {
  if (p < OS) return `Windows ${10 + (p % 2)} Version ${20 + Math.floor(p / 2)}H2 for ${p % 3 === 2 ? 'ARM64' : 'x64'}-based Systems`;
  return `Contoso Application ${String(p - OS).padStart(3, '0')}`;
}

/** `perProduct` updates for each of the 200 products, `extra` more at the end of the first products' chains. */
export function* catalog(total: number, extraFrom = total): Generator<CatalogUpdate> {
  const products = OS + APPS;
  for (let i = 0; i < total; i++) {
    const p = i % products;
    const n = Math.floor(i / products); // position in the product's chain
    const product = productName(p);
    const kb = String(3000000 + i);
    const build = p < OS ? `10.0.${19000 + p * 100}.${1000 + n * 10}` : `16.0.${p}.${1000 + n * 10}`;
    yield {
      id: `a-${String(i).padStart(7, '0')}`,
      revision: 1,
      kb,
      bulletin: null,
      title: `${i >= extraFrom ? 'New ' : ''}Cumulative Update ${n} for ${product} (KB${kb})`,
      vendor: 'Microsoft',
      productFamily: p < OS ? 'Windows' : 'Applications',
      product,
      classification: 'Security Updates',
      severity: (['Critical', 'Important', 'Moderate', 'Low'] as const)[i % 4]!,
      cves: [`CVE-2024-${String(10000 + (i % 90000))}`],
      releaseDate: `2024-${String((n % 12) + 1).padStart(2, '0')}-${String((i % 28) + 1).padStart(2, '0')}`,
      supersedes: n > 0 ? [String(3000000 + i - products)] : [],
      restart: 'required',
      install: { successCodes: [0], rebootCodes: [3010] },
      applicability: { product },
      installed: { any: [{ kb }, { product, version: { gte: build } }] },
      files: [],
    };
  }
}

const pct = (xs: number[], p: number) => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor((p / 100) * xs.length))]!;

async function api(url: string, path: string, init: RequestInit = {}): Promise<any> {
  const res = await fetch(`${url}${path}`, { ...init, headers: { ...auth, 'content-type': 'application/json', ...(init.headers ?? {}) } });
  const body = await res.json();
  if (!res.ok) throw new Error(`${path}: ${res.status} ${JSON.stringify(body)}`);
  return body;
}

const HELP = `usage: node dist/bench/assessment.js [--computers N] [--updates U]

System assessment against a real node: N simulated computers report full inventories
over HTTP; then the whole fleet is assessed against a U-update catalog shaped like
Microsoft's; then single inventory deltas; then the fleet reassessed after 100 new
updates are imported.

options:
  --computers N   simulated computers (default 100000)
  --updates U     the catalog's updates (default 20000)
  -h, --help      this help`;

async function main(): Promise<void> {
  const values = benchArgs('assessment', HELP, { computers: { type: 'string', default: '100000' }, updates: { type: 'string', default: '20000' } });
  const nComputers = wholeNumber(values.computers, 'computers', 1);
  const nUpdates = wholeNumber(values.updates, 'updates', 1);
  const dir = await benchTempDir('patchtree-bench-assess-');
  try {
    console.log(`machine: ${cpus().length} cores (${cpus()[0]?.model}), Node ${process.version}`);
    const keys = await generateKeys(join(dir, 'keys'));
    const key = await loadPrivateKey(keys.keyFile);
    const c1 = join(dir, 'c1.ndjson.gz');
    await writeCatalog(
      c1,
      {
        format: 'patchtree-catalog',
        formatVersion: 2,
        version: 'a1',
        publisher: 'bench',
        createdAt: new Date(Date.UTC(2024, 0, 1)).toISOString(),
        updates: nUpdates,
      },
      catalog(nUpdates),
    );
    await signFile(c1, key);
    const node = await startNode(dir, 'site', keys.pubFile);
    await importCatalog(node, c1);
    const token = (await api(node.url, '/api/v1/agents/enrollment-tokens', { method: 'POST', body: '{}' })).token as string;

    // 0. The fleet reports.
    const sim = await simulate({ server: node.url, token, computers: nComputers, seed: 1, concurrency: 32 });
    if (sim.failed) throw new Error(`simulation: ${sim.failed} failed, first: ${sim.firstError}`);
    const fleet = await api(node.url, '/api/v1/assessment');
    console.log(
      `0. ${nComputers} computers reported full inventories over HTTP, each assessed before the answer: ${(sim.durationMs / 1000).toFixed(1)} s, ${sim.reportsPerSecond} reports/s; ${sim.required} required and ${sim.unknown} unknown (computer, update) pairs; node peak RSS ${await vmHwmMB(node.pid)} MB`,
    );

    // 1. Full assessment.
    const full = await api(node.url, '/api/v1/assessment/run', { method: 'POST' });
    console.log(
      `1. full assessment of ${full.computers} computers against ${full.updates} updates: ${(full.durationMs / 1000).toFixed(1)} s (goal < 60 s); node peak RSS ${await vmHwmMB(node.pid)} MB; catalog indexed ${fleet.updates}`,
    );

    // 2. Inventory deltas: one computer at a time, request to stored results.
    const lat: number[] = [];
    for (let i = 0; i < 200; i++) {
      const key = `sim1-${String((i * 37) % nComputers).padStart(6, '0')}`;
      const list = await api(node.url, `/api/v1/computers?search=${key.toUpperCase()}&limit=1`);
      const c = await api(node.url, `/api/v1/computers/${list.items[0].id}`);
      const t0 = performance.now();
      await api(node.url, '/agent/v1/inventory', {
        method: 'POST',
        headers: { authorization: `Bearer ${token}` },
        body: JSON.stringify({ agentKey: key, name: key.toUpperCase(), delta: { baseScanId: c.scanId, kbs: { add: [String(3000000 + i)] } } }),
      });
      lat.push(performance.now() - t0);
    }
    console.log(
      `2. one inventory delta absorbed (HTTP request to stored results), ${lat.length} deltas: p50 ${pct(lat, 50).toFixed(1)} ms, p99 ${pct(lat, 99).toFixed(1)} ms (goal < 50 ms)`,
    );

    // 3. 100 new updates.
    const c2 = join(dir, 'c2.ndjson.gz');
    await writeCatalog(
      c2,
      {
        format: 'patchtree-catalog',
        formatVersion: 2,
        version: 'a2',
        publisher: 'bench',
        createdAt: new Date(Date.UTC(2024, 1, 1)).toISOString(),
        updates: nUpdates + 100,
      },
      catalog(nUpdates + 100, nUpdates),
    );
    await signFile(c2, key);
    const t0 = performance.now();
    await importCatalog(node, c2);
    const imported = performance.now();
    for (;;) {
      const s = await api(node.url, '/api/v1/assessment');
      if (s.cursor >= s.head && !s.busy) {
        const total = (performance.now() - t0) / 1000;
        console.log(
          `3. 100 new updates imported (${((imported - t0) / 1000).toFixed(1)} s) and the fleet reassessed: ${(s.lastRun.durationMs / 1000).toFixed(1)} s for ${s.lastRun.computers} computers (goal < 5 s); import to caught up ${total.toFixed(1)} s`,
        );
        break;
      }
      await new Promise((r) => setTimeout(r, 50));
    }
  } finally {
    for (const c of benchProcesses) c.kill('SIGTERM');
    await new Promise((r) => setTimeout(r, 500));
    await rm(dir, { recursive: true, force: true });
  }
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) runBench(main);
