/**
 * bench/reports: report latency on a large fleet, against a real node process. N
 * simulated computers (default 100,000) report to a node with a U-update catalog
 * (default 20,000, shaped like bench/assessment's); then each report is requested 5 to 50
 * times over HTTP and its p50/p99 printed. Goal: compliance summary and by-update
 * breakdown under 200 ms each.
 *
 *   node dist/bench/reports.js [--computers 100000] [--updates 20000]
 */
import { rm } from 'node:fs/promises';
import { cpus } from 'node:os';
import { join } from 'node:path';
import { writeCatalog } from '../src/catalog/build.js';
import { generateKeys, loadPrivateKey, signFile } from '../src/catalog/signing.js';
import { simulate } from '../src/assessment/simulate.js';
import { catalog } from './assessment.js';
import { auth, benchArgs, benchTempDir, importCatalog, runBench, startNode, stopBenchProcesses, vmHwmMB, wholeNumber } from './util.js';

const pct = (xs: number[], p: number) => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor((p / 100) * xs.length))]!;

async function timed(url: string, path: string, n = 50): Promise<string> {
  const lat: number[] = [];
  let bytes = 0;
  for (let i = 0; i < n; i++) {
    const t0 = performance.now();
    const res = await fetch(url + path, { headers: auth });
    const body = await res.text();
    lat.push(performance.now() - t0);
    if (!res.ok) throw new Error(`${path}: ${res.status} ${body.slice(0, 200)}`);
    bytes = body.length;
  }
  return `p50 ${pct(lat, 50).toFixed(1)} ms, p99 ${pct(lat, 99).toFixed(1)} ms (${bytes} bytes)`;
}

const HELP = `usage: node dist/bench/reports.js [--computers N] [--updates U]

Report latency on a large fleet: N simulated computers report to a real node with a
U-update catalog; each report is then requested over HTTP (5 to 50 times), p50 and p99.

options:
  --computers N   simulated computers (default 100000)
  --updates U     the catalog's updates (default 20000)
  -h, --help      this help`;

async function main(): Promise<void> {
  const values = benchArgs('reports', HELP, { computers: { type: 'string', default: '100000' }, updates: { type: 'string', default: '20000' } });
  const nComputers = wholeNumber(values.computers, 'computers', 1);
  const nUpdates = wholeNumber(values.updates, 'updates', 1);
  const dir = await benchTempDir('patchtree-bench-reports-');
  try {
    console.log(`machine: ${cpus().length} cores (${cpus()[0]?.model}), Node ${process.version}`);
    const keys = await generateKeys(join(dir, 'keys'));
    const c1 = join(dir, 'c1.ndjson.gz');
    await writeCatalog(
      c1,
      {
        format: 'patchtree-catalog',
        formatVersion: 2,
        version: 'r1',
        publisher: 'bench',
        createdAt: new Date(Date.UTC(2024, 0, 1)).toISOString(),
        updates: nUpdates,
      },
      catalog(nUpdates),
    );
    await signFile(c1, await loadPrivateKey(keys.keyFile));
    const node = await startNode(dir, 'site', keys.pubFile);
    await importCatalog(node, c1);
    const res = await fetch(`${node.url}/api/v1/agents/enrollment-tokens`, {
      method: 'POST',
      headers: { ...auth, 'content-type': 'application/json' },
      body: '{}',
    });
    const token = ((await res.json()) as { token: string }).token;
    const sim = await simulate({ server: node.url, token, computers: nComputers, seed: 1, concurrency: 32 });
    if (sim.failed) throw new Error(`simulation: ${sim.failed} failed: ${sim.firstError}`);
    console.log(
      `${nComputers} computers reported in ${(sim.durationMs / 1000).toFixed(1)} s (${sim.reportsPerSecond}/s); ${sim.required} required pairs; ${nUpdates} updates`,
    );
    console.log(`compliance summary:                    ${await timed(node.url, '/api/v1/reports/compliance')}`);
    console.log(`compliance by update (first 100):      ${await timed(node.url, '/api/v1/reports/compliance?view=updates')}`);
    console.log(`compliance by computer (first 100):    ${await timed(node.url, '/api/v1/reports/compliance?view=computers', 20)}`);
    console.log(`compliance summary, severity=Critical: ${await timed(node.url, '/api/v1/reports/compliance?severity=Critical', 20)}`);
    console.log(`vulnerabilities (first 100):           ${await timed(node.url, '/api/v1/reports/vulnerabilities', 5)}`);
    console.log(`node peak RSS ${await vmHwmMB(node.pid)} MB`);
  } finally {
    await stopBenchProcesses();
    await rm(dir, { recursive: true, force: true });
  }
}

runBench(main);
