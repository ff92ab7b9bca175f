import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { openAsBlob } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createInterface } from 'node:readline';
import { loadConfig } from '../src/node/config.js';
import { PatchtreeNode } from '../src/node/node.js';
import { createLogger } from '../src/lib/log.js';
import { buildCatalog, writeCatalog } from '../src/catalog/build.js';
import { generateKeys, loadPrivateKey, signFile } from '../src/catalog/signing.js';
import type { CatalogHeader, CatalogUpdate } from '../src/catalog/format.js';
import * as grpc from '@grpc/grpc-js';
import { PROTOCOL_VERSION, replicationService } from '../src/replication/protocol.js';

/** Repository root (tests run from dist/test, compiled). */
export const ROOT = fileURLToPath(new URL('../../', import.meta.url));
export const FIXTURES = join(ROOT, 'test', 'fixtures');
export const BIN = join(ROOT, 'bin', 'patchtree.js');
export const CVRF = [join(FIXTURES, 'msrc-cvrf', '2016-Apr.xml.gz'), join(FIXTURES, 'msrc-cvrf', '2024-Jan.xml.gz')];
export const WSUS = ['Windows-10-22H2', 'Windows-11-23H2', 'Office-2016'].map((n) => join(FIXTURES, 'wsus-osdsus', `${n}.json.gz`));

export const ADMIN_TOKEN = 'test-admin-token-0123456789abcdef';

interface T {
  teardown(fn: () => unknown): void;
}

export async function tempDir(t: T, prefix = 'patchtree-test-'): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), prefix));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

export interface Keys {
  keyFile: string;
  pubFile: string;
  keyId: string;
}

export async function makeKeys(dir: string, name = 'keys'): Promise<Keys> {
  return generateKeys(join(dir, name));
}

/** Builds and signs the catalog from the real shared data. */
export async function buildRealCatalog(dir: string, keys: Keys, version = '2024.01.1', createdAt?: Date) {
  const out = join(dir, `catalog-${version}.ndjson.gz`);
  const summary = await buildCatalog({ cvrf: CVRF, wsus: WSUS, version, out, sign: keys.keyFile, ...(createdAt ? { createdAt } : {}) });
  return { file: out, sig: `${out}.sig`, summary };
}

/** Writes a catalog from raw lines (anything, valid or not) and signs it. */
export async function writeSignedCatalog(
  dir: string,
  keys: Keys,
  name: string,
  header: CatalogHeader,
  updates: unknown[],
): Promise<{ file: string; sig: string }> {
  const file = join(dir, name);
  await writeCatalog(file, header, updates as CatalogUpdate[]);
  await signFile(file, await loadPrivateKey(keys.keyFile));
  return { file, sig: `${file}.sig` };
}

export function header(version: string, updates: number, createdAt = new Date()): CatalogHeader {
  return { format: 'patchtree-catalog', formatVersion: 2, version, publisher: 'test publisher', createdAt: createdAt.toISOString(), updates };
}

/** A small valid update; override any field. */
export function sampleUpdate(n: number, over: Partial<CatalogUpdate> = {}): CatalogUpdate {
  const kb = String(5000000 + n);
  return {
    id: `test-${n}`,
    revision: 1,
    kb,
    bulletin: null,
    title: `Test update ${n} (KB${kb})`,
    vendor: 'Microsoft',
    productFamily: 'Windows',
    product: 'Windows 11 Version 23H2 for x64-based Systems',
    classification: 'Security Updates',
    severity: 'Important',
    cves: [`CVE-2024-${String(10000 + n)}`],
    releaseDate: `2024-01-${String((n % 28) + 1).padStart(2, '0')}`,
    supersedes: [],
    restart: 'may',
    install: { successCodes: [0], rebootCodes: [3010] },
    applicability: { product: 'Windows 11 Version 23H2 for x64-based Systems' },
    installed: { kb },
    files: [
      {
        name: `kb${kb}.msu`,
        url: `http://vendor.example/kb${kb}.msu`,
        size: 1000 + n,
        sha256: n.toString(16).padStart(64, 'a'),
        language: 'neutral',
        installer: { type: 'wusa' },
      },
    ],
    ...over,
  };
}

export interface RunningNode {
  url: string;
  token: string;
  node: PatchtreeNode;
  dataDir: string;
}

/** A node in this process: real SQLite file, real HTTP and gRPC on port 0. */
export async function startNode(t: T, opts: { trustedKeys?: string[]; extra?: string[]; dataDir?: string } = {}): Promise<RunningNode> {
  const dataDir = opts.dataDir ?? (await tempDir(t));
  // Tests call the API over plain HTTP on loopback: a lab (--insecure-http).
  const args = [
    '--data',
    dataDir,
    '--http-port',
    '0',
    '--https-port',
    '0',
    '--grpc-port',
    '0',
    '--http-host',
    '127.0.0.1',
    '--grpc-host',
    '127.0.0.1',
    '--admin-token',
    ADMIN_TOKEN,
    '--log-level',
    'silent',
    '--name',
    'test-node',
    '--insecure-http',
  ];
  for (const k of opts.trustedKeys ?? []) args.push('--trusted-key', k);
  const config = loadConfig([...args, ...(opts.extra ?? [])], {});
  const node = new PatchtreeNode(config, createLogger('silent'));
  await node.start();
  t.teardown(() => node.stop());
  return { url: `http://127.0.0.1:${node.httpPort}`, token: ADMIN_TOKEN, node, dataDir };
}

export async function api(base: string, token: string | null, path: string, init: RequestInit = {}): Promise<{ status: number; body: any; headers: Headers }> {
  const headers = new Headers(init.headers);
  if (token) headers.set('authorization', `Bearer ${token}`);
  if (init.body && typeof init.body === 'string' && !headers.has('content-type')) headers.set('content-type', 'application/json');
  const res = await fetch(base + path, { ...init, headers });
  const text = await res.text();
  let body: unknown = text;
  try {
    body = text ? JSON.parse(text) : null;
  } catch {
    /* not JSON */
  }
  return { status: res.status, body, headers: res.headers };
}

export async function uploadCatalog(base: string, token: string | null, file: string, sig: string) {
  const form = new FormData();
  form.append('catalog', await openAsBlob(file), 'catalog.ndjson.gz');
  form.append('signature', await openAsBlob(sig), 'catalog.ndjson.gz.sig');
  return api(base, token, '/api/v1/catalog/imports', { method: 'POST', body: form });
}

/** Writes a signed catalog of `updates`, version `version` made on 2024-01-`day`, in `dir` and imports it at `base` (admin); the import's answer. */
export async function importUpdates(base: string, dir: string, keys: Keys, version: string, day: number, updates: CatalogUpdate[]) {
  const { file, sig } = await writeSignedCatalog(dir, keys, `${version}.gz`, header(version, updates.length, new Date(Date.UTC(2024, 0, day))), updates);
  return uploadCatalog(base, ADMIN_TOKEN, file, sig);
}

/** Every item of a paginated list, walking nextCursor. */
export async function listAll(base: string, token: string, path: string, limit: number): Promise<any[]> {
  const items: any[] = [];
  let cursor: string | null = null;
  for (let page = 0; page < 10_000; page++) {
    const sep = path.includes('?') ? '&' : '?';
    const res = await api(base, token, `${path}${sep}limit=${limit}${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ''}`);
    if (res.status !== 200) throw new Error(`GET ${path}: ${res.status} ${JSON.stringify(res.body)}`);
    items.push(...res.body.items);
    cursor = res.body.nextCursor;
    if (!cursor) return items;
  }
  throw new Error('pagination did not end');
}

export interface NodeProcess {
  child: ChildProcess;
  /** Every JSON log line the process printed so far. */
  logs: Record<string, unknown>[];
  url: string;
  httpPort: number;
  grpcPort: number;
  /** The node's HTTPS port, with its own certificate (CA in <data>/tls/ca.pem). */
  httpsPort: number;
  httpsUrl: string;
  exited: Promise<number | null>;
}

/** Runs `patchtree serve` as a real child process and waits for its "node started" log line. */
export async function spawnNode(t: T, args: string[], env: NodeJS.ProcessEnv = {}, o: { plainHttp?: boolean } = {}): Promise<NodeProcess> {
  // Tests call the API over plain HTTP on loopback: a lab (--insecure-http), unless a test checks what HTTPS-only means.
  const lab = o.plainHttp === false ? [] : ['--insecure-http'];
  const child = spawn(
    process.execPath,
    [BIN, 'serve', '--http-port', '0', '--https-port', '0', '--grpc-port', '0', '--http-host', '127.0.0.1', '--grpc-host', '127.0.0.1', ...lab, ...args],
    {
      env: { PATH: process.env.PATH, ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    },
  );
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  t.teardown(async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGTERM');
      await exited;
    }
  });
  let stderr = '';
  child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  const lines = createInterface({ input: child.stdout! });
  const logs: Record<string, unknown>[] = [];
  const started = await new Promise<{ http: number; grpc: number; https: number }>((resolve, reject) => {
    lines.on('line', (line) => {
      try {
        const rec = JSON.parse(line) as { msg?: string; http?: number; grpc?: number; https?: number };
        logs.push(rec);
        if (rec.msg === 'node started') resolve({ http: rec.http!, grpc: rec.grpc!, https: rec.https! });
      } catch {
        /* not a log line */
      }
    });
    exited.then((code) => reject(new Error(`node exited with ${code} before starting: ${stderr}`)));
  });
  return {
    child,
    logs,
    url: `http://127.0.0.1:${started.http}`,
    httpPort: started.http,
    grpcPort: started.grpc,
    httpsPort: started.https,
    httpsUrl: `https://127.0.0.1:${started.https}`,
    exited,
  };
}

/**
 * A node of a tree as a real process (--insecure on loopback): named, with its
 * languages, joined to `upstream` with a fresh join token when one is given.
 */
export async function treeNode(
  t: T,
  dir: string,
  keys: Keys,
  name: string,
  languages: string,
  upstream?: NodeProcess,
  extra: string[] = [],
): Promise<NodeProcess> {
  const args = [
    '--data',
    join(dir, name),
    '--name',
    name,
    '--languages',
    languages,
    '--insecure',
    '--trusted-key',
    keys.pubFile,
    '--admin-token',
    ADMIN_TOKEN,
    ...extra,
  ];
  if (upstream) {
    const tok = await api(upstream.url, ADMIN_TOKEN, '/api/v1/hierarchy/join-tokens', { method: 'POST', body: '{}' });
    args.push('--upstream', `127.0.0.1:${upstream.grpcPort}`, '--join-token', tok.body.token);
  }
  return spawnNode(t, args);
}

/**
 * Runs `patchtree agent run` as a real process against `server`, enrolling with
 * `token` and scanning the inventory file; stopped (SIGTERM) at teardown.
 */
export function startAgent(
  t: T,
  server: string,
  state: string,
  token: string,
  inventory: string,
  o: { interval?: number; installTimeout?: number; name?: string; stdout?: 'inherit' | 'ignore'; env?: NodeJS.ProcessEnv } = {},
): ChildProcess {
  const child = spawn(
    process.execPath,
    [
      BIN,
      'agent',
      'run',
      '--server',
      server,
      '--state',
      state,
      '--enrollment-token',
      token,
      '--inventory',
      `file:${inventory}`,
      '--interval',
      String(o.interval ?? 1),
      '--name',
      o.name ?? 'PC-1',
      '--install-timeout',
      String(o.installTimeout ?? 20),
      // Plain HTTP (most tests, behind a TCP proxy that reads the traffic): a lab.
      ...(server.startsWith('http:') ? ['--insecure'] : []),
    ],
    { env: { PATH: process.env.PATH, ...o.env }, stdio: ['ignore', o.stdout ?? 'inherit', 'inherit'] },
  );
  const exited = new Promise((r) => child.once('exit', r));
  t.teardown(async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGTERM');
      await exited;
    }
  });
  return child;
}

/** Runs the CLI to completion. */
export function runCli(args: string[], env: NodeJS.ProcessEnv = {}): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [BIN, ...args], { env: { PATH: process.env.PATH, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('exit', (code) => resolve({ code, stdout, stderr }));
  });
}

/**
 * A raw Replication client that joined `node` as a child (a one-time token, then
 * the credential in `md`), to drive the parent's RPCs directly. Closed at teardown.
 */
export async function joinRaw(t: T, node: RunningNode, child: { id: string; name: string; languages: string[] }): Promise<{ client: any; md: grpc.Metadata }> {
  const tok = (await api(node.url, ADMIN_TOKEN, '/api/v1/hierarchy/join-tokens', { method: 'POST', body: '{}' })).body.token;
  const client = new (replicationService())(`127.0.0.1:${node.node.grpcPort}`, grpc.credentials.createInsecure()) as any;
  t.teardown(() => client.close());
  const joined = await new Promise<any>((resolve, reject) =>
    client.Join({ join_token: tok, node_id: child.id, name: child.name, languages: child.languages, protocol_version: PROTOCOL_VERSION }, (err: any, r: any) =>
      err ? reject(err) : resolve(r),
    ),
  );
  const md = new grpc.Metadata();
  md.set('authorization', `Bearer ${joined.credential}`);
  return { client, md };
}

/** Acknowledges `cursor` in `epoch` as a child does once it has applied it (a complete resync's end is owed until then). */
export function ackRaw(client: any, md: grpc.Metadata, ack: { id: string; cursor: number; epoch: string }): Promise<void> {
  return new Promise((resolve, reject) =>
    client.Ack({ node_id: ack.id, cursor: ack.cursor, files_pending: 0, epoch: ack.epoch }, md, (err: Error | null) => (err ? reject(err) : resolve())),
  );
}

/** id:revision of every update a node holds, expired ones included, sorted: equal on two nodes means no gap and no duplicate. */
export async function fingerprint(n: { url: string }): Promise<string[]> {
  return (await listAll(n.url, ADMIN_TOKEN, '/api/v1/updates?expired=any', 1000)).map((u) => `${u.id}:${u.revision}`).sort();
}

/** Signs in to a node's console with an API token; the session cookie (`name=value`) for later requests. */
export async function consoleCookie(url: string, token: string): Promise<string> {
  const res = await fetch(`${url}/sign-in`, { method: 'POST', redirect: 'manual', body: new URLSearchParams({ token, next: '/' }) });
  const cookie = res.headers.get('set-cookie')?.split(';')[0];
  if (res.status !== 303 || !cookie) throw new Error(`sign-in at ${url}: ${res.status}`);
  return cookie;
}
