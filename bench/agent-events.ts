/**
 * bench/agent-events: how soon the node sees what an agent does. A real node and a
 * real agent process with a long check-in interval (so only the event sender can
 * deliver in time); a policy delivers --updates updates whose installers each take
 * --step-ms; for every event, the time from the agent's `at` to the node's
 * `receivedAt` (both on this machine's clock).
 *
 *   node dist/bench/agent-events.js [--updates 10] [--step-ms 1000]
 */
import { spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import { createServer as createHttpServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { cpus } from 'node:os';
import { join } from 'node:path';
import { writeCatalog } from '../src/catalog/build.js';
import { generateKeys, loadPrivateKey, signFile } from '../src/catalog/signing.js';
import type { CatalogUpdate } from '../src/catalog/format.js';
import { ROOT, auth, benchArgs, benchProcesses, benchTempDir, importCatalog, runBench, startNode, stopBenchProcesses, wholeNumber } from './util.js';

const PRODUCT = 'Windows 11 Version 23H2 for x64-based Systems';

async function api(url: string, path: string, init: RequestInit = {}): Promise<any> {
  const res = await fetch(`${url}${path}`, { ...init, headers: { ...auth, 'content-type': 'application/json' } });
  const text = await res.text();
  if (!res.ok) throw new Error(`${path}: ${res.status} ${text}`);
  return JSON.parse(text);
}

const pct = (xs: number[], p: number) => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor((p / 100) * xs.length))]!;

const HELP = `usage: node dist/bench/agent-events.js [--updates N] [--step-ms MS]

How soon the node sees what an agent does: a real node and a real agent; a policy
delivers N updates whose installers each take MS; for every event, the time from the
agent's \`at\` to the node's \`receivedAt\`.

options:
  --updates N     updates delivered, 1 to 250 (default 10)
  --step-ms MS    each installer's run time in ms, 0 to 600000 (default 1000)
  -h, --help      this help`;

async function main(): Promise<void> {
  const values = benchArgs('agent-events', HELP, { updates: { type: 'string', default: '10' }, 'step-ms': { type: 'string', default: '1000' } });
  const n = wholeNumber(values.updates, 'updates', 1, 250); // four events each, read in one page of at most 1,000
  const stepSeconds = wholeNumber(values['step-ms'], 'step-ms', 0, 600_000) / 1000;
  const dir = await benchTempDir('patchtree-bench-events-');
  const data = randomBytes(100_000);
  const vendor = createHttpServer((_req, res) => res.writeHead(200, { 'content-length': String(data.length) }).end(data));
  await new Promise<void>((r) => vendor.listen(0, '127.0.0.1', () => r()));
  try {
    console.log(`machine: ${cpus().length} cores (${cpus()[0]?.model}), Node ${process.version}`);
    const keys = await generateKeys(join(dir, 'keys'));
    const updates: CatalogUpdate[] = Array.from({ length: n }, (_, i) => ({
      id: `ev-${i}`,
      revision: 1,
      kb: String(7100000 + i),
      bulletin: null,
      title: `Update ${i}`,
      vendor: 'Microsoft',
      productFamily: 'Windows',
      product: PRODUCT,
      classification: 'Security Updates',
      severity: 'Important',
      cves: [],
      releaseDate: '2024-01-09',
      supersedes: [],
      restart: 'required',
      install: { successCodes: [0], rebootCodes: [3010] },
      applicability: { product: PRODUCT },
      installed: { kb: String(7100000 + i) },
      files: [
        {
          name: `kb${i}.msu`,
          url: `http://127.0.0.1:${(vendor.address() as AddressInfo).port}/kb${i}.msu`,
          size: data.length,
          sha256: createHash('sha256').update(data).digest('hex'),
          language: 'neutral',
          installer: { type: 'command', command: `sleep ${stepSeconds} # "{file}"` },
        },
      ],
    }));
    const cat = join(dir, 'c.ndjson.gz');
    await writeCatalog(
      cat,
      { format: 'patchtree-catalog', formatVersion: 2, version: 'e1', publisher: 'bench', createdAt: new Date().toISOString(), updates: n },
      updates,
    );
    await signFile(cat, await loadPrivateKey(keys.keyFile));
    const node = await startNode(dir, 'site', keys.pubFile);
    await importCatalog(node, cat);
    await api(node.url, '/api/v1/settings/content', { method: 'PUT', body: JSON.stringify({ reserveBytes: 0 }) });
    const token = (await api(node.url, '/api/v1/agents/enrollment-tokens', { method: 'POST', body: '{}' })).token as string;
    const inv = join(dir, 'inventory.json');
    writeFileSync(
      inv,
      JSON.stringify({
        os: { family: 'windows', name: PRODUCT, version: '10.0.22631.3007', arch: 'x64', language: 'en-us' },
        products: [{ name: PRODUCT }],
        kbs: [],
      }),
    );
    const state = join(dir, 'agent');
    // The first check-in comes at once; the next only after 10 minutes: events must not wait for it.
    const agent = spawn(
      process.execPath,
      [
        join(ROOT, 'bin', 'patchtree.js'),
        'agent',
        'run',
        '--server',
        node.url,
        '--state',
        state,
        '--enrollment-token',
        token,
        '--inventory',
        `file:${inv}`,
        '--interval',
        '600',
        '--insecure',
      ],
      { stdio: 'inherit' },
    );
    benchProcesses.push(agent);
    const log = () => {
      try {
        return readFileSync(join(state, 'patch.log'), 'utf8');
      } catch {
        return '';
      }
    };
    while (!/scan: \d+ update/.test(log())) await new Promise((r) => setTimeout(r, 100));
    // Files on the node first, then the policy: the agent's next check-in (asked for by hand) installs all of them in one task.
    await api(node.url, '/api/v1/content/downloads', { method: 'POST', body: JSON.stringify({ updates: updates.map((u) => u.id) }) });
    while ((await api(node.url, '/api/v1/content/files?limit=1000')).items.filter((f: any) => f.state === 'verified').length < 1)
      await new Promise((r) => setTimeout(r, 100));
    await api(node.url, '/api/v1/policies', {
      method: 'POST',
      body: JSON.stringify({ name: 'All', updates: updates.map((u) => u.id), targets: { all: true }, installation: { maintenance: { mode: 'any-time' } } }),
    });
    const started = Date.now();
    spawn(process.execPath, [join(ROOT, 'bin', 'patchtree.js'), 'agent', 'update-data', '--state', state], { stdio: 'ignore' });
    await new Promise((r) => setTimeout(r, 500));
    spawn(process.execPath, [join(ROOT, 'bin', 'patchtree.js'), 'agent', 'task', 'run', 'deploy', '--state', state], { stdio: 'ignore' });
    const expected = n * 4;
    let events: { at: string; receivedAt: string; type: string }[] = [];
    for (;;) {
      events = (await api(node.url, '/api/v1/computers/1/events?limit=1000')).items;
      if (events.length >= expected || Date.now() - started > 120_000 + n * stepSeconds * 1000) break;
      await new Promise((r) => setTimeout(r, 200));
    }
    const lat = events.map((e) => Date.parse(e.receivedAt) - Date.parse(e.at));
    const task = Math.max(...events.map((e) => Date.parse(e.at))) - Math.min(...events.map((e) => Date.parse(e.at)));
    console.log(
      `${events.length} of ${expected} events from one deploy task of ${n} installs of ${stepSeconds} s each (the task ran ${(task / 1000).toFixed(1)} s)`,
    );
    console.log(`step -> node: p50 ${pct(lat, 50)} ms, p99 ${pct(lat, 99)} ms, max ${Math.max(...lat)} ms (goal: within 2 s)`);
  } finally {
    vendor.close();
    await stopBenchProcesses();
    await rm(dir, { recursive: true, force: true });
  }
}

runBench(main);
