/**
 * A real tree at scale (issue 20): `--nodes N` node processes in `--depth D` levels
 * (the root, then the others spread over the levels below, each under a node of the
 * level above, round robin), each site with a language set of its own from a pool.
 * An `--updates M` catalog is imported at the root; the time until every node holds
 * its subtree's languages' updates is the convergence time (each node polled on its
 * own: the resync's end, no lag, the live update count; then, once all are there, per
 * language whether an update with a file in it is there or not). Then the mid-tier node with the largest subtree is killed
 * (SIGKILL), a second release (1% more updates) is imported while it is down, and the
 * time from its restart until its whole subtree holds the new release is measured.
 * Peak RSS per role (root, mid-tier, leaf) is printed.
 *
 * With `--warm-gb G`, G GB of memory are touched and let go before the nodes start, so
 * that their fresh pages are ones the hypervisor backs already (warm-memory.ts: on this
 * virtual machine a first-touched page costs the kernel about eight times a warm one).
 * Off by default: over seven runs with it and four without, it did not set the runs
 * apart from the machine's own drift (bench/README.md, "the machine's memory").
 *
 *   node dist/bench/tree-scale.js [--depth 5] [--nodes 30] [--updates 20000] [--warm-gb 0]
 */
import { rm } from 'node:fs/promises';
import { cpus } from 'node:os';
import { join } from 'node:path';
import { writeCatalog } from '../src/catalog/build.js';
import { generateKeys, loadPrivateKey, signFile } from '../src/catalog/signing.js';
import { languageMatches } from '../src/lib/languages.js';
import { generate, LANGS } from './catalog-import.js';
import { warmMemory } from './warm-memory.js';
import {
  auth,
  benchArgs,
  benchTempDir,
  cpuSeconds,
  minorFaults,
  freePort,
  importCatalog,
  restartNode,
  runBench,
  startNode,
  stopBenchProcesses,
  vmHwmMB,
  wholeNumber,
  type Node,
} from './util.js';

const HELP = `usage: node dist/bench/tree-scale.js [--depth D] [--nodes N] [--updates M] [--warm-gb G]

A tree of N real node processes in D levels imports an M-update catalog at its root;
prints the time until every node holds its languages' updates (and the slowest node),
then kills the mid-tier node with the largest subtree, imports a release while it is
down, and prints how soon its subtree holds it after the restart; peak RSS per role.

options:
  --depth D      levels, the root's included, 2 to 20 (default 5)
  --nodes N      node processes in all, D to 200 (default 30)
  --updates M    the catalog's updates, at least 100 (default 20000)
  --warm-gb G    whole GB of memory touched and let go before the nodes start, 0 to 64 (default 0)
  -h, --help     this help`;

const values = benchArgs('tree-scale', HELP, {
  depth: { type: 'string', default: '5' },
  nodes: { type: 'string', default: '30' },
  updates: { type: 'string', default: '20000' },
  'warm-gb': { type: 'string', default: '0' },
});
const depth = wholeNumber(values.depth, 'depth', 2, 20);
const total = wholeNumber(values.nodes, 'nodes', depth, 200);
const m = wholeNumber(values.updates, 'updates', 100);
const warmGb = wholeNumber(values['warm-gb'], 'warm-gb', 0, 64);

/** The sites' language sets. */
const POOL = [['de-de'], ['fr-fr'], ['de-de', 'fr-fr'], ['ja-jp'], ['pt-br', 'es-es'], ['it-it'], ['zh-cn', 'ko-kr'], ['en-us']];

interface Site {
  name: string;
  level: number;
  parent: Site | null;
  languages: string[];
  children: Site[];
  node?: Node;
  grpcPort: number;
}

/** The languages of a site and every site below it. */
function subtree(s: Site): string[] {
  return [...new Set([...s.languages, ...s.children.flatMap(subtree)])].sort();
}

const all = (s: Site): Site[] => [s, ...s.children.flatMap(all)];

async function json<T>(n: Node, path: string): Promise<T> {
  return (await (await fetch(`${n.url}${path}`, { headers: auth })).json()) as T;
}

/** Whether a site is caught up (resync ended, no lag) and holds the `expected` live updates. */
async function holds(s: Site, expected: number): Promise<boolean> {
  const n = s.node!;
  if (s.parent) {
    const h = await json<{ upstream: { cursor: number; resyncing: boolean; lag: { entries: number } } | null }>(n, '/api/v1/hierarchy');
    if (!h.upstream || h.upstream.cursor === 0 || h.upstream.resyncing || h.upstream.lag.entries > 0) return false;
  }
  const text = await (await fetch(`${n.url}/metrics`)).text();
  return Number(/patchtree_catalog_updates\{state="live"\} (\d+)/.exec(text)?.[1] ?? -1) === expected;
}

/** Whether a site holds, per language, updates with files in its subtree's languages and none in others. */
async function exact(s: Site): Promise<boolean> {
  const n = s.node!;
  const langs = s.parent ? subtree(s) : LANGS;
  for (const l of LANGS) {
    const page = await json<{ items: unknown[] }>(n, `/api/v1/updates?language=${l}&limit=1`);
    if (page.items.length > 0 !== langs.some((x) => languageMatches(l, [x]))) return false;
  }
  return true;
}

/**
 * Polls the sites (one poller each, every 500 ms, two light requests) until each holds
 * `expected`; returns when each got there (ms after `t0`). A site's time is its own (a
 * sweep over the sites in turn stamps each with the sweep's pace). A site whose parent
 * is among `sites` is polled from its parent's time on: it cannot hold what its parent
 * does not yet, and thirty pollers of nodes still waiting cost the nodes a sixth of
 * their CPU (about 13 ms a second each). The languages are checked after
 * (checkLanguages), outside the timing and the CPU counts.
 */
async function converge(sites: Site[], expected: number, t0: number, timeoutMs: number): Promise<Map<string, number>> {
  const done = new Map<string, number>();
  const reached = new Map<Site, Promise<void>>();
  const poll = async (s: Site): Promise<void> => {
    if (s.parent && reached.has(s.parent)) await reached.get(s.parent);
    while (!(await holds(s, expected).catch(() => false))) {
      if (performance.now() - t0 > timeoutMs) {
        const missing = sites.filter((x) => !done.has(x.name)).map((x) => x.name);
        throw new Error(`not converged after ${timeoutMs / 1000} s: ${missing.join(', ')}`);
      }
      await new Promise((r) => setTimeout(r, 500));
    }
    done.set(s.name, performance.now() - t0);
  };
  // Top down, so that a parent's promise is there before its children ask for it.
  for (const s of [...sites].sort((a, b) => a.level - b.level)) reached.set(s, poll(s));
  await Promise.all(reached.values());
  return done;
}

/** Checks every site's languages once (nine queries a site, heavier than the polls: about 0.4 CPU-s a node at 20,000 updates). */
async function checkLanguages(sites: Site[]): Promise<void> {
  for (const s of sites) if (!(await exact(s))) throw new Error(`${s.name} holds updates of other languages, or lacks some of its own`);
}

async function catalogFile(dir: string, key: Awaited<ReturnType<typeof loadPrivateKey>>, version: string, n: number): Promise<string> {
  const file = join(dir, `${version}.ndjson.gz`);
  const header = {
    format: 'patchtree-catalog',
    formatVersion: 2,
    version,
    publisher: 'bench',
    createdAt: new Date(Date.UTC(2024, 0, 1)).toISOString(),
    updates: n,
  } as const;
  await writeCatalog(file, header, generate(n));
  await signFile(file, key);
  return file;
}

runBench(async () => {
  const dir = await benchTempDir('patchtree-tree-scale-');
  try {
    const keys = await generateKeys(join(dir, 'keys'));
    const key = await loadPrivateKey(keys.keyFile);
    const first = await catalogFile(dir, key, 't1', m);
    const added = Math.max(1, Math.round(m / 100));
    const second = await catalogFile(dir, key, 't2', m + added);

    // The tree's shape: the root, then the other nodes spread evenly over the levels below.
    const root: Site = { name: 'root', level: 0, parent: null, languages: ['en-us'], children: [], grpcPort: await freePort() };
    const levels: Site[][] = [[root]];
    for (let i = 1; i < total; i++) {
      const level = 1 + ((i - 1) % (depth - 1));
      const above = levels[level - 1]!;
      const row = (levels[level] ??= []);
      const parent = above[row.length % above.length]!;
      const site: Site = { name: `n${level}-${row.length}`, level, parent, languages: POOL[i % POOL.length]!, children: [], grpcPort: await freePort() };
      parent.children.push(site);
      row.push(site);
    }
    const sites = all(root);
    console.log(`machine: ${cpus().length} cores (${cpus()[0]?.model.trim()}), Node ${process.version}`);
    console.log(
      `tree: ${sites.length} nodes in ${levels.length} levels (${levels.map((l) => l.length).join(', ')}), ${m} updates, ${POOL.length} language sets`,
    );

    if (warmGb > 0) {
      const w = await warmMemory(warmGb);
      console.log(
        `   memory warmed: ${w.gb.toFixed(1)} GB touched in ${w.seconds.toFixed(1)} s, ${w.microsPerPage.toFixed(1)} µs of kernel time a fresh page (about 1.5 when warm already)`,
      );
    }
    // Top down: a child joins a running parent. Fixed gRPC ports, so a restarted node is found again.
    const t0 = performance.now();
    for (const level of levels)
      await Promise.all(
        level.map(async (s) => {
          s.node = await startNode(dir, s.name, keys.pubFile, s.parent?.node, ['--grpc-port', String(s.grpcPort), '--languages', s.languages.join(',')]);
        }),
      );
    console.log(`started in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
    const role = (s: Site) => (s === root ? 'root' : s.children.length ? 'mid-tier' : 'leaf');
    const perRole = async (f: (pid: number) => Promise<number>) => {
      const by = new Map<string, number[]>();
      for (const s of sites) by.set(role(s), [...(by.get(role(s)) ?? []), await f(s.node!.pid)]);
      return by;
    };
    const sum = (by: Map<string, number[]>) => [...by.values()].flat().reduce((a, b) => a + b, 0);
    // What an idle tree costs: its nodes' CPU over five seconds with nothing to do (the bench's polls aside).
    const idle0 = sum(await perRole(cpuSeconds));
    await new Promise((r) => setTimeout(r, 5000));
    const atImport = await perRole(cpuSeconds);
    const faultsAtImport = sum(await perRole(minorFaults));
    console.log(`   idle: all nodes ${((sum(atImport) - idle0) / 5).toFixed(2)} CPU-s per second`);

    const t1 = performance.now();
    await importCatalog(root.node!, first);
    const done = await converge(sites, m, t1, 600_000);
    const slowest = [...done].sort((a, b) => b[1] - a[1])[0]!;
    console.log(
      `1. import at the root -> every node holds its languages' ${m} updates: ${(slowest[1] / 1000).toFixed(1)} s (slowest ${slowest[0]}, level ${sites.find((s) => s.name === slowest[0])!.level}) (goal <= 30 s)`,
    );
    const cpu = await perRole(cpuSeconds);
    const faults = sum(await perRole(minorFaults)) - faultsAtImport;
    await checkLanguages(sites);
    const inWindow = [...cpu].map(([r, xs]) => [r, xs.map((x, i) => x - atImport.get(r)![i]!)] as const);
    console.log(
      `   CPU used since start: ${[...cpu].map(([r, xs]) => `${r} mean ${(xs.reduce((a, b) => a + b, 0) / xs.length).toFixed(1)} s`).join(', ')}; all nodes ${[
        ...cpu.values(),
      ]
        .flat()
        .reduce((a, b) => a + b, 0)
        .toFixed(0)} s`,
    );
    console.log(
      `   CPU from the import to convergence: ${inWindow.map(([r, xs]) => `${r} mean ${(xs.reduce((a, b) => a + b, 0) / xs.length).toFixed(2)} s`).join(', ')}; all nodes ${inWindow
        .flatMap(([, xs]) => xs)
        .reduce((a, b) => a + b, 0)
        .toFixed(1)} s`,
    );
    console.log(
      `   minor page faults from the import to convergence: all nodes ${(faults / 1e6).toFixed(2)} M (${((faults * 4096) / 2 ** 30).toFixed(1)} GiB of fresh pages)`,
    );
    const levelNos = [...new Set(sites.map((s) => s.level))].sort((a, b) => a - b);
    console.log(
      `   each level's last node: ${levelNos.map((l) => `level ${l} ${(Math.max(...sites.filter((s) => s.level === l).map((s) => done.get(s.name)!)) / 1000).toFixed(1)} s`).join(', ')}`,
    );

    // 2. A mid-tier node dies; a release is imported meanwhile; it comes back.
    const mid = levels[1]!.reduce((a, b) => (all(b).length > all(a).length ? b : a));
    const below = all(mid);
    mid.node!.proc.removeAllListeners('exit');
    mid.node!.proc.kill('SIGKILL');
    await new Promise((r) => mid.node!.proc.once('exit', r));
    await importCatalog(root.node!, second);
    const others = sites.filter((s) => !below.includes(s));
    await converge(others, m + added, performance.now(), 600_000);
    await checkLanguages(others);
    const t2 = performance.now();
    mid.node = await restartNode(mid.node!, mid.name);
    const back = await converge(below, m + added, t2, 600_000);
    await checkLanguages(below);
    const last = [...back].sort((a, b) => b[1] - a[1])[0]!;
    console.log(
      `2. ${mid.name} (subtree of ${below.length}) killed, a release of +${added} updates imported meanwhile, restarted: its subtree holds it ${(last[1] / 1000).toFixed(1)} s after the restart (slowest ${last[0]}) (goal <= 10 s)`,
    );

    // Peak RSS per role.
    const rss = await perRole(vmHwmMB);
    console.log(
      `3. peak RSS: ${[...rss].map(([r, xs]) => `${r} max ${Math.max(...xs)} MB, mean ${Math.round(xs.reduce((a, b) => a + b, 0) / xs.length)} MB (${xs.length})`).join('; ')}`,
    );
  } finally {
    await stopBenchProcesses();
    await rm(dir, { recursive: true, force: true });
  }
});
