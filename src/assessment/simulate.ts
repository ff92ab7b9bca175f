import { createInterface } from 'node:readline';
import { Readable } from 'node:stream';
import PQueue from 'p-queue';
import type { Rule } from '../catalog/rules.js';
import { compareVersions, parseVersion, type Inventory } from './evaluate.js';

/**
 * A fleet simulator: N computers with realistic inventories drawn from the
 * products in the node's catalog (its rules, read from `/agent/v1/rules` with the
 * enrolment token), each at some patch level of each product it has: some fully
 * patched, most a few months behind. Deterministic for a seed. Used by
 * `patchtree simulate`, the tests, the benchmarks and the demo.
 */

export interface SimulateOptions {
  server: string;
  token: string;
  computers: number;
  seed?: number;
  concurrency?: number;
  /** Prefix of agent keys and names (default `sim<seed>`); reusing it reports the same computers again. */
  prefix?: string;
  /** Languages the computers are in (one drawn per computer); default a mix, mostly English. */
  languages?: readonly string[];
  onProgress?: (done: number, total: number) => void;
}

export interface SimulateResult {
  computers: number;
  created: number;
  failed: number;
  required: number;
  unknown: number;
  durationMs: number;
  reportsPerSecond: number;
  firstError: string | null;
}

interface ProductInfo {
  name: string;
  /** Build/version ladder from the catalog's installed rules, ascending. */
  versions: string[];
  kbs: string[];
}

/** mulberry32: a small, good, seedable generator. */
export function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const LANGUAGES = ['en-us', 'en-us', 'en-us', 'en-gb', 'de-de', 'fr-fr', 'ja-jp', 'es-es'];
const cmpVersion = (a: string, b: string) => compareVersions(parseVersion(a) ?? [], parseVersion(b) ?? []);

/** Collects `{product, version: {gte}}` leaves: the builds that mark an update installed. */
function versionsOf(rule: Rule, out: Map<string, Set<string>>): void {
  const r = rule as Record<string, unknown>;
  if ('product' in r && r.version) {
    const v = (r.version as Record<string, string>).gte;
    if (v) {
      const set = out.get(r.product as string) ?? new Set();
      set.add(v);
      out.set(r.product as string, set);
    }
  }
  for (const k of ['all', 'any'] as const) if (Array.isArray(r[k])) for (const c of r[k] as Rule[]) versionsOf(c, out);
  if (r.not) versionsOf(r.not as Rule, out);
}

/** The products of the node's catalog, with their version ladders. */
export async function catalogProducts(server: string, token: string): Promise<ProductInfo[]> {
  const res = await fetch(new URL('/agent/v1/rules', server), { headers: { authorization: `Bearer ${token}` } });
  if (!res.ok || !res.body) throw new Error(`GET /agent/v1/rules: HTTP ${res.status} ${await res.text()}`);
  const versions = new Map<string, Set<string>>();
  const kbs = new Map<string, string[]>();
  for await (const line of createInterface({ input: Readable.fromWeb(res.body as never) })) {
    if (!line) continue;
    const u = JSON.parse(line) as { product: string; kb: string | null; installed: Rule };
    versionsOf(u.installed, versions);
    if (!versions.has(u.product)) versions.set(u.product, new Set());
    if (u.kb) (kbs.get(u.product) ?? kbs.set(u.product, []).get(u.product)!).push(u.kb);
  }
  return [...versions].map(([name, v]) => ({ name, versions: [...v].sort(cmpVersion), kbs: kbs.get(name) ?? [] })).sort((a, b) => a.name.localeCompare(b.name));
}

/** One simulated computer's report body. */
export function simulatedComputer(products: ProductInfo[], seed: number, i: number, prefix: string, languages: readonly string[] = LANGUAGES) {
  const r = rng(seed * 1_000_003 + i);
  const pick = <T>(l: readonly T[]): T => l[Math.floor(r() * l.length)]!;
  const oses = products.filter((p) => /^Windows /i.test(p.name));
  const apps = products.filter((p) => !/^Windows /i.test(p.name));
  const os = oses.length ? pick(oses) : pick(products);
  const mine = [os];
  const nApps = Math.min(apps.length, Math.floor(r() * 5));
  for (let k = 0; k < nApps; k++) {
    const a = pick(apps);
    if (!mine.includes(a)) mine.push(a);
  }
  // Patch level: a third fully patched, the rest somewhere behind (recent levels likelier).
  const level = (p: ProductInfo): string | undefined => {
    if (!p.versions.length) return undefined;
    if (r() < 0.35) return p.versions[p.versions.length - 1];
    const behind = Math.floor(r() * r() * p.versions.length);
    return p.versions[Math.max(0, p.versions.length - 1 - behind)];
  };
  const inv: Inventory = { os: { family: 'windows', name: os.name }, products: [], kbs: [] };
  for (const p of mine) {
    const v = level(p);
    inv.products!.push(v ? { name: p.name, version: v } : { name: p.name });
    if (p === os && v) inv.os.version = v;
    // A few KBs listed as installed, as Windows reports them.
    for (let k = 0; k < 3 && p.kbs.length; k++) if (r() < 0.3) inv.kbs!.push(pick(p.kbs));
  }
  inv.kbs = [...new Set(inv.kbs)];
  inv.os.arch = /ARM64/i.test(os.name) ? 'arm64' : /32-bit|x86/i.test(os.name) ? 'x86' : 'x64';
  inv.os.language = pick(languages);
  const key = `${prefix}-${String(i).padStart(6, '0')}`;
  return { agentKey: key, name: key.toUpperCase(), agentVersion: 'simulator', full: inv };
}

export async function simulate(o: SimulateOptions): Promise<SimulateResult> {
  const seed = o.seed ?? 1;
  const prefix = o.prefix ?? `sim${seed}`;
  const products = await catalogProducts(o.server, o.token);
  if (!products.length) throw new Error('the catalog of this node has no products to simulate (import a catalog first)');
  const queue = new PQueue({ concurrency: o.concurrency ?? 16 });
  const result: SimulateResult = {
    computers: o.computers,
    created: 0,
    failed: 0,
    required: 0,
    unknown: 0,
    durationMs: 0,
    reportsPerSecond: 0,
    firstError: null,
  };
  const url = new URL('/agent/v1/inventory', o.server);
  const start = performance.now();
  let done = 0;
  for (let i = 0; i < o.computers; i++) {
    // Bounded: at most a few reports are built ahead of the ones in flight.
    if (queue.size > 64) await queue.onSizeLessThan(32);
    void queue.add(async () => {
      try {
        const res = await fetch(url, {
          method: 'POST',
          headers: { authorization: `Bearer ${o.token}`, 'content-type': 'application/json' },
          body: JSON.stringify(simulatedComputer(products, seed, i, prefix, o.languages?.length ? o.languages : LANGUAGES)),
        });
        const body = (await res.json()) as { created?: boolean; required?: number; unknown?: number; detail?: string };
        if (!res.ok) throw new Error(`HTTP ${res.status}: ${body.detail ?? ''}`);
        if (body.created) result.created++;
        result.required += body.required ?? 0;
        result.unknown += body.unknown ?? 0;
      } catch (err) {
        result.failed++;
        result.firstError ??= (err as Error).message;
      }
      o.onProgress?.(++done, o.computers);
    });
  }
  await queue.onIdle();
  result.durationMs = Math.round(performance.now() - start);
  result.reportsPerSecond = Math.round((o.computers / result.durationMs) * 1000);
  return result;
}
