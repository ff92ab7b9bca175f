/**
 * bench/checkin: the agent check-in path, measured with wrk (a load tool in its own
 * process) against a real node process on loopback, and against a bare node:http
 * server that parses the same JSON and does one indexed SQLite write (the limit for
 * this stack, bench/checkin/bare-server.ts).
 *
 * 10,000 agents enrol and report an inventory; a policy delivers 5 updates (with
 * verified files) to all of them. Then, each for --seconds, with wrk rotating
 * through the 10,000 agents' secrets:
 *   - GET /agent/v1/assignments without a validator (200 with the body),
 *   - GET /agent/v1/assignments with the agent's ETag (304),
 *   - POST /agent/v1/events, a batch of 5 events,
 *   - the bare server, POST of the same event batch.
 * Goal: at least 5,000 check-ins per second on 2 cores, at least half the bare
 * server's rate, p99 under 50 ms.
 *
 * Needs wrk (Debian: apt-get install wrk).
 *   node dist/bench/checkin/run.js [--agents 10000] [--seconds 15] [--connections 64] [--threads 1]
 */
import { spawn, spawnSync, execFileSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { createServer } from 'node:http';
import { readFileSync } from 'node:fs';
import { rm, writeFile } from 'node:fs/promises';
import type { AddressInfo } from 'node:net';
import { cpus } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { writeCatalog } from '../../src/catalog/build.js';
import { generateKeys, loadPrivateKey, signFile } from '../../src/catalog/signing.js';
import type { CatalogUpdate } from '../../src/catalog/format.js';
import {
  ROOT,
  auth,
  benchArgs,
  benchProcesses,
  benchTempDir,
  importCatalog,
  oneOf,
  runBench,
  startNode,
  stopBenchProcesses,
  vmHwmMB,
  wholeNumber,
} from '../util.js';

const PRODUCT = 'Windows 11 Version 23H2 for x64-based Systems';
const UPDATES = 20;
const DELIVERED = 5;

interface WrkResult {
  requests: number;
  durationUs: number;
  p50Ms: number;
  p99Ms: number;
  maxMs: number;
  errStatus: number;
  errConnect: number;
  errTimeout: number;
  errRead: number;
}

async function api(url: string, path: string, init: RequestInit = {}, token?: string): Promise<any> {
  // A pooled connection the node closed while wrk ran fails once ("other side closed"): retry it.
  const res = await fetch(`${url}${path}`, {
    ...init,
    headers: { ...(token ? { authorization: `Bearer ${token}` } : auth), 'content-type': 'application/json', ...(init.headers ?? {}) },
  }).catch(() =>
    fetch(`${url}${path}`, {
      ...init,
      headers: { ...(token ? { authorization: `Bearer ${token}` } : auth), 'content-type': 'application/json', ...(init.headers ?? {}) },
    }),
  );
  const text = await res.text();
  if (!res.ok) throw new Error(`${path}: ${res.status} ${text}`);
  return text ? JSON.parse(text) : null;
}

/** Runs `fn` over 0..n-1 with `concurrency` in flight. */
async function pool(n: number, concurrency: number, fn: (i: number) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (next < n) await fn(next++);
    }),
  );
}

function wrk(url: string, mode: string, agentsFile: string, o: { seconds: number; connections: number; threads: number }): WrkResult {
  const out = execFileSync(
    'wrk',
    ['-t', String(o.threads), '-c', String(o.connections), '-d', `${o.seconds}s`, '--latency', '-s', join(ROOT, 'bench', 'checkin', 'agents.lua'), url],
    {
      env: { ...process.env, MODE: mode, AGENTS: agentsFile, RUN: randomBytes(4).toString('hex') },
      encoding: 'utf8',
    },
  );
  const line = out.split('\n').find((l) => l.startsWith('RESULT '));
  if (!line) throw new Error(`wrk printed no result:\n${out}`);
  return JSON.parse(line.slice(7)) as WrkResult;
}

const rps = (r: WrkResult) => r.requests / (r.durationUs / 1e6);
const show = (name: string, r: WrkResult) =>
  `${name.padEnd(34)} ${rps(r).toFixed(0).padStart(7)} req/s   p50 ${r.p50Ms.toFixed(2).padStart(6)} ms   p99 ${r.p99Ms.toFixed(2).padStart(6)} ms   max ${r.maxMs.toFixed(1).padStart(6)} ms   errors ${r.errStatus + r.errConnect + r.errTimeout + r.errRead}`;

/** User + system CPU seconds of a process so far, from /proc. */
function nodeCpuSeconds(pid: number): number {
  const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
  return (Number(f[11]) + Number(f[12])) / 100;
}

const HELP = `usage: node dist/bench/checkin/run.js [--agents N] [--seconds S] [--connections C] [--threads T] [--only 200|304|events]

The agent check-in path under wrk (apt-get install wrk) against a real node: N agents enrol
and report, a policy delivers 5 updates to all; then for S seconds each, with wrk rotating
through the agents' secrets: GET /agent/v1/assignments (200 with the body, then 304 with the
ETag), POST /agent/v1/events (a batch of 5); then a bare node:http server doing one SQLite
write a request (the limit).

options:
  --agents N        agents (default 10000)
  --seconds S       each wrk run's length, 1 to 3600 (default 15)
  --connections C   wrk's connections, 1 to 10000 (default 64)
  --threads T       wrk's threads, 1 to 64 (default 1)
  --only MODE       only this run of the node's: 200, 304 or events (the bare server runs always)
  -h, --help        this help`;

async function main(): Promise<void> {
  const values = benchArgs('checkin/run', HELP, {
    agents: { type: 'string', default: '10000' },
    seconds: { type: 'string', default: '15' },
    connections: { type: 'string', default: '64' },
    threads: { type: 'string', default: '1' },
    only: { type: 'string' },
  });
  const nAgents = wholeNumber(values.agents, 'agents', 1);
  const load = {
    seconds: wholeNumber(values.seconds, 'seconds', 1, 3600),
    connections: wholeNumber(values.connections, 'connections', 1, 10_000),
    threads: wholeNumber(values.threads, 'threads', 1, 64),
  };
  const only = values.only === undefined ? undefined : oneOf(values.only, 'only', ['200', '304', 'events']);
  // wrk -v prints its version and exits 1.
  const v = spawnSync('wrk', ['-v'], { encoding: 'utf8' });
  if (v.error) throw new Error('bench/checkin needs wrk: apt-get install wrk');
  const wrkVersion = `${v.stdout}${v.stderr}`.split('\n')[0]!.trim();
  const dir = await benchTempDir('patchtree-bench-checkin-');
  const files = new Map<string, Buffer>();
  const vendor = createServer((req, res) => {
    const f = files.get(req.url ?? '');
    if (!f) return res.writeHead(404).end();
    res.writeHead(200, { 'content-length': String(f.length) }).end(f);
  });
  await new Promise<void>((r) => vendor.listen(0, '127.0.0.1', () => r()));
  const vendorUrl = `http://127.0.0.1:${(vendor.address() as AddressInfo).port}`;
  try {
    console.log(`machine: ${cpus().length} cores (${cpus()[0]?.model}), Node ${process.version}; ${wrkVersion}`);
    console.log(`load: ${nAgents} agents, wrk ${load.threads} thread(s), ${load.connections} keep-alive connections, ${load.seconds} s per run`);
    const keys = await generateKeys(join(dir, 'keys'));
    const key = await loadPrivateKey(keys.keyFile);
    const updates: CatalogUpdate[] = [];
    for (let i = 0; i < UPDATES; i++) {
      const data = randomBytes(4096 + i);
      const path = `/kb${6000000 + i}.msu`;
      files.set(path, data);
      const kb = String(6000000 + i);
      updates.push({
        id: `bench-${i}`,
        revision: 1,
        kb,
        bulletin: null,
        title: `Bench update ${i} (KB${kb})`,
        vendor: 'Microsoft',
        productFamily: 'Windows',
        product: PRODUCT,
        classification: 'Security Updates',
        severity: 'Critical',
        cves: [`CVE-2024-${20000 + i}`],
        releaseDate: '2024-01-09',
        supersedes: [],
        restart: 'required',
        install: { successCodes: [0], rebootCodes: [3010, 1641] },
        applicability: { product: PRODUCT },
        installed: { kb },
        files: [
          {
            name: path.slice(1),
            url: `${vendorUrl}${path}`,
            size: data.length,
            sha256: createHash('sha256').update(data).digest('hex'),
            language: 'neutral',
            installer: { type: 'wusa' },
          },
        ],
      });
    }
    const cat = join(dir, 'c.ndjson.gz');
    await writeCatalog(
      cat,
      {
        format: 'patchtree-catalog',
        formatVersion: 2,
        version: 'b1',
        publisher: 'bench',
        createdAt: new Date(Date.UTC(2024, 0, 1)).toISOString(),
        updates: UPDATES,
      },
      updates,
    );
    await signFile(cat, key);
    const node = await startNode(dir, 'site', keys.pubFile);
    await importCatalog(node, cat);
    await api(node.url, '/api/v1/settings/content', { method: 'PUT', body: JSON.stringify({ reserveBytes: 0 }) });
    const token = (await api(node.url, '/api/v1/agents/enrollment-tokens', { method: 'POST', body: '{}' })).token as string;

    // The fleet enrols and reports.
    const agents: { agentId: string; secret: string; etag: string }[] = new Array(nAgents);
    let t0 = performance.now();
    await pool(nAgents, 32, async (i) => {
      const name = `BENCH-${String(i).padStart(6, '0')}`;
      const e = await api(node.url, '/agent/v1/enroll', { method: 'POST', body: JSON.stringify({ enrollmentToken: token, name }) }, 'none');
      await api(
        node.url,
        '/agent/v1/inventory',
        {
          method: 'POST',
          body: JSON.stringify({
            agentKey: e.agentId,
            name,
            full: {
              os: { family: 'windows', name: PRODUCT, version: '10.0.22631.2861', arch: 'x64', language: 'en-us' },
              products: [{ name: PRODUCT }],
              kbs: [],
            },
          }),
        },
        e.secret,
      );
      agents[i] = { agentId: e.agentId, secret: e.secret, etag: '' };
    });
    console.log(`setup: ${nAgents} agents enrolled and reported in ${((performance.now() - t0) / 1000).toFixed(1)} s`);

    t0 = performance.now();
    const policy = await api(node.url, '/api/v1/policies', {
      method: 'POST',
      body: JSON.stringify({
        name: 'Bench',
        updates: updates.slice(0, DELIVERED).map((u) => u.id),
        targets: { all: true },
        installation: { maintenance: { mode: 'any-time' } },
      }),
    });
    for (;;) {
      const p = await api(node.url, `/api/v1/policies/${policy.id}`);
      const c = await api(node.url, '/api/v1/content');
      if (p.delivery.targeted === nAgents * DELIVERED && c.verified >= DELIVERED) break;
      await new Promise((r) => setTimeout(r, 200));
    }
    console.log(`setup: policy targeted ${nAgents * DELIVERED} (computer, update) pairs, files verified, in ${((performance.now() - t0) / 1000).toFixed(1)} s`);

    // Every agent's ETag (this also fills the node's answer cache, as a running fleet would).
    let bodyBytes = 0;
    await pool(nAgents, 32, async (i) => {
      const res = await fetch(`${node.url}/agent/v1/assignments`, { headers: { authorization: `Bearer ${agents[i]!.secret}` } });
      const body = await res.text();
      bodyBytes = body.length;
      if (res.status !== 200 || (JSON.parse(body) as { items: unknown[] }).items.length !== DELIVERED)
        throw new Error(`assignments: ${res.status} ${body.slice(0, 200)}`);
      agents[i]!.etag = res.headers.get('etag')!;
    });
    const agentsFile = join(dir, 'agents.txt');
    await writeFile(agentsFile, `${agents.map((a) => `${a.secret} ${a.etag} ${updates[0]!.id}`).join('\n')}\n`);
    console.log(`assignments body: ${bodyBytes} bytes, ${DELIVERED} items`);

    const skip: WrkResult = { requests: 0, durationUs: 1, p50Ms: 0, p99Ms: 0, maxMs: 0, errStatus: 0, errConnect: 0, errTimeout: 0, errRead: 0 };
    const run = (mode: string) => (!only || only === mode ? wrk(node.url, mode, agentsFile, load) : skip);
    const cpu0 = nodeCpuSeconds(node.pid);
    const r200 = run('200');
    const cpu1 = nodeCpuSeconds(node.pid);
    const r304 = run('304');
    const cpu2 = nodeCpuSeconds(node.pid);
    const rEvents = run('events');
    const cpu3 = nodeCpuSeconds(node.pid);
    console.log(
      `node CPU seconds per run (of ${load.seconds} s): 200 ${(cpu1 - cpu0).toFixed(1)}, 304 ${(cpu2 - cpu1).toFixed(1)}, events ${(cpu3 - cpu2).toFixed(1)}`,
    );
    const stored = (await api(node.url, `/api/v1/policies/${policy.id}/delivery?limit=1`)).totals;
    const nodeRss = await vmHwmMB(node.pid);

    // The bare server, same tool, same body: as durable as the node (an fsync per
    // commit), and without the fsync (the CPU limit of parse + one write).
    const bareRun = async (sync: 'full' | 'normal') => {
      const bare = spawn(process.execPath, [join(ROOT, 'dist', 'bench', 'checkin', 'bare-server.js'), join(dir, `bare-${sync}.db`), sync], {
        stdio: ['ignore', 'pipe', 'inherit'],
      });
      benchProcesses.push(bare);
      const port = await new Promise<number>((resolve, reject) => {
        bare.on('exit', (c) => reject(new Error(`bare server exited ${c}`)));
        createInterface({ input: bare.stdout! }).on('line', (l) => {
          const m = /^listening (\d+)$/.exec(l);
          if (m) resolve(Number(m[1]));
        });
      });
      const r = wrk(`http://127.0.0.1:${port}`, 'events', agentsFile, load);
      bare.removeAllListeners('exit');
      bare.kill('SIGTERM');
      return r;
    };
    const rBare = await bareRun('full');
    const rBareNormal = await bareRun('normal');

    console.log('');
    console.log(show('GET assignments (200, body)', r200));
    console.log(show('GET assignments (304, ETag)', r304));
    console.log(show('POST events (batch of 5)', rEvents));
    console.log(show('bare: 1 SQLite write, fsync', rBare));
    console.log(show('bare: 1 SQLite write, no fsync', rBareNormal));
    console.log('');
    const goal = (name: string, r: WrkResult) =>
      `${name}: ${rps(r).toFixed(0)}/s = ${((100 * rps(r)) / rps(rBare)).toFixed(0)}% of bare with fsync, ${((100 * rps(r)) / rps(rBareNormal)).toFixed(0)}% without; ` +
      `>= 5,000/s ${rps(r) >= 5000 ? 'met' : 'NOT met'}; >= 50% of bare ${rps(r) >= rps(rBare) / 2 ? 'met' : 'NOT met'} (${rps(r) >= rps(rBareNormal) / 2 ? 'met' : 'not met'} without fsync); p99 < 50 ms ${r.p99Ms < 50 ? 'met' : 'NOT met'}`;
    console.log(goal('assignments 304', r304));
    console.log(goal('assignments 200', r200));
    console.log(goal('events', rEvents));
    console.log(
      `node peak RSS ${nodeRss} MB; event batches stored: ${rEvents.requests - rEvents.errStatus} x 5 events; delivery totals after: ${JSON.stringify(stored)}`,
    );
  } finally {
    vendor.close();
    await stopBenchProcesses();
    await rm(dir, { recursive: true, force: true });
  }
}

runBench(main);
