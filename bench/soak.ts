/**
 * The fault soak (issue 21): a tree of real processes under continuous work while
 * one fault a round is injected, on a seeded schedule, so a failing run is replayed
 * with the same `--seed`.
 *
 *   node dist/bench/soak.js [--rounds 200] [--seed 1] [--minutes M] [--updates 600] [--keep]
 *
 * The tree: a root, two mid-tier nodes and three leaves, each of its own languages;
 * every parent-child link goes through a TCP proxy (bench/fault-proxy.ts). The root's
 * and the mid-tier nodes' data folders are each on a tmpfs of their own (as root, which
 * this machine's sessions and CI are), so that their disk can really fill up.
 *
 * The work, every round: a catalog release imported at the root every third round
 * (a tenth of the updates changed, a few new); the root's policy renamed and an update
 * taken out of it or put back; on every node, three enrolled computers that send their
 * status events in batches (ids of their own; a batch that got no answer is sent
 * again, as agents do) and one real `patchtree agent` per leaf installing the policy's
 * updates (command installers that mark the KB installed; one that fails, so retries
 * and ceilings happen; its inventory reset every tenth round and a scan asked for, so it
 * installs again).
 *
 * The faults, one per round at a random moment of its work: `kill-node` (kill -9 of a
 * random node, restarted after 0-2 s), `kill-agent` (kill -9 of a leaf's agent,
 * restarted), `cut` (a link's connections ended mid-stream), `stall` (a link holds
 * every byte for 3-8 s), `throttle` (a link at 8 KB/s for 5 s), `disk-full` (the
 * tmpfs of the root or a mid-tier node filled to its last byte for 3-6 s, then freed).
 *
 * After each round, until all hold (the time from the fault's end is the round's
 * convergence time; 180 s at most, then the round is reported with what differs):
 * - every process answers /healthz;
 * - every node's catalog (update id and revision, expired ones too) equals the root's
 *   filtered to the node's subtree languages; every node has the root's policy as it is;
 * - every event acknowledged to a computer is stored at its node, once (lost: acked and
 *   absent; duplicated: more stored than sent); the real agents' events likewise (their
 *   queue's sequence counts what they made);
 * - the root's roll-up shows every node's delivery totals for the policy and its
 *   compliance summary exactly as the node itself reports them (an event counted twice
 *   or lost on the way up shows as a difference);
 * - every file in every node's content store hashes to its name (corrupt otherwise).
 * It prints, last: `soak: R rounds, F faults (kind n, ...), lost L, duplicated D, corrupt C`.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createReadStream, existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { mkdtemp, readdir, rm, statfs, writeFile } from 'node:fs/promises';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'libsql';
import { writeCatalog } from '../src/catalog/build.js';
import type { CatalogUpdate } from '../src/catalog/format.js';
import { generateKeys, loadPrivateKey, signFile } from '../src/catalog/signing.js';
import { rng } from '../src/assessment/simulate.js';
import { anyLanguageMatches } from '../src/lib/languages.js';
import { startVendor } from '../test/vendor.js';
import { generate } from './catalog-import.js';
import { FaultProxy } from './fault-proxy.js';
import {
  auth,
  benchArgs,
  benchProcesses,
  benchTempDir,
  freePort,
  importCatalog,
  restartNode,
  onInterrupt,
  ROOT,
  runBench,
  startNode,
  stopBenchProcesses,
  usageExit,
  wholeNumber,
  type Node,
} from './util.js';

const HELP = `usage: node dist/bench/soak.js [--rounds R] [--seed S] [--minutes M] [--updates U] [--keep]

The fault soak: a tree of real processes (a root, two mid-tier nodes, three leaves, each
link through a TCP proxy) under continuous work, one fault a round on a schedule seeded
by S (a failing run is replayed with the same --seed): kill a node or an agent, cut,
stall or throttle a link, fill a disk. Checks after every round that nothing was lost.

options:
  --rounds R      rounds, at least 1 (default 200)
  --seed S        the schedule's seed, a whole number of 0 or more (default 1)
  --minutes M     stop after M minutes, rounds left or not (default: no limit)
  --updates U     the catalog's updates, at least 10 (default 600)
  --keep          keep the data folders and logs after the run
  -h, --help      this help`;

const values = benchArgs('soak', HELP, {
  rounds: { type: 'string', default: '200' },
  seed: { type: 'string', default: '1' },
  minutes: { type: 'string' },
  updates: { type: 'string', default: '600' },
  keep: { type: 'boolean', default: false },
});
const ROUNDS = wholeNumber(values.rounds, 'rounds', 1);
const SEED = wholeNumber(values.seed, 'seed', 0);
const MINUTES = values.minutes === undefined ? Infinity : Number(values.minutes);
if (!(MINUTES > 0)) usageExit(`--minutes takes a number of minutes above 0, not '${values.minutes}'`);
const N = wholeNumber(values.updates, 'updates', 10);

const KINDS = ['kill-node', 'kill-agent', 'cut', 'stall', 'throttle', 'disk-full'] as const;
type Kind = (typeof KINDS)[number];
const random = rng(SEED);
const pick = <T>(l: readonly T[]): T => l[Math.floor(random() * l.length)]!;
const between = (a: number, b: number) => a + Math.floor(random() * (b - a + 1));
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

interface Site {
  name: string;
  languages: string[];
  parent: Site | null;
  children: Site[];
  httpPort: number;
  grpcPort: number;
  /** The proxy on the link to its parent. */
  link: FaultProxy | null;
  node: Node;
  /** A tmpfs mount holding its data folder (disk-full faults). */
  mount: string | null;
  posters: Poster[];
  agent: RealAgent | null;
  enrollmentToken: string;
}

const url = (s: Site) => `http://127.0.0.1:${s.httpPort}`;
const all = (s: Site): Site[] => [s, ...s.children.flatMap(all)];
const subtreeLanguages = (s: Site): string[] => [...new Set(all(s).flatMap((x) => x.languages))];

async function api<T = any>(s: Site, path: string, init: RequestInit = {}): Promise<{ status: number; body: T }> {
  const res = await fetch(`${url(s)}${path}`, {
    ...init,
    headers: { ...auth, 'content-type': 'application/json', ...init.headers },
    signal: AbortSignal.timeout(10_000),
  });
  const text = await res.text();
  return { status: res.status, body: (text ? JSON.parse(text) : null) as T };
}

/** Every item of a paged list. */
async function listAll<T>(s: Site, path: string): Promise<T[]> {
  const out: T[] = [];
  let cursor: string | null = null;
  do {
    const sep = path.includes('?') ? '&' : '?';
    const r: { status: number; body: { items: T[]; nextCursor: string | null } } = await api(
      s,
      `${path}${sep}limit=1000${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ''}`,
    );
    if (r.status !== 200) throw new Error(`${s.name} ${path}: ${r.status}`);
    out.push(...r.body.items);
    cursor = r.body.nextCursor;
  } while (cursor);
  return out;
}

/**
 * A computer that reports status events as an agent does: it enrols, reports an
 * inventory, queues events with ids of its own and sends the queue in a batch; what
 * the node acknowledges leaves the queue, what got no answer is sent again.
 */
class Poster {
  secret = '';
  computerId = 0;
  readonly acked = new Set<string>();
  pending: Record<string, unknown>[] = [];
  #seq = 0;

  constructor(
    readonly site: Site,
    readonly name: string,
  ) {}

  async enrol(): Promise<void> {
    const r = await api<{ agentId: string; secret: string }>(this.site, '/agent/v1/enroll', {
      method: 'POST',
      body: JSON.stringify({ enrollmentToken: this.site.enrollmentToken, name: this.name }),
    });
    if (r.status !== 201) throw new Error(`enrol ${this.name}: ${r.status} ${JSON.stringify(r.body)}`);
    this.secret = r.body.secret;
    const inv = await fetch(`${url(this.site)}/agent/v1/inventory`, {
      method: 'POST',
      headers: { authorization: `Bearer ${this.secret}`, 'content-type': 'application/json' },
      body: JSON.stringify({ agentKey: r.body.agentId, name: this.name, full: INVENTORY() }),
    });
    if (!inv.ok) throw new Error(`inventory ${this.name}: ${inv.status} ${await inv.text()}`);
    const computers = await listAll<{ id: number; name: string }>(this.site, '/api/v1/computers');
    this.computerId = computers.find((c) => c.name === this.name)!.id;
  }

  queue(n: number): void {
    const types = ['download-started', 'download-completed', 'install-started', 'install-failed'] as const;
    for (let i = 0; i < n; i++) {
      this.#seq++;
      this.pending.push({
        id: `${this.name}-${this.#seq}`,
        updateId: VENDOR_IDS[this.#seq % VENDOR_IDS.length],
        type: types[this.#seq % types.length],
        attempt: this.#seq,
        at: new Date().toISOString(),
      });
    }
  }

  /** Sends the queue; true when it is empty after. */
  async flush(): Promise<boolean> {
    if (!this.pending.length) return true;
    const batch = this.pending.slice(0, 200);
    try {
      const res = await fetch(`${url(this.site)}/agent/v1/events`, {
        method: 'POST',
        headers: { authorization: `Bearer ${this.secret}`, 'content-type': 'application/json' },
        body: JSON.stringify({ events: batch }),
        signal: AbortSignal.timeout(10_000),
      });
      await res.text();
      if (res.ok) {
        for (const e of batch) this.acked.add(e.id as string);
        this.pending = this.pending.slice(batch.length);
      } else if (res.status < 500 && res.status !== 429) throw new Error(`${this.name}: events refused with ${res.status}`);
    } catch (err) {
      if ((err as Error).message.includes('refused with')) throw err;
    }
    return this.pending.length === 0;
  }
}

/** A real `patchtree agent run` at a leaf, with its inventory file and state folder. */
class RealAgent {
  proc!: ChildProcess;
  computerId = 0;

  constructor(
    readonly site: Site,
    readonly dir: string,
  ) {
    mkdirSync(dir, { recursive: true });
    this.resetInventory();
  }

  get state() {
    return join(this.dir, 'state');
  }
  get inventory() {
    return join(this.dir, 'inventory.json');
  }

  resetInventory(): void {
    writeFileSync(this.inventory, JSON.stringify({ ...INVENTORY(), os: { ...INVENTORY().os, language: this.site.languages[0] } }));
  }

  /** Asks the running agent to scan now (after its inventory was reset: it needs the updates again). */
  rescan(): void {
    spawnSync(process.execPath, [join(ROOT, 'bin', 'patchtree.js'), 'agent', 'task', 'run', 'scan', '--state', this.state], {
      stdio: 'ignore',
      timeout: 10_000,
    });
  }

  start(): void {
    this.proc = spawn(
      process.execPath,
      [
        join(ROOT, 'bin', 'patchtree.js'),
        'agent',
        'run',
        '--server',
        url(this.site),
        '--state',
        this.state,
        '--enrollment-token',
        this.site.enrollmentToken,
        '--inventory',
        `file:${this.inventory}`,
        '--interval',
        '1',
        '--name',
        `agent-${this.site.name}`,
        '--install-timeout',
        '20',
        '--insecure',
      ],
      { stdio: 'ignore', env: { ...process.env, SOAK_INVENTORY: this.inventory } },
    );
    benchProcesses.push(this.proc); // stopped with the nodes if the soak is interrupted
  }

  kill(): Promise<void> {
    return new Promise((r) => {
      if (this.proc.exitCode !== null || this.proc.signalCode !== null) return r();
      this.proc.once('exit', () => r());
      this.proc.kill('SIGKILL');
    });
  }

  /** Events the agent made (its queue's sequence) and those still queued; null before it has a queue. */
  made(): { made: number; queued: number } | null {
    const file = join(this.state, 'agent.db');
    if (!existsSync(file)) return null;
    const db = new Database(file, { readonly: true, timeout: 5_000 });
    try {
      const seq = db.prepare("SELECT seq FROM sqlite_sequence WHERE name = 'events'").get() as { seq: number } | undefined;
      const queued = db.prepare('SELECT count(*) AS n FROM events').get() as { n: number };
      return { made: Number(seq?.seq ?? 0), queued: Number(queued.n) };
    } catch {
      return null; // not created yet
    } finally {
      db.close();
    }
  }
}

const W11 = 'Windows 11 Version 23H2 for x64-based Systems';
const INVENTORY = () => ({
  os: { family: 'windows', name: W11, version: '10.0.22631.2861', arch: 'x64', language: 'en-us' },
  products: [{ name: W11 }],
  kbs: ['1000'],
});
const VENDOR_IDS = ['soak-1', 'soak-2', 'soak-3', 'soak-4'];
/** The languages of each policy update's files. */
const VENDOR_FILES = new Map<string, string[]>();

runBench(async () => {
  const started = performance.now();
  // Interrupted with --keep, everything stays for a look (a stuck round's logs); else the tmpfs mounts go before the folder that holds them.
  const dir = values.keep ? await mkdtemp(join(tmpdir(), 'patchtree-soak-')) : await benchTempDir('patchtree-soak-');
  const cleanups: (() => unknown)[] = [];
  const mounts: string[] = [];
  onInterrupt(() => {
    if (values.keep) console.error(`kept: ${dir} (tmpfs mounts: ${mounts.join(' ') || 'none'})`);
    else for (const m of mounts) spawnSync('umount', ['-l', m]);
  });
  const sites: Site[] = [];
  try {
    const keys = await generateKeys(join(dir, 'keys'));
    const key = await loadPrivateKey(keys.keyFile);
    const vendor = await startVendor({ teardown: (fn) => cleanups.push(fn) });

    // The policy's updates: files on the vendor's server, one in several languages;
    // command installers that mark their KB installed in the agent's inventory file.
    const script = join(dir, 'install.sh');
    await writeFile(
      script,
      '#!/bin/sh\n[ "$2" = fail ] && { echo "error: fatal error during installation" >&2; exit 2; }\nsed -i "s/\\"kbs\\":\\[/\\"kbs\\":[\\"$2\\",/" "$SOAK_INVENTORY"\nexit 0\n',
    );
    const vendorFile = (path: string, size: number, language: string, kb: string) => {
      const f = vendor.add(path, size);
      return {
        name: path.slice(1),
        url: vendor.url(path),
        size,
        sha256: f.sha256,
        language,
        installer: { type: 'command' as const, command: `sh ${script} "{file}" ${kb}` },
      };
    };
    const vendorUpdates: CatalogUpdate[] = VENDOR_IDS.map((id, i) => {
      const kb = String(5000001 + i);
      const files =
        i === 1
          ? ['de-de', 'fr-fr', 'ja-jp', 'es-es'].map((l) => vendorFile(`/kb${kb}-${l}.msu`, 40_000 + i * 1000, l, kb))
          : [vendorFile(`/kb${kb}.msu`, 60_000 + i * 20_000, 'neutral', i === 3 ? 'fail' : kb)];
      VENDOR_FILES.set(
        id,
        files.map((f) => f.language),
      );
      return {
        id,
        revision: 1,
        kb,
        bulletin: null,
        title: `Soak update ${i + 1} (KB${kb})`,
        vendor: 'Microsoft',
        productFamily: 'Windows',
        product: W11,
        classification: 'Security Updates',
        severity: 'Important',
        cves: [`CVE-2024-${20000 + i}`],
        releaseDate: '2024-06-01',
        supersedes: [],
        restart: 'may',
        install: { successCodes: [0], rebootCodes: [3010] },
        applicability: { product: W11 },
        installed: { kb },
        files,
      };
    });
    /** A policy update added while a disk is full: a new file every node must fetch once it has room. */
    let added = 0;
    const addUpdate = (): string => {
      added++;
      const id = `soak-d${added}`;
      const kb = String(5001000 + added);
      VENDOR_FILES.set(id, ['neutral']);
      vendorUpdates.push({
        ...vendorUpdates[0]!,
        id,
        kb,
        title: `Soak update added while a disk was full (KB${kb})`,
        cves: [`CVE-2024-${30000 + added}`],
        installed: { kb },
        files: [vendorFile(`/kb${kb}.msu`, 200_000, 'neutral', kb)],
      });
      return id;
    };
    let release = 0;
    const releaseFile = async (): Promise<string> => {
      const k = release + 1;
      const file = join(dir, `r${k}.ndjson.gz`);
      const n = N + 5 * k;
      const header = {
        format: 'patchtree-catalog',
        formatVersion: 2,
        version: `soak-${k}`,
        publisher: 'soak',
        createdAt: new Date(Date.UTC(2024, 0, 1, 0, k)).toISOString(),
        updates: n + vendorUpdates.length,
      } as const;
      const changed = (i: number) => i % 10 === k % 10;
      await writeCatalog(file, header, [...vendorUpdates, ...[...generate(n)].map((u, i) => (changed(i) ? { ...u, title: `${u.title} (r${k})` } : u))]);
      await signFile(file, key);
      return file;
    };

    // The tree, top down; fixed ports so a restarted node is found again.
    const shape: [string, string[], string | null][] = [
      ['root', ['en-us'], null],
      ['mid-a', ['de-de'], 'root'],
      ['mid-b', ['fr-fr'], 'root'],
      ['leaf-a1', ['de-de'], 'mid-a'],
      ['leaf-a2', ['ja-jp'], 'mid-a'],
      ['leaf-b1', ['fr-fr', 'es-es'], 'mid-b'],
    ];
    for (const [name, languages, parentName] of shape) {
      const parent = sites.find((s) => s.name === parentName) ?? null;
      const site = {
        name,
        languages,
        parent,
        children: [],
        httpPort: await freePort(),
        grpcPort: await freePort(),
        link: null,
        mount: null,
        posters: [],
        agent: null,
        enrollmentToken: '',
      } as unknown as Site;
      parent?.children.push(site);
      if (!parentName?.startsWith('mid')) {
        // The root and the mid-tier nodes: a tmpfs of their own.
        const mount = join(dir, name);
        mkdirSync(mount, { recursive: true });
        const r = spawnSync('mount', ['-t', 'tmpfs', '-o', 'size=96m', 'tmpfs', mount]);
        if (r.status === 0) {
          site.mount = mount;
          mounts.push(mount);
        } else console.log(`${name}: no tmpfs (${r.stderr.toString().trim()}); its disk cannot fill up`);
      }
      if (parent) site.link = await FaultProxy.start(() => parent.grpcPort);
      const upstream = parent ? { url: url(parent), grpc: site.link!.port } : undefined;
      site.node = await startNode(dir, name, keys.pubFile, upstream, [
        '--http-port',
        String(site.httpPort),
        '--grpc-port',
        String(site.grpcPort),
        '--languages',
        languages.join(','),
        '--report-interval',
        '3',
      ]);
      sites.push(site);
    }
    const root = sites[0]!;
    cleanups.push(() => {
      for (const s of sites) s.link?.close();
    });
    console.log(`machine: ${cpus().length} cores (${cpus()[0]?.model.trim()}), Node ${process.version}; seed ${SEED}`);
    console.log(
      `tree: ${sites.map((s) => `${s.name} (${s.languages.join(',')}${s.parent ? ` under ${s.parent.name}` : ''}${s.mount ? ', tmpfs' : ''})`).join(', ')}`,
    );

    // Fast retries of downloads, no reserve (the tmpfs is small): each node's own setting.
    for (const s of sites) {
      const r = await api(s, '/api/v1/settings/content', { method: 'PUT', body: JSON.stringify({ reserveBytes: 0, retryBaseMs: 200, retryMaxMs: 2000 }) });
      if (r.status !== 200) throw new Error(`content settings at ${s.name}: ${r.status} ${JSON.stringify(r.body)}`);
    }
    await importCatalog(root.node, await releaseFile());
    release++;
    const created = await api<{ id: string }>(root, '/api/v1/policies', {
      method: 'POST',
      body: JSON.stringify({ name: 'soak', updates: VENDOR_IDS, targets: { all: true }, installation: { maintenance: { mode: 'any-time' } } }),
    });
    if (created.status !== 201) throw new Error(`policy: ${created.status} ${JSON.stringify(created.body)}`);
    const policyId = created.body.id;
    for (const s of sites) {
      const t = await api<{ token: string }>(s, '/api/v1/agents/enrollment-tokens', { method: 'POST', body: JSON.stringify({ name: 'soak' }) });
      if (t.status !== 201) throw new Error(`enrolment token at ${s.name}: ${t.status}`);
      s.enrollmentToken = t.body.token;
    }
    // The computers need the catalog at their node before they report: wait for the first convergence.
    await converge(sites, root, policyId, 300_000);
    for (const s of sites) {
      s.posters = [0, 1, 2].map((i) => new Poster(s, `${s.name}-pc${i}`));
      for (const p of s.posters) await p.enrol();
      if (!s.children.length) {
        s.agent = new RealAgent(s, join(dir, 'agents', s.name));
        s.agent.start();
      }
    }
    console.log(`set up in ${((performance.now() - started) / 1000).toFixed(1)} s`);

    // The rounds.
    const counts = Object.fromEntries(KINDS.map((k) => [k, 0])) as Record<Kind, number>;
    const times: number[] = [];
    const totals = { lost: 0, duplicated: 0, corrupt: 0, stuck: 0 };
    let rounds = 0;
    let order: Kind[] = [...KINDS];
    let diskRefusals = 0;
    for (let round = 1; round <= ROUNDS && performance.now() - started < MINUTES * 60_000; round++) {
      // Each six rounds take the six kinds in an order of their own.
      if ((round - 1) % KINDS.length === 0) order = [...KINDS].sort(() => random() - 0.5);
      const kind = order[(round - 1) % KINDS.length]!;
      const work = (async () => {
        if (round % 3 === 0) {
          const file = await releaseFile();
          try {
            await importCatalog(root.node, file);
            release++;
          } catch {
            /* the root is down or its disk full: the next import carries it */
          }
        }
        const name = `soak r${round}`;
        const change = round % 2 ? { name, removeUpdates: ['soak-3'] } : { name, addUpdates: ['soak-3'] };
        await api(root, `/api/v1/policies/${policyId}`, { method: 'PATCH', body: JSON.stringify(change) }).catch(() => undefined);
        if (round % 10 === 0)
          for (const s of sites) {
            s.agent?.resetInventory();
            s.agent?.rescan();
          }
        for (const s of sites) for (const p of s.posters) p.queue(between(1, 4));
        await Promise.all(sites.flatMap((s) => s.posters.map((p) => p.flush())));
      })();
      await sleep(between(0, 1500));
      const target =
        kind === 'kill-agent'
          ? pick(sites.filter((s) => s.agent))
          : kind === 'disk-full'
            ? pick(sites.filter((s) => s.mount))
            : kind === 'kill-node'
              ? pick(sites)
              : pick(sites.filter((s) => s.link));
      let what = target.name;
      if (kind === 'kill-node') {
        const proc = target.node.proc;
        proc.removeAllListeners('exit');
        const exited = new Promise((r) => proc.once('exit', r));
        proc.kill('SIGKILL');
        await exited;
        await sleep(between(0, 2000));
        target.node = await restartNode(target.node, target.name);
      } else if (kind === 'kill-agent') {
        await target.agent!.kill();
        await sleep(between(0, 2000));
        target.agent!.start();
      } else if (kind === 'cut') target.link!.cut();
      else if (kind === 'stall') {
        const ms = between(3000, 8000);
        target.link!.stall(ms);
        what += ` ${ms} ms`;
        await sleep(ms);
      } else if (kind === 'throttle') {
        target.link!.throttle(8 * 1024, 5000);
        await sleep(5000);
      } else {
        const ballast = join(target.mount!, 'ballast');
        const fs = await statfs(target.mount!);
        const filled = spawnSync('fallocate', ['-l', String(fs.bavail * fs.bsize), ballast]);
        if (filled.status !== 0) throw new Error(`fallocate on ${target.mount}: ${filled.stderr.toString().trim()}`);
        const ms = between(3000, 6000);
        what += ` ${ms} ms`;
        // Writes while the disk is full: a release with a new update imported at the root
        // and put in the policy (refused there, or replicated to the full node, whose
        // download of the new file fails until it has room again), and the node's
        // computers reporting events (refused or accepted: each stored once in the end).
        const newId = addUpdate();
        for (const p of target.posters) p.queue(between(2, 5));
        const addToPolicy = async () => {
          if (
            !(await importCatalog(root.node, await releaseFile()).then(
              () => true,
              () => false,
            ))
          )
            return false;
          release++;
          const r = await api(root, `/api/v1/policies/${policyId}`, { method: 'PATCH', body: JSON.stringify({ addUpdates: [newId] }) }).catch(() => null);
          return r?.status === 200;
        };
        const added = await addToPolicy();
        await Promise.all(target.posters.map((p) => p.flush()));
        const refused = target.posters.filter((p) => p.pending.length > 0).length + (added ? 0 : 1);
        diskRefusals += refused;
        what += `, ${refused} writes refused while full`;
        await sleep(ms);
        await rm(ballast, { force: true });
        // Refused at a full root: again now that it has room.
        if (!added && !(await addToPolicy())) throw new Error(`round ${round}: ${newId} could not be added after the disk was freed`);
      }
      counts[kind]++;
      const faultEnd = performance.now();
      await work.catch((err) => {
        throw new Error(`round ${round}: the work failed: ${(err as Error).message}`);
      });
      const result = await converge(sites, root, policyId, 180_000);
      rounds++;
      const secs = (performance.now() - faultEnd) / 1000;
      if (result.ok) times.push(secs);
      else totals.stuck++;
      totals.lost += result.lost;
      totals.duplicated += result.duplicated;
      totals.corrupt += result.corrupt;
      console.log(
        `round ${round}: ${kind} ${what}; ${result.ok ? `converged ${secs.toFixed(1)} s` : `NOT converged: ${result.differs.join('; ')}`}${result.lost + result.duplicated + result.corrupt ? ` (lost ${result.lost}, duplicated ${result.duplicated}, corrupt ${result.corrupt})` : ''}`,
      );
    }
    const sorted = [...times].sort((a, b) => a - b);
    const q = (p: number) => (sorted.length ? sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))]!.toFixed(1) : 'n/a');
    const events = sites.reduce((n, s) => n + s.posters.reduce((m, p) => m + p.acked.size, 0), 0);
    const agentEvents = sites.reduce((n, s) => n + (s.agent?.made()?.made ?? 0), 0);
    console.log(`writes refused while a disk was full (then retried): ${diskRefusals}`);
    console.log(
      `releases ${release}, computers' events ${events}, real agents' events ${agentEvents}; convergence after a fault p50 ${q(0.5)} s, p99 ${q(0.99)} s, max ${q(1)} s; not converged ${totals.stuck}; ${((performance.now() - started) / 60_000).toFixed(1)} min`,
    );
    const faults = KINDS.reduce((n, k) => n + counts[k], 0);
    console.log(
      `soak: ${rounds} rounds, ${faults} faults (${KINDS.map((k) => `${k} ${counts[k]}`).join(', ')}), lost ${totals.lost}, duplicated ${totals.duplicated}, corrupt ${totals.corrupt}`,
    );
  } finally {
    for (const s of sites) await s.agent?.kill();
    await stopBenchProcesses();
    for (const fn of cleanups) await fn();
    if (values.keep) console.log(`kept: ${dir} (tmpfs mounts: ${mounts.join(' ') || 'none'})`);
    else {
      for (const m of mounts) spawnSync('umount', ['-l', m]);
      await rm(dir, { recursive: true, force: true });
    }
  }
});

interface Check {
  ok: boolean;
  differs: string[];
  lost: number;
  duplicated: number;
  corrupt: number;
}

/** Checks until everything holds (or the time is up: then what differs, counted). */
async function converge(sites: Site[], root: Site, policyId: string, timeoutMs: number): Promise<Check> {
  const until = performance.now() + timeoutMs;
  let last: Check = { ok: false, differs: ['not checked'], lost: 0, duplicated: 0, corrupt: 0 };
  let told = performance.now();
  for (;;) {
    if (performance.now() - told > 30_000) {
      told = performance.now();
      console.log(`  still waiting: ${last.differs.join('; ')}`);
    }
    for (const s of sites) for (const p of s.posters) await p.flush();
    last = await check(sites, root, policyId).catch((err: Error) => ({ ok: false, differs: [err.message], lost: 0, duplicated: 0, corrupt: 0 }));
    if (last.ok || performance.now() > until) return last;
    await sleep(250);
  }
}

async function check(sites: Site[], root: Site, policyId: string): Promise<Check> {
  const c: Check = { ok: true, differs: [], lost: 0, duplicated: 0, corrupt: 0 };
  const differ = (what: string) => {
    c.ok = false;
    c.differs.push(what);
  };
  for (const s of sites) {
    const h = await fetch(`${url(s)}/healthz`, { signal: AbortSignal.timeout(5_000) }).catch(() => null);
    if (h?.status !== 200) differ(`${s.name} unhealthy (${h?.status ?? 'no answer'})`);
  }
  if (!c.ok) return c;
  // Catalogs and the policy.
  const rootUpdates = await listAll<{ id: string; revision: number; languages: string[] }>(root, '/api/v1/updates?expired=any');
  const rootPolicy = (await api(root, `/api/v1/policies/${policyId}`)).body;
  const policyView = (p: any) => JSON.stringify({ name: p.name, updates: [...(p.updates as string[])].sort() });
  for (const s of sites.slice(1)) {
    const langs = subtreeLanguages(s);
    const want = rootUpdates.filter((u) => anyLanguageMatches(u.languages.join(','), langs)).map((u) => `${u.id}:${u.revision}`);
    const have = new Set((await listAll<{ id: string; revision: number }>(s, '/api/v1/updates?expired=any')).map((u) => `${u.id}:${u.revision}`));
    const missing = want.filter((x) => !have.has(x));
    if (missing.length || have.size !== want.length)
      differ(`${s.name}: catalog differs (${missing.length} missing, ${have.size - (want.length - missing.length)} other)`);
    const p = await api(s, `/api/v1/policies/${policyId}`);
    if (p.status !== 200 || policyView(p.body) !== policyView(rootPolicy)) differ(`${s.name}: policy differs`);
  }
  // The policy's files at every node, in its subtree's languages, verified.
  for (const s of sites) {
    const langs = s.parent ? subtreeLanguages(s) : null;
    for (const id of rootPolicy.updates as string[]) {
      const files = await listAll<{ language: string; state: string }>(s, `/api/v1/content/files?update=${id}`);
      const want = VENDOR_FILES.get(id)!.filter((l) => !langs || anyLanguageMatches(l, langs)).length;
      const verified = files.filter((f) => f.state === 'verified').length;
      if (verified !== want || files.length !== want) differ(`${s.name}: ${verified} of ${want} files of ${id} verified (${files.length} tracked)`);
    }
  }
  // Events at each node: the computers' (by the ids acknowledged) and the real agents'.
  for (const s of sites) {
    for (const p of s.posters) {
      if (p.pending.length) differ(`${p.name}: ${p.pending.length} events not acknowledged yet`);
      const stored = await listAll<{ id?: string; eventId?: string }>(s, `/api/v1/computers/${p.computerId}/events`);
      if (stored.length !== p.acked.size) {
        differ(`${p.name}: ${stored.length} events stored, ${p.acked.size} acknowledged`);
        if (stored.length < p.acked.size) c.lost += p.acked.size - stored.length;
        else c.duplicated += stored.length - p.acked.size;
      }
    }
    if (s.agent) {
      const m = s.agent.made();
      if (!m) differ(`${s.name}: its agent has no queue yet`);
      else if (m.queued > 0) differ(`${s.name}: its agent has ${m.queued} events queued`);
      else {
        if (!s.agent.computerId) {
          const cs = await listAll<{ id: number; name: string }>(s, '/api/v1/computers');
          s.agent.computerId = cs.find((x) => x.name === `agent-${s.name}`.toUpperCase() || x.name === `agent-${s.name}`)?.id ?? 0;
        }
        const stored = s.agent.computerId ? (await listAll(s, `/api/v1/computers/${s.agent.computerId}/events`)).length : 0;
        if (stored !== m.made) {
          differ(`${s.name}: its agent made ${m.made} events, ${stored} stored`);
          if (stored < m.made) c.lost += m.made - stored;
          else c.duplicated += stored - m.made;
        }
      }
    }
  }
  // The roll-up: the root shows each node's figures as the node reports them.
  const tree = (await api(root, `/api/v1/reports/delivery?policy=${policyId}&scope=tree`)).body as {
    nodes: { id: string; name: string; totals: Record<string, number> }[];
  };
  const compliance = (await api(root, '/api/v1/reports/compliance?scope=tree')).body as { nodes?: { name: string; summary: Record<string, unknown> }[] };
  for (const s of sites) {
    const own = (await api(s, `/api/v1/reports/delivery?policy=${policyId}`)).body as { totals: Record<string, number> };
    const there = tree.nodes.find((n) => n.name === s.name);
    if (!there) differ(`${s.name}: not in the root's roll-up`);
    else if (JSON.stringify(sortKeys(there.totals)) !== JSON.stringify(sortKeys(own.totals)))
      differ(`${s.name}: roll-up totals ${JSON.stringify(sortKeys(there.totals))}, its own ${JSON.stringify(sortKeys(own.totals))}`);
    const summary = (await api(s, '/api/v1/reports/compliance')).body as { summary: Record<string, unknown> };
    const up = compliance.nodes?.find((n) => n.name === s.name);
    if (up && JSON.stringify(sortKeys(up.summary)) !== JSON.stringify(sortKeys(summary.summary))) differ(`${s.name}: roll-up compliance differs`);
  }
  // Content: every stored file hashes to its name.
  for (const s of sites) c.corrupt += await corruptFiles(dataDir(s));
  if (c.corrupt) differ(`${c.corrupt} files whose SHA-256 is not their name`);
  return c;
}

const dataDir = (s: Site) => s.node.args[s.node.args.indexOf('--data') + 1]!;

const sortKeys = (o: Record<string, unknown>) => Object.fromEntries(Object.entries(o).sort(([a], [b]) => a.localeCompare(b)));

async function corruptFiles(data: string): Promise<number> {
  const objects = join(data, 'content', 'objects');
  if (!existsSync(objects)) return 0;
  let bad = 0;
  for (const sub of await readdir(objects)) {
    for (const name of await readdir(join(objects, sub)).catch(() => [] as string[])) {
      const h = createHash('sha256');
      for await (const chunk of createReadStream(join(objects, sub, name))) h.update(chunk as Buffer);
      if (h.digest('hex') !== name) bad++;
    }
  }
  return bad;
}
