import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { createWriteStream, openAsBlob } from 'node:fs';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { buildCatalog } from '../catalog/build.js';
import { generateKeys } from '../catalog/signing.js';
import { simulate } from '../assessment/simulate.js';

/**
 * `patchtree demo`: the whole tree on this machine. A root and three sites (one
 * with a site of its own below it), each a real `patchtree serve` process with its
 * own data folder and languages; a catalog built from the bundled real Microsoft
 * data and imported at the root; simulated computers at every site; a policy made
 * at the root. It prints the console addresses and a live summary until the tree
 * has converged, then keeps running until Ctrl-C, which stops every node and
 * removes the demo's data (unless --keep).
 */

const ROOT = fileURLToPath(new URL('../../../', import.meta.url));
const BIN = join(ROOT, 'bin', 'patchtree.js');
const DATA = join(ROOT, 'test', 'fixtures');

interface SiteSpec {
  name: string;
  languages: string[];
  /** The languages of its computers. */
  computerLanguages: string[];
  parent?: string;
}

const SITES: SiteSpec[] = [
  { name: 'hq', languages: ['en'], computerLanguages: ['en-us', 'en-gb'] },
  { name: 'berlin', languages: ['de', 'en'], computerLanguages: ['de-de', 'de-de', 'en-us'], parent: 'hq' },
  { name: 'munich', languages: ['de'], computerLanguages: ['de-de'], parent: 'berlin' },
  { name: 'paris', languages: ['fr'], computerLanguages: ['fr-fr'], parent: 'hq' },
  { name: 'tokyo', languages: ['ja'], computerLanguages: ['ja-jp'], parent: 'hq' },
];

interface Running {
  spec: SiteSpec;
  child: ChildProcess;
  url: string;
  grpcPort: number;
  id: string;
}

export interface DemoOptions {
  keep: boolean;
  computers: number;
  out: (line: string) => void;
}

// biome-ignore lint/suspicious/noExplicitAny: the demo reads a few fields of the node's JSON answers
async function call(url: string, token: string, path: string, init: RequestInit = {}): Promise<any> {
  const headers = new Headers(init.headers);
  headers.set('authorization', `Bearer ${token}`);
  if (typeof init.body === 'string') headers.set('content-type', 'application/json');
  const res = await fetch(url + path, { ...init, headers });
  const text = await res.text();
  const body: unknown = text ? JSON.parse(text) : null;
  if (!res.ok) throw new Error(`${init.method ?? 'GET'} ${path} at ${url}: HTTP ${res.status} ${(body as { detail?: string })?.detail ?? text}`);
  return body;
}

/** Starts one node as a child process; its log goes to <data>/node.log. */
async function startSite(dir: string, spec: SiteSpec, token: string, pubFile: string, parent: Running | undefined): Promise<Running> {
  const data = join(dir, spec.name);
  await mkdir(data, { recursive: true });
  const args = [
    BIN,
    'serve',
    '--data',
    data,
    '--name',
    spec.name,
    '--languages',
    spec.languages.join(','),
    '--insecure',
    '--trusted-key',
    pubFile,
    '--admin-token',
    token,
    '--http-host',
    '127.0.0.1',
    '--http-port',
    '0',
    '--https-port',
    '0',
    '--insecure-http',
    '--grpc-host',
    '127.0.0.1',
    '--grpc-port',
    '0',
    '--report-interval',
    '2',
  ];
  if (parent) {
    const join = await call(parent.url, token, '/api/v1/hierarchy/join-tokens', { method: 'POST', body: '{}' });
    args.push('--upstream', `127.0.0.1:${parent.grpcPort}`, '--join-token', join.token as string);
  }
  // The node's settings are the demo's alone: none of the shell's PATCHTREE_* variables.
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('PATCHTREE_')));
  const child = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'], env });
  const log = createWriteStream(join(data, 'node.log'));
  child.stderr!.pipe(log);
  const lines = createInterface({ input: child.stdout! });
  const started = await new Promise<{ http: number; grpc: number }>((resolve, reject) => {
    lines.on('line', (line) => {
      log.write(`${line}\n`);
      try {
        const rec = JSON.parse(line) as { msg?: string; http?: number; grpc?: number };
        if (rec.msg === 'node started') resolve({ http: rec.http!, grpc: rec.grpc! });
      } catch {
        /* not a log line */
      }
    });
    child.once('exit', (code) => reject(new Error(`node ${spec.name} exited with ${code} before starting; see ${join(data, 'node.log')}`)));
  });
  const url = `http://127.0.0.1:${started.http}`;
  const h = await call(url, token, '/api/v1/hierarchy');
  return { spec, child, url, grpcPort: started.grpc, id: h.node.id as string };
}

const pad = (s: string | number, n: number) => String(s).padEnd(n);

export async function runDemo(o: DemoOptions): Promise<number> {
  const t0 = Date.now();
  const dir = await mkdtemp(join(tmpdir(), 'patchtree-demo-'));
  const token = `demo-${randomBytes(12).toString('hex')}`;
  const nodes = new Map<string, Running>();
  let stopping = false;
  const stop = async (code: number): Promise<number> => {
    if (stopping) return code;
    stopping = true;
    o.out('\nstopping the nodes...');
    await Promise.all(
      [...nodes.values()].map(
        (n) =>
          new Promise<void>((resolve) => {
            if (n.child.exitCode !== null || n.child.signalCode !== null) return resolve();
            n.child.once('exit', () => resolve());
            n.child.kill('SIGTERM');
            setTimeout(() => n.child.kill('SIGKILL'), 10_000).unref();
          }),
      ),
    );
    if (o.keep) o.out(`kept: ${dir} (each node's data folder and node.log)`);
    else {
      await rm(dir, { recursive: true, force: true });
      o.out(`removed ${dir}`);
    }
    return code;
  };
  const interrupted = new Promise<number>((resolve) => {
    const onSignal = () => {
      process.off('SIGINT', onSignal);
      process.off('SIGTERM', onSignal);
      resolve(stop(0));
    };
    process.on('SIGINT', onSignal);
    process.on('SIGTERM', onSignal);
  });

  const run = async (): Promise<number> => {
    o.out(`patchtree demo: a root, three sites and a site below berlin, on this machine; data in ${dir}`);
    const keys = await generateKeys(join(dir, 'publisher'));
    const catalogFile = join(dir, 'catalog.ndjson.gz');
    const built = await buildCatalog({
      cvrf: ['2016-Apr', '2024-Jan'].map((m) => join(DATA, 'msrc-cvrf', `${m}.xml.gz`)),
      wsus: ['Windows-10-22H2', 'Windows-11-23H2', 'Office-2016'].map((n) => join(DATA, 'wsus-osdsus', `${n}.json.gz`)),
      version: 'demo-1',
      out: catalogFile,
      sign: keys.keyFile,
      publisher: 'patchtree demo (Microsoft Security Response Center and WSUS data, see test/fixtures/README.md)',
    });
    o.out(`catalog built from the bundled Microsoft data: ${built.updates} updates`);

    for (const spec of SITES) {
      if (stopping) return 0;
      const n = await startSite(dir, spec, token, keys.pubFile, spec.parent ? nodes.get(spec.parent) : undefined);
      nodes.set(spec.name, n);
      o.out(`  ${pad(spec.name, 8)} ${pad(spec.languages.join(','), 6)} ${n.url}/${spec.parent ? `  (below ${spec.parent})` : '  (root)'}`);
    }
    o.out(`console: open any address above and sign in with the admin token ${token}`);
    const root = nodes.get('hq')!;
    const form = new FormData();
    form.append('catalog', await openAsBlob(catalogFile), 'catalog.ndjson.gz');
    form.append('signature', await openAsBlob(`${catalogFile}.sig`), 'catalog.ndjson.gz.sig');
    const imported = await call(root.url, token, '/api/v1/catalog/imports', { method: 'POST', body: form });
    o.out(`imported at the root: ${imported.added} updates`);

    // Computers at every site, in its own languages, once each site has the catalog.
    await Promise.all(
      [...nodes.values()].map(async (n) => {
        for (;;) {
          const rules = await fetch(`${n.url}/api/v1/updates?limit=1`, { headers: { authorization: `Bearer ${token}` } }).then(
            (r) => r.json() as Promise<{ items: unknown[] }>,
          );
          if (rules.items.length) break;
          await new Promise((r) => setTimeout(r, 300));
        }
        const et = await call(n.url, token, '/api/v1/agents/enrollment-tokens', { method: 'POST', body: JSON.stringify({ name: 'demo' }) });
        const r = await simulate({
          server: n.url,
          token: et.token as string,
          computers: o.computers,
          seed: n.spec.name.length * 7919,
          prefix: n.spec.name,
          languages: n.spec.computerLanguages,
        });
        if (r.failed) o.out(`  ${n.spec.name}: ${r.failed} simulated computers failed: ${r.firstError}`);
      }),
    );
    o.out(`${o.computers} simulated computers reported at each site`);

    // A policy at the root: every critical update its computers need, to every computer.
    let policy: { id: string; name: string; updates: string[] };
    try {
      policy = await call(root.url, token, '/api/v1/policies', {
        method: 'POST',
        body: JSON.stringify({ name: 'Critical updates', fromRequired: { severity: 'Critical' }, targets: { all: true } }),
      });
    } catch {
      policy = await call(root.url, token, '/api/v1/policies', {
        method: 'POST',
        body: JSON.stringify({ name: 'Required updates', fromRequired: {}, targets: { all: true } }),
      });
    }
    o.out(`policy "${policy.name}" created at the root: ${policy.updates.length} updates, to every computer of the tree\n`);

    let converged = false;
    let last = '';
    for (;;) {
      if (stopping) return 0;
      const tree = await call(root.url, token, '/api/v1/reports/compliance?scope=tree');
      const delivery = await call(root.url, token, `/api/v1/reports/delivery?policy=${policy.id}&scope=tree`);
      const rows: string[] = [
        `${pad('node', 8)} ${pad('catalog', 12)} ${pad('computers', 9)} ${pad('compliant', 9)} ${pad('required', 8)} ${pad('policy', 22)} report`,
      ];
      let done = tree.nodes.length === nodes.size;
      for (const n of nodes.values()) {
        const h = await call(n.url, token, '/api/v1/hierarchy');
        const up = h.upstream as { connected: boolean; lag: { entries: number }; resyncing: boolean } | null;
        const sync = !up ? 'source' : up.resyncing ? 'resyncing' : up.lag.entries ? `${up.lag.entries} behind` : up.connected ? 'in sync' : 'offline';
        const r = (
          tree.nodes as { id: string; summary: { computers: number; compliantPercent: number; required: number }; stale: boolean; reportedAt: string }[]
        ).find((x) => x.id === n.id);
        const d = (delivery.nodes as { id: string; totals: Record<string, number> }[]).find((x) => x.id === n.id);
        const pol = d ? `${d.totals.targeted ?? 0} targeted, ${d.totals.installed ?? 0} inst.` : 'not yet';
        const age = r ? `${Math.max(0, Math.round((Date.now() - Date.parse(r.reportedAt)) / 1000))} s ago${r.stale ? ' STALE' : ''}` : 'not yet';
        rows.push(
          `${pad(n.spec.name, 8)} ${pad(sync, 12)} ${pad(r?.summary.computers ?? '-', 9)} ${pad(r ? `${r.summary.compliantPercent}%` : '-', 9)} ${pad(r?.summary.required ?? '-', 8)} ${pad(pol, 22)} ${age}`,
        );
        done &&= (sync === 'source' || sync === 'in sync') && r !== undefined && !r.stale && r.summary.computers === o.computers && d !== undefined;
      }
      const block = rows.join('\n');
      const shape = block.replace(/\d+ s ago/g, '');
      if (shape !== last) {
        last = shape;
        o.out(`[${Math.round((Date.now() - t0) / 1000)} s]\n${block}\n`);
      }
      if (done && !converged) {
        converged = true;
        o.out(
          `converged in ${Math.round((Date.now() - t0) / 1000)} s: every site has the catalog and the policy, and the root reports on all ${nodes.size} nodes`,
        );
        o.out(`whole tree: ${tree.summary.computers} computers, ${tree.summary.compliantPercent}% compliant, ${tree.summary.required} required updates`);
        o.out(`the nodes keep running; press Ctrl-C to stop them${o.keep ? '' : ' and remove the demo data'}`);
      }
      await new Promise((r) => setTimeout(r, converged ? 5_000 : 1_000));
    }
  };

  try {
    return await Promise.race([run(), interrupted]);
  } catch (err) {
    o.out(`demo failed: ${(err as Error).message}`);
    return stop(1);
  }
}
