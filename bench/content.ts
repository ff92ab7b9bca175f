/**
 * bench/content: (1) download throughput of the node's downloader from a local
 * HTTP server (a separate process) against a raw `fetch` of the same file piped to
 * disk (the limit); (2) the node's peak RSS (VmHWM) while serving 100 concurrent
 * downloads of that file from /agent/v1/files.
 *
 *   node dist/bench/content.js [--mb 200] [--clients 100]
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { readFile, rm, stat } from 'node:fs/promises';
import { createServer } from 'node:http';
import { cpus } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { ReadableStream as WebReadableStream } from 'node:stream/web';
import { fileURLToPath } from 'node:url';
import { auth, benchArgs, benchProcesses, benchTempDir, runBench, startNode, stopBenchProcesses, vmHwmMB, wholeNumber } from './util.js';
import { writeCatalog } from '../src/catalog/build.js';
import { generateKeys, loadPrivateKey, signFile } from '../src/catalog/signing.js';

const SELF = fileURLToPath(import.meta.url);

/** `--serve FILE`: the "vendor", a plain HTTP file server in its own process. */
async function serve(file: string): Promise<void> {
  const size = (await stat(file)).size;
  const server = createServer((_req, res) => {
    res.writeHead(200, { 'content-length': String(size), 'content-type': 'application/octet-stream' });
    createReadStream(file, { highWaterMark: 256 * 1024 }).pipe(res);
  });
  server.listen(0, '127.0.0.1', () => console.log(JSON.stringify({ port: (server.address() as { port: number }).port })));
}

function firstLine(child: ChildProcess, match: (rec: Record<string, unknown>) => boolean): Promise<Record<string, unknown>> {
  return new Promise((resolve, reject) => {
    createInterface({ input: child.stdout! }).on('line', (l) => {
      try {
        const rec = JSON.parse(l) as Record<string, unknown>;
        if (match(rec)) resolve(rec);
      } catch {
        /* not JSON */
      }
    });
    child.on('exit', (c) => reject(new Error(`child exited ${c}`)));
  });
}

const HELP = `usage: node dist/bench/content.js [--mb M] [--clients C]

(1) Download throughput of the node's downloader from a local HTTP server, against a raw
fetch of the same M-MiB file piped to disk; (2) the node's peak RSS while serving C
concurrent downloads of that file from /agent/v1/files. (--serve FILE is the local
server's own process.)

options:
  --mb M          the file's size in MiB (default 200)
  --clients C     concurrent downloads (default 100)
  -h, --help      this help`;

async function main(): Promise<void> {
  const values = benchArgs('content', HELP, { mb: { type: 'string', default: '200' }, clients: { type: 'string', default: '100' }, serve: { type: 'string' } });
  if (values.serve) return serve(values.serve);
  const mb = wholeNumber(values.mb, 'mb', 1, 100_000);
  const size = mb * 1024 * 1024;
  const clients = wholeNumber(values.clients, 'clients', 1, 10_000);
  const dir = await benchTempDir('patchtree-bench-content-');
  const children: ChildProcess[] = [];
  try {
    // The file, and a catalog naming it.
    const file = join(dir, 'update.cab');
    const hash = createHash('sha256');
    const out = createWriteStream(file);
    for (let done = 0; done < size; done += 4 * 1024 * 1024) {
      const chunk = randomBytes(Math.min(4 * 1024 * 1024, size - done));
      hash.update(chunk);
      if (!out.write(chunk)) await new Promise<void>((r) => out.once('drain', () => r()));
    }
    await new Promise<void>((r) => out.end(() => r()));
    const sha256 = hash.digest('hex');

    const vendor = spawn(process.execPath, [SELF, '--serve', file], { stdio: ['ignore', 'pipe', 'inherit'] });
    children.push(vendor);
    benchProcesses.push(vendor); // stopped if the bench is interrupted
    const vport = (await firstLine(vendor, (r) => 'port' in r)).port as number;
    const url = `http://127.0.0.1:${vport}/update.cab`;

    // (1a) the limit: a raw fetch piped to disk.
    let t0 = performance.now();
    const res = await fetch(url);
    await pipeline(Readable.fromWeb(res.body as unknown as WebReadableStream), createWriteStream(join(dir, 'raw.cab')));
    const rawSeconds = (performance.now() - t0) / 1000;

    // (1b) the node's downloader (hash, rate-limit bookkeeping, partial file, rename).
    const keys = await generateKeys(join(dir, 'keys'));
    const catalog = join(dir, 'catalog.ndjson.gz');
    await writeCatalog(
      catalog,
      { format: 'patchtree-catalog', formatVersion: 2, version: 'b1', publisher: 'bench', createdAt: new Date().toISOString(), updates: 1 },
      [
        {
          id: 'bench-update',
          revision: 1,
          kb: '5000001',
          bulletin: null,
          title: 'Bench update',
          vendor: 'Microsoft',
          productFamily: 'Windows',
          product: 'Windows 11 Version 23H2 for x64-based Systems',
          classification: 'Security Updates',
          severity: 'Critical',
          cves: [],
          releaseDate: '2024-01-09',
          supersedes: [],
          restart: 'required',
          install: { successCodes: [0], rebootCodes: [3010] },
          applicability: { product: 'Windows 11 Version 23H2 for x64-based Systems' },
          installed: { kb: '5000001' },
          files: [{ name: 'update.cab', url, size, sha256, language: 'neutral', installer: { type: 'dism' } }],
        },
      ],
    );
    await signFile(catalog, await loadPrivateKey(keys.keyFile));
    const node = await startNode(dir, 'node', keys.pubFile);
    const base = node.url;
    const form = new FormData();
    form.append('catalog', new Blob([await readFile(catalog)]), 'c.gz');
    form.append('signature', new Blob([await readFile(`${catalog}.sig`)]), 'c.gz.sig');
    await fetch(`${base}/api/v1/catalog/imports`, { method: 'POST', body: form, headers: auth });
    await fetch(`${base}/api/v1/settings/content`, {
      method: 'PUT',
      body: JSON.stringify({ reserveBytes: 0 }),
      headers: { ...auth, 'content-type': 'application/json' },
    });
    t0 = performance.now();
    await fetch(`${base}/api/v1/content/downloads`, {
      method: 'POST',
      body: JSON.stringify({ updates: ['bench-update'] }),
      headers: { ...auth, 'content-type': 'application/json' },
    });
    for (;;) {
      const s = (await (await fetch(`${base}/api/v1/content`, { headers: auth })).json()) as { verified: number; failed: number };
      if (s.verified === 1) break;
      if (s.failed) throw new Error('download failed');
      await new Promise((r) => setTimeout(r, 20));
    }
    const nodeSeconds = (performance.now() - t0) / 1000;
    const rssAfterDownload = await vmHwmMB(node.pid);

    // (2) 100 concurrent downloads of the file from the node.
    t0 = performance.now();
    let bytes = 0;
    await Promise.all(
      Array.from({ length: clients }, async () => {
        const r = await fetch(`${base}/agent/v1/files/${sha256}`, { headers: auth });
        for await (const chunk of r.body as unknown as AsyncIterable<Uint8Array>) bytes += chunk.length;
      }),
    );
    const serveSeconds = (performance.now() - t0) / 1000;
    const rssAfterServe = await vmHwmMB(node.pid);
    if (bytes !== size * clients) throw new Error(`served ${bytes} bytes, expected ${size * clients}`);

    const mbps = (b: number, s: number) => `${(b / 1024 / 1024 / s).toFixed(0)} MiB/s`;
    console.log(`machine: ${cpus().length} cores (${cpus()[0]?.model}), Node ${process.version}; file ${mb} MiB`);
    console.log(`download, raw fetch piped to disk (limit): ${rawSeconds.toFixed(2)} s, ${mbps(size, rawSeconds)}`);
    console.log(
      `download, node downloader (hash + verify + store): ${nodeSeconds.toFixed(2)} s, ${mbps(size, nodeSeconds)} (${(nodeSeconds / rawSeconds).toFixed(2)}x the limit); node peak RSS ${rssAfterDownload} MB`,
    );
    console.log(
      `serve: ${clients} concurrent downloads of ${mb} MiB: ${serveSeconds.toFixed(1)} s, ${mbps(size * clients, serveSeconds)} total; node peak RSS ${rssAfterServe} MB`,
    );
  } finally {
    for (const c of children) c.kill('SIGTERM');
    await stopBenchProcesses();
    await rm(dir, { recursive: true, force: true });
  }
}

if (process.argv[1] && SELF === process.argv[1]) runBench(main);
