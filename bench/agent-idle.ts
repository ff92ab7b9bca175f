/**
 * bench/agent-idle: what an idle agent costs. A real node and a real agent process
 * (file inventory, one policy already installed, so nothing changes); after the
 * agent's first check-ins, for --seconds (default 60): the agent's CPU time and
 * RSS (from /proc), and the bytes on the wire per check-in, counted by a TCP proxy
 * between the agent and the node.
 *
 *   node dist/bench/agent-idle.js [--seconds 60] [--interval 10]
 */
import { spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import { createServer as createHttpServer } from 'node:http';
import { connect, createServer, type AddressInfo } from 'node:net';
import { cpus } from 'node:os';
import { join } from 'node:path';
import { writeCatalog } from '../src/catalog/build.js';
import { generateKeys, loadPrivateKey, signFile } from '../src/catalog/signing.js';
import type { CatalogUpdate } from '../src/catalog/format.js';
import { ROOT, auth, benchArgs, benchProcesses, benchTempDir, importCatalog, runBench, startNode, stopBenchProcesses, wholeNumber } from './util.js';

const PRODUCT = 'Windows 11 Version 23H2 for x64-based Systems';

function procStat(pid: number): { cpu: number; rssMB: number; hwmMB: number } {
  const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = (k: string) => Number(new RegExp(`${k}:\\s+(\\d+) kB`).exec(status)?.[1] ?? NaN) / 1024;
  return { cpu: (Number(f[11]) + Number(f[12])) / 100, rssMB: kb('VmRSS'), hwmMB: kb('VmHWM') };
}

async function api(url: string, path: string, init: RequestInit = {}): Promise<any> {
  const res = await fetch(`${url}${path}`, { ...init, headers: { ...auth, 'content-type': 'application/json' } });
  const text = await res.text();
  if (!res.ok) throw new Error(`${path}: ${res.status} ${text}`);
  return JSON.parse(text);
}

const HELP = `usage: node dist/bench/agent-idle.js [--seconds S] [--interval I]

What an idle agent costs: a real node and a real agent with nothing to do; over S
seconds after its first check-ins, the agent's CPU time and RSS and the bytes on the
wire per check-in (counted by a TCP proxy between the agent and the node).

options:
  --seconds S     how long to watch the idle agent, 1 to 86400 (default 60)
  --interval I    the agent's check-in interval in seconds, 1 to 86400 (default 10)
  -h, --help      this help`;

async function main(): Promise<void> {
  const values = benchArgs('agent-idle', HELP, { seconds: { type: 'string', default: '60' }, interval: { type: 'string', default: '10' } });
  const seconds = wholeNumber(values.seconds, 'seconds', 1, 86_400);
  const interval = wholeNumber(values.interval, 'interval', 1, 86_400);
  const dir = await benchTempDir('patchtree-bench-agent-');
  const data = randomBytes(100_000);
  const vendor = createHttpServer((_req, res) => res.writeHead(200, { 'content-length': String(data.length) }).end(data));
  await new Promise<void>((r) => vendor.listen(0, '127.0.0.1', () => r()));
  try {
    console.log(`machine: ${cpus().length} cores (${cpus()[0]?.model}), Node ${process.version}`);
    const keys = await generateKeys(join(dir, 'keys'));
    const key = await loadPrivateKey(keys.keyFile);
    const updates: CatalogUpdate[] = Array.from({ length: 200 }, (_, i) => ({
      id: `idle-${i}`,
      revision: 1,
      kb: String(7000000 + i),
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
      // The installer puts the KB in the inventory, as a real install changes what the next scan finds.
      install: { successCodes: [0], rebootCodes: [3010] },
      applicability: { product: PRODUCT },
      installed: { kb: String(7000000 + i) },
      files: [
        {
          name: `kb${i}.msu`,
          url: `http://127.0.0.1:${(vendor.address() as AddressInfo).port}/kb${i}.msu`,
          size: data.length,
          sha256: createHash('sha256').update(data).digest('hex'),
          language: 'neutral',
          installer: { type: 'command', command: `cp '${join(dir, 'inventory-after.json')}' '${join(dir, 'inventory.json')}' # "{file}"` },
        },
      ],
    }));
    const cat = join(dir, 'c.ndjson.gz');
    await writeCatalog(
      cat,
      { format: 'patchtree-catalog', formatVersion: 2, version: 'i1', publisher: 'bench', createdAt: new Date().toISOString(), updates: updates.length },
      updates,
    );
    await signFile(cat, key);
    const node = await startNode(dir, 'site', keys.pubFile);
    await importCatalog(node, cat);
    await api(node.url, '/api/v1/settings/content', { method: 'PUT', body: JSON.stringify({ reserveBytes: 0 }) });
    const token = (await api(node.url, '/api/v1/agents/enrollment-tokens', { method: 'POST', body: '{}' })).token as string;

    // A proxy that counts the bytes of the agent's traffic.
    const bytes = { up: 0, down: 0 };
    const nodePort = Number(new URL(node.url).port);
    const proxy = createServer((c) => {
      const u = connect(nodePort, '127.0.0.1');
      c.on('data', (d) => {
        bytes.up += d.length;
        u.write(d);
      });
      u.on('data', (d) => {
        bytes.down += d.length;
        c.write(d);
      });
      const end = () => {
        c.destroy();
        u.destroy();
      };
      c.on('close', end).on('error', end);
      u.on('close', end).on('error', end);
    });
    await new Promise<void>((r) => proxy.listen(0, '127.0.0.1', () => r()));

    // The computer has 199 of the 200 updates; a policy delivers the last one, which installs once.
    const inv = join(dir, 'inventory.json');
    const inventory = (kbs: CatalogUpdate[]) =>
      JSON.stringify({
        os: { family: 'windows', name: PRODUCT, version: '10.0.22631.3007', arch: 'x64', language: 'en-us' },
        products: [{ name: PRODUCT }],
        kbs: kbs.map((u) => u.kb),
      });
    writeFileSync(inv, inventory(updates.slice(1)));
    writeFileSync(join(dir, 'inventory-after.json'), inventory(updates));
    await api(node.url, '/api/v1/policies', {
      method: 'POST',
      body: JSON.stringify({ name: 'All', updates: ['idle-0'], targets: { all: true }, installation: { maintenance: { mode: 'any-time' } } }),
    });
    const state = join(dir, 'agent');
    const agent = spawn(
      process.execPath,
      [
        join(ROOT, 'bin', 'patchtree.js'),
        'agent',
        'run',
        '--server',
        `http://127.0.0.1:${(proxy.address() as AddressInfo).port}`,
        '--state',
        state,
        '--enrollment-token',
        token,
        '--inventory',
        `file:${inv}`,
        '--interval',
        String(interval),
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
    // Let it rescan, report and settle, then measure.
    for (;;) {
      if (/scan: 0 update\(s\) required/.test(log())) break;
      await new Promise((r) => setTimeout(r, 200));
    }
    await new Promise((r) => setTimeout(r, 3000));
    const count = () => (log().match(/task deploy finished/g) ?? []).length;
    const s0 = procStat(agent.pid!);
    const b0 = { ...bytes };
    const c0 = count();
    await new Promise((r) => setTimeout(r, seconds * 1000));
    const s1 = procStat(agent.pid!);
    const checkins = count() - c0;
    const up = bytes.up - b0.up;
    const down = bytes.down - b0.down;
    console.log(`agent idle for ${seconds} s, check-in every ${interval} s (± jitter): ${checkins} check-ins`);
    console.log(`CPU: ${(s1.cpu - s0.cpu).toFixed(2)} s over ${seconds} s (${((100 * (s1.cpu - s0.cpu)) / seconds).toFixed(2)}% of one core)`);
    console.log(`RSS: ${s1.rssMB.toFixed(0)} MB at the end, peak ${s1.hwmMB.toFixed(0)} MB`);
    console.log(
      `bytes per check-in (nothing changed): ${(up / Math.max(1, checkins)).toFixed(0)} up, ${(down / Math.max(1, checkins)).toFixed(0)} down (${up + down} bytes in all)`,
    );
    console.log(`the agent's log over the window: ${log().split('\n').slice(-4).join(' | ')}`);
    proxy.close();
  } finally {
    vendor.close();
    await stopBenchProcesses();
    await rm(dir, { recursive: true, force: true });
  }
}

runBench(main);
