/**
 * bench/replication, on loopback with real node processes:
 *  1. initial sync of an N-update catalog (default 100,000) root -> child: time,
 *     updates/s and rows/s, peak RSS (VmHWM) of both, against the same rows inserted
 *     straight into SQLite (the limit, from bench/catalog-import), measured before
 *     and after with no node running;
 *  2. latency from an import at the root to visibility at a depth-3 leaf
 *     (root -> a -> b -> leaf), p50 and p99 over M small imports (default 100);
 *  3. a parent feeding K subscribers at once (default 50): each is a raw gRPC client
 *     that joins and subscribes like a fresh child (asking for the snapshot file, with
 *     --rows for batches of rows; and for large batches compressed); the spread of
 *     their completion times. They only count what arrives (the first one's file is
 *     checked whole at the end), so the two cores are the parent's.
 *
 *   node dist/bench/replication.js [--updates 100000] [--imports 100] [--children 50]
 *     [--children-updates 20000] [--rows] [--stalled S] [--only sync|latency|fanout]
 *   --stalled S adds S subscribers that stop reading after their first message until
 *   the others are done: the others' times and the parent's memory meanwhile.
 *   (BENCH_PROFILE_DIR=dir writes a CPU profile of each node process there)
 */
import { createHash } from 'node:crypto';
import { rm, writeFile } from 'node:fs/promises';
import Database from 'libsql';
import { cpus } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { auth, benchArgs, benchProcesses, benchTempDir, importCatalog, oneOf, runBench, startNode, vmHwmMB, wholeNumber, type Node } from './util.js';
import * as grpc from '@grpc/grpc-js';
import { writeCatalog } from '../src/catalog/build.js';
import { generateKeys, loadPrivateKey, signFile } from '../src/catalog/signing.js';
import { replicationService, PROTOCOL_VERSION, type ReceivedMessage } from '../src/replication/protocol.js';
import { generate, measureLimit } from './catalog-import.js';
import { Unpacker } from '../src/replication/compressed.js';
import { inflatePiece } from '../src/replication/pieces.js';

const children = benchProcesses;

const HELP = `usage: node dist/bench/replication.js [--only all|sync|latency|fanout] [options]

Replication on loopback with real node processes:
  1. sync: the initial sync of an --updates catalog root -> child, against the same rows
     inserted straight into SQLite with no node running (the limit; goal <= 0.5x).
  2. latency: an import at the root to visibility at a depth-3 leaf, p50 and p99.
  3. fanout: one parent feeding --children raw gRPC subscribers a snapshot at once.

options:
  --only WHICH              all (default), sync, latency or fanout
  --updates N               the sync's catalog, in updates (default 100000)
  --imports N               the latency's imports (default 100)
  --children N              the fan-out's subscribers, 1 to 1000 (default 50)
  --children-updates N      the fan-out's catalog, in updates (default 20000)
  --rows                    the fan-out's subscribers ask for batches of rows, not the file
  --stalled N               N more subscribers that stop reading after their first message
                            until the others are done (default 0)
  -h, --help                this help

BENCH_PROFILE_DIR=dir writes a CPU profile of each node process there; BENCH_LOG_DIR=dir keeps their logs.`;

async function liveCount(n: Node): Promise<number> {
  const text = await (await fetch(`${n.url}/metrics`)).text();
  return Number(/patchtree_catalog_updates\{state="live"\} (\d+)/.exec(text)?.[1] ?? -1);
}

async function resyncDone(n: Node): Promise<boolean> {
  const h = (await (await fetch(`${n.url}/api/v1/hierarchy`, { headers: auth })).json()) as { upstream: { cursor: number; resyncing: boolean } | null };
  return Boolean(h.upstream && h.upstream.cursor > 0 && !h.upstream.resyncing);
}

/** The updates in a snapshot file received as pieces (its parts one after the other), after checking each part's size and SHA-256 as a child does. */
async function countFileUpdates(dir: string, pieces: NonNullable<ReceivedMessage['snapshot_file']>[]): Promise<number> {
  let total = 0;
  for (let start = 0; start < pieces.length; ) {
    let end = start;
    while (!pieces[end]!.last) end++;
    const part = pieces.slice(start, end + 1);
    start = end + 1;
    const data = Buffer.concat(part.map((p) => inflatePiece(p, 16 * 1024 * 1024)));
    const last = part.at(-1)!;
    if (data.length !== Number(last.size) || createHash('sha256').update(data).digest('hex') !== last.sha256)
      throw new Error('a snapshot file part is not whole');
    const file = join(dir, 'received.db');
    await writeFile(file, data);
    const db = new Database(file, { readonly: true });
    try {
      total += (db.prepare('SELECT count(*) AS n FROM updates').get() as { n: number }).n;
    } finally {
      db.close();
    }
  }
  return total;
}

const pct = (xs: number[], p: number) => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor((p / 100) * xs.length))]!;

/** The limit: the same rows straight into SQLite in one process (bench/catalog-import --limit-db); seconds. */
async function limit(dir: string, n: number, file: string): Promise<number> {
  const { seconds } = await measureLimit(join(dir, file), n);
  await rm(join(dir, file), { force: true });
  return seconds;
}

/** Stops node processes and waits until they have exited. */
async function stopNodes(...nodes: Node[]): Promise<void> {
  await Promise.all(
    nodes.map(
      (x) =>
        new Promise<void>((resolve) => {
          if (x.proc.exitCode !== null) return resolve();
          x.proc.removeAllListeners('exit');
          x.proc.once('exit', () => resolve());
          x.proc.kill('SIGTERM');
        }),
    ),
  );
}

async function main(): Promise<void> {
  const values = benchArgs('replication', HELP, {
    updates: { type: 'string', default: '100000' },
    imports: { type: 'string', default: '100' },
    children: { type: 'string', default: '50' },
    'children-updates': { type: 'string', default: '20000' },
    only: { type: 'string', default: 'all' },
    rows: { type: 'boolean', default: false },
    stalled: { type: 'string', default: '0' },
  });
  const only = oneOf(values.only, 'only', ['all', 'sync', 'latency', 'fanout']);
  const n = wholeNumber(values.updates, 'updates', 1);
  const imports = wholeNumber(values.imports, 'imports', 1);
  const k = wholeNumber(values.children, 'children', 1, 1000);
  const m = wholeNumber(values['children-updates'], 'children-updates', 1);
  const s = wholeNumber(values.stalled, 'stalled', 0, 1000);
  const dir = await benchTempDir('patchtree-bench-repl-');
  try {
    const keys = await generateKeys(join(dir, 'keys'));
    const key = await loadPrivateKey(keys.keyFile);
    console.log(`machine: ${cpus().length} cores (${cpus()[0]?.model}), Node ${process.version}`);

    let t0: number;
    if (only === 'all' || only === 'sync') {
      // 1. Initial sync root -> child, between two measures of the limit taken with
      // no node process running (the machine's speed drifts; the faster one is the bar).
      const catalog = join(dir, 'big.ndjson.gz');
      await writeCatalog(
        catalog,
        {
          format: 'patchtree-catalog',
          formatVersion: 2,
          version: 'b1',
          publisher: 'bench',
          createdAt: new Date(Date.UTC(2024, 0, 1)).toISOString(),
          updates: n,
        },
        generate(n),
      );
      await signFile(catalog, key);
      const rows = n * 9 - 1;
      const before = await limit(dir, n, 'limit-before.db');
      const root = await startNode(dir, 'root', keys.pubFile);
      await importCatalog(root, catalog);
      const rootRssBefore = await vmHwmMB(root.pid);
      const started = Date.now();
      const child = await startNode(dir, 'child', keys.pubFile, root);
      // Done when the child commits the complete resync's end (its cursor moves): the
      // time of its log line, from the start of its process (one machine, one clock).
      // Polling the status instead adds whatever the child does next (it assesses the
      // new catalog on its main thread: up to 2 s of polls waiting).
      const applied = await child.logged('resync applied');
      const syncSeconds = (applied.time - started) / 1000;
      if (!(await resyncDone(child))) throw new Error('the child logged its resync applied, and its status says otherwise');
      const live = await liveCount(child);
      if (live !== n) throw new Error(`the child holds ${live} live updates, not ${n}`);
      const rss = { root: await vmHwmMB(root.pid), child: await vmHwmMB(child.pid) };
      await stopNodes(root, child);
      const after = await limit(dir, n, 'limit-after.db');
      const bar = Math.min(before, after);
      console.log(
        `1. initial sync of ${n} updates (${rows} rows) root -> child: ${syncSeconds.toFixed(1)} s, ${Math.round(n / syncSeconds)} updates/s, ${Math.round(rows / syncSeconds)} rows/s`,
      );
      console.log(
        `   limit (same rows straight into SQLite, no node running): ${before.toFixed(2)} s before, ${after.toFixed(2)} s after; ratio ${(syncSeconds / bar).toFixed(2)}x against the faster (goal <= 0.5x)`,
      );
      console.log(`   peak RSS: root ${rss.root} MB (${rootRssBefore} MB before the sync), child ${rss.child} MB`);
    }
    if (only === 'sync') return;

    if (only === 'all' || only === 'latency') {
      // 2. Latency to a depth-3 leaf.
      const small = await startNode(dir, 'small-root', keys.pubFile);
      const a = await startNode(dir, 'a', keys.pubFile, small);
      const b = await startNode(dir, 'b', keys.pubFile, a);
      const leaf = await startNode(dir, 'leaf', keys.pubFile, b);
      const base = [...generate(20)];
      const lat: number[] = [];
      for (let i = 1; i <= imports; i++) {
        const file = join(dir, `small-${i}.gz`);
        const updates = base.map((u, j) => (j === 0 ? { ...u, title: `revision ${i}` } : u));
        await writeCatalog(
          file,
          {
            format: 'patchtree-catalog',
            formatVersion: 2,
            version: `s${i}`,
            publisher: 'bench',
            createdAt: new Date(Date.UTC(2024, 0, 1, 0, 0, i)).toISOString(),
            updates: updates.length,
          },
          updates,
        );
        await signFile(file, key);
        const start = performance.now();
        await importCatalog(small, file);
        const imported = performance.now();
        for (;;) {
          const u = (await (await fetch(`${leaf.url}/api/v1/updates/${base[0]!.id}`, { headers: auth })).json()) as { title?: string };
          if (u.title === `revision ${i}`) break;
          await new Promise((r) => setTimeout(r, 2));
        }
        lat.push(performance.now() - imported);
        void start;
      }
      console.log(
        `2. commit at the root -> visible at the depth-3 leaf, ${lat.length} imports: p50 ${pct(lat, 50).toFixed(0)} ms, p99 ${pct(lat, 99).toFixed(0)} ms, max ${Math.max(...lat).toFixed(0)} ms (goal p99 < 1 s)`,
      );
      await stopNodes(leaf, b, a, small);
    }
    if (only === 'latency') return;

    // 3. One parent feeding K subscribers at once, a catalog of its own.
    const feeder = await startNode(dir, 'feeder', keys.pubFile);
    const feedCatalog = join(dir, 'feed.ndjson.gz');
    await writeCatalog(
      feedCatalog,
      { format: 'patchtree-catalog', formatVersion: 2, version: 'f1', publisher: 'bench', createdAt: new Date(Date.UTC(2024, 0, 1)).toISOString(), updates: m },
      generate(m),
    );
    await signFile(feedCatalog, key);
    await importCatalog(feeder, feedCatalog);
    const feederRssBefore = await vmHwmMB(feeder.pid);
    const Service = replicationService();
    const done: number[] = [];
    let firstFile: NonNullable<ReceivedMessage['snapshot_file']>[] = [];
    // --stalled S more subscribers stop reading after their first message, until every other one is done.
    const stalledDone: number[] = [];
    const held: grpc.ClientReadableStream<ReceivedMessage>[] = [];
    let othersDone!: () => void;
    const others = new Promise<void>((r) => (othersDone = r));
    t0 = performance.now();
    const all = Promise.all(
      Array.from({ length: k + s }, async (_, i) => {
        const stalls = i >= k;
        const tok = (await (
          await fetch(`${feeder.url}/api/v1/hierarchy/join-tokens`, { method: 'POST', headers: { ...auth, 'content-type': 'application/json' }, body: '{}' })
        ).json()) as { token: string };
        const client = new Service(`127.0.0.1:${feeder.grpc}`, grpc.credentials.createInsecure(), {
          'grpc.max_receive_message_length': 64 * 1024 * 1024,
        }) as unknown as {
          Join: (r: unknown, cb: (e: Error | null, r: { credential: string }) => void) => void;
          Subscribe: (r: unknown, md: grpc.Metadata) => grpc.ClientReadableStream<ReceivedMessage>;
          close(): void;
        };
        const nodeId = `00000000-0000-4000-8000-${String(i).padStart(12, '0')}`;
        const { credential } = await new Promise<{ credential: string }>((resolve, reject) =>
          client.Join({ join_token: tok.token, node_id: nodeId, name: `sub-${i}`, languages: ['en'], protocol_version: PROTOCOL_VERSION }, (e, r) =>
            e ? reject(e) : resolve(r),
          ),
        );
        const md = new grpc.Metadata();
        md.set('authorization', `Bearer ${credential}`);
        // A fresh child asks for the snapshot file (--rows: batches of rows, as before issue 20's file form), its pieces in Brotli, as a real child.
        const call = client.Subscribe(
          {
            protocol_version: PROTOCOL_VERSION,
            node_id: nodeId,
            epoch: '',
            after_seq: 0,
            languages: ['en'],
            applied_languages: [],
            snapshot_file: !values.rows,
            compressed_batches: true,
            brotli_pieces: true,
          },
          md,
        );
        let count = 0;
        // The file's pieces as received; the first subscriber's are checked whole at the end.
        const pieces: NonNullable<ReceivedMessage['snapshot_file']>[] = [];
        const unpacker = new Unpacker();
        await new Promise<void>((resolve, reject) => {
          call.on('data', (received: ReceivedMessage) => {
            if (stalls && !held.includes(call)) {
              held.push(call);
              call.pause();
            }
            const msg = unpacker.take(received);
            if (!msg) return;
            if ('batch' in msg && msg.batch) count += msg.batch.changes.filter((c) => c.kind === 'update').length;
            if ('snapshot_file' in msg && msg.snapshot_file) {
              pieces.push(i === 0 ? msg.snapshot_file : { ...msg.snapshot_file, gzip: Buffer.alloc(0) });
            }
            if ('resync_end' in msg && msg.resync_end) {
              (stalls ? stalledDone : done).push((performance.now() - t0) / 1000);
              if (done.length === k && !stalls) othersDone();
              if (values.rows && count !== m) reject(new Error(`subscriber ${i} got ${count} of ${m}`));
              if (!values.rows && !pieces.at(-1)?.last) reject(new Error(`subscriber ${i} got no whole snapshot file`));
              if (i === 0 && !values.rows) firstFile = pieces.slice();
              resolve();
            }
          });
          call.on('error', reject);
        });
        call.cancel();
        client.close();
      }),
    );
    await others;
    const rssOthersDone = await vmHwmMB(feeder.pid);
    for (const c of held) c.resume();
    await all;
    if (!values.rows) {
      const count = await countFileUpdates(dir, firstFile);
      if (count !== m) throw new Error(`the snapshot file holds ${count} updates, not ${m}`);
    }
    console.log(
      `3. one parent feeding ${k} subscribers a ${m}-update snapshot at once: first done ${Math.min(...done).toFixed(1)} s, last ${Math.max(...done).toFixed(1)} s, spread ${(Math.max(...done) - Math.min(...done)).toFixed(1)} s; ${Math.round((k * m) / Math.max(...done))} updates/s sent in all; parent peak RSS ${await vmHwmMB(feeder.pid)} MB (${feederRssBefore} MB before the subscribers: its import)`,
    );
    if (s)
      console.log(
        `   ${s} more stalled after their first message: parent peak RSS ${rssOthersDone} MB while they held their streams and the others finished; resumed, they finished ${Math.max(...stalledDone).toFixed(1)} s after the start`,
      );
  } finally {
    for (const c of children) c.kill('SIGTERM');
    await new Promise((r) => setTimeout(r, 500));
    await rm(dir, { recursive: true, force: true });
  }
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) runBench(main);
