import type { Cmp, Rule } from '../catalog/rules.js';

/**
 * The rule evaluator (docs/rules.md): pure, no I/O, shared by the server's
 * assessment and the agent. Three-valued: a fact the inventory does not report
 * makes its leaf unknown, never false.
 *
 * Rules are compiled once into closures over prepared facts, so assessing a
 * fleet evaluates each rule as a few function calls, and versions are parsed
 * once per distinct string.
 */

/** A computer's inventory, as an agent reports it. Absent lists were not collected. */
export interface Inventory {
  os: { family: string; name?: string; version?: string; arch?: string; language?: string };
  products?: { name: string; version?: string; languages?: string[]; patches?: string[] }[];
  kbs?: string[];
  files?: { path: string; version?: string }[];
  registry?: { key: string; value?: string; data?: string | number }[];
}

/** Three values: 1 true, 0 false, 2 unknown. */
export type Tri = 0 | 1 | 2;
export const TRUE: Tri = 1;
export const FALSE: Tri = 0;
export const UNKNOWN: Tri = 2;

/** The inventory in the shape rules read: lookups by lower-cased name. */
export interface Facts {
  /** Product name -> the parsed versions of its installs (null: installed, version not reported or unreadable). */
  products: Map<string, (number[] | null)[]> | null;
  kbs: Set<string> | null;
  osVersion: number[] | null;
  arch: string | null;
  language: string | null;
  files: Map<string, number[] | null> | null;
  registry: Map<string, { data?: string | number } | null> | null;
}

const lower = (s: string) => s.toLowerCase();
/** Registry entries are keyed by key and value name; `\u0000` marks the key itself. */
const regKey = (key: string, value?: string) => `${lower(key).replace(/\\+$/, '')}\u0000${value === undefined ? '' : lower(value)}`;

export function facts(inv: Inventory): Facts {
  let products: Facts['products'] = null;
  if (inv.products) {
    products = new Map();
    for (const p of inv.products) {
      const k = lower(p.name);
      const list = products.get(k) ?? [];
      list.push(p.version === undefined ? null : parseVersion(p.version));
      products.set(k, list);
    }
  }
  let registry: Facts['registry'] = null;
  if (inv.registry) {
    registry = new Map();
    for (const r of inv.registry) {
      registry.set(regKey(r.key), registry.get(regKey(r.key)) ?? null);
      if (r.value !== undefined) registry.set(regKey(r.key, r.value), r.data === undefined ? {} : { data: r.data });
    }
  }
  return {
    products,
    kbs: inv.kbs ? new Set(inv.kbs.map((k) => k.replace(/^kb/i, ''))) : null,
    osVersion: inv.os.version === undefined ? null : parseVersion(inv.os.version),
    arch: inv.os.arch ?? null,
    language: inv.os.language ? lower(inv.os.language) : null,
    files: inv.files ? new Map(inv.files.map((f) => [lower(f.path), f.version === undefined ? null : parseVersion(f.version)])) : null,
    registry,
  };
}

/* ---- versions ---- */

const parsed = new Map<string, number[] | null>();

/** Parses a dotted numeric version of up to four parts; null when it is not one. */
export function parseVersion(v: string): number[] | null {
  let p = parsed.get(v);
  if (p !== undefined) return p;
  p = /^\d+(\.\d+){0,3}$/.test(v) ? v.split('.').map(Number) : null;
  if (parsed.size > 100_000) parsed.clear(); // bounded: builds are few, but inventories are not ours
  parsed.set(v, p);
  return p;
}

/** Compares dotted versions part by part, missing parts as 0. */
export function compareVersions(a: readonly number[], b: readonly number[]): number {
  const n = Math.max(a.length, b.length);
  for (let i = 0; i < n; i++) {
    const x = i < a.length ? a[i]! : 0;
    const y = i < b.length ? b[i]! : 0;
    if (x !== y) return x < y ? -1 : 1;
  }
  return 0;
}

type CmpFn = (version: readonly number[] | null | undefined) => Tri;

const OPS = { eq: 0, ne: 1, lt: 2, lte: 3, gt: 4, gte: 5 } as const;

/**
 * A comparison as a closure over parsed versions (the hot path of assessment:
 * most installed rules are "product at or above this build"). An absent or
 * unreadable version is unknown: not evidence either way.
 */
function compileCmp(c: Cmp): CmpFn {
  const entries = Object.entries(c) as [keyof typeof OPS, string][];
  const ops = entries.map(([op]) => OPS[op]);
  const wants = entries.map(([, v]) => parseVersion(v)!);
  if (ops.length === 1) {
    const op = ops[0]!;
    const want = wants[0]!;
    return (have) => (have ? (holds(op, compareVersions(have, want)) ? TRUE : FALSE) : UNKNOWN);
  }
  return (have) => {
    if (!have) return UNKNOWN;
    for (let i = 0; i < ops.length; i++) if (!holds(ops[i]!, compareVersions(have, wants[i]!))) return FALSE;
    return TRUE;
  };
}

function holds(op: number, d: number): boolean {
  switch (op) {
    case 0:
      return d === 0;
    case 1:
      return d !== 0;
    case 2:
      return d < 0;
    case 3:
      return d <= 0;
    case 4:
      return d > 0;
    default:
      return d >= 0;
  }
}

/* ---- rules ---- */

export type Compiled = (f: Facts) => Tri;

export function not(v: Tri): Tri {
  return v === UNKNOWN ? UNKNOWN : v === TRUE ? FALSE : TRUE;
}

/** Compiles a (validated) rule. */
export function compile(rule: Rule): Compiled {
  const r = rule as Record<string, unknown>;
  if ('all' in r) {
    const parts = (r.all as Rule[]).map(compile);
    return (f) => {
      let out: Tri = TRUE;
      for (const p of parts) {
        const v = p(f);
        if (v === FALSE) return FALSE;
        if (v === UNKNOWN) out = UNKNOWN;
      }
      return out;
    };
  }
  if ('any' in r) {
    const parts = (r.any as Rule[]).map(compile);
    return (f) => {
      let out: Tri = FALSE;
      for (const p of parts) {
        const v = p(f);
        if (v === TRUE) return TRUE;
        if (v === UNKNOWN) out = UNKNOWN;
      }
      return out;
    };
  }
  if ('not' in r) {
    const inner = compile(r.not as Rule);
    return (f) => not(inner(f));
  }
  if ('always' in r) {
    const v: Tri = r.always ? TRUE : FALSE;
    return () => v;
  }
  if ('product' in r) {
    const name = lower(r.product as string);
    const cmp = r.version ? compileCmp(r.version as Cmp) : null;
    return (f) => {
      if (!f.products) return UNKNOWN;
      const versions = f.products.get(name);
      if (!versions) return FALSE;
      if (!cmp) return TRUE;
      // Several installs of one product: true if any satisfies, else unknown if any cannot tell.
      let out: Tri = FALSE;
      for (const v of versions) {
        const x = cmp(v);
        if (x === TRUE) return TRUE;
        if (x === UNKNOWN) out = UNKNOWN;
      }
      return out;
    };
  }
  if ('kb' in r) {
    const kb = r.kb as string;
    return (f) => (f.kbs ? (f.kbs.has(kb) ? TRUE : FALSE) : UNKNOWN);
  }
  if ('osVersion' in r) {
    const cmp = compileCmp(r.osVersion as Cmp);
    return (f) => cmp(f.osVersion);
  }
  if ('arch' in r) {
    const arch = r.arch as string;
    return (f) => (f.arch === null ? UNKNOWN : f.arch === arch ? TRUE : FALSE);
  }
  if ('language' in r) {
    const langs = (r.language as string[]).map(lower);
    return (f) => (f.language === null ? UNKNOWN : langs.some((l) => f.language === l || f.language!.startsWith(`${l}-`)) ? TRUE : FALSE);
  }
  if ('file' in r) {
    const spec = r.file as { path: string; exists?: boolean; version?: Cmp };
    const path = lower(spec.path);
    const exists = spec.exists ?? true;
    const cmp = spec.version ? compileCmp(spec.version) : null;
    return (f) => {
      if (!f.files) return UNKNOWN;
      const present = f.files.has(path);
      if (!exists) return present ? FALSE : TRUE;
      if (!present) return FALSE;
      return cmp ? cmp(f.files.get(path)) : TRUE;
    };
  }
  if ('registry' in r) {
    const spec = r.registry as { key: string; value?: string; exists?: boolean; equals?: string | number; version?: Cmp };
    const k = regKey(spec.key, spec.value);
    const exists = spec.exists ?? true;
    const cmp = spec.version ? compileCmp(spec.version) : null;
    return (f) => {
      if (!f.registry) return UNKNOWN;
      const present = f.registry.has(k);
      if (!exists) return present ? FALSE : TRUE;
      if (!present) return FALSE;
      const entry = f.registry.get(k);
      if (spec.equals !== undefined) {
        if (entry?.data === undefined) return UNKNOWN;
        if (String(entry.data).toLowerCase() !== String(spec.equals).toLowerCase()) return FALSE;
      }
      if (cmp) return cmp(entry?.data === undefined ? undefined : parseVersion(String(entry.data)));
      return TRUE;
    };
  }
  throw new Error(`unknown rule operator ${Object.keys(r).join(',')}`);
}

/** Evaluates a rule once (tests, the agent); fleets compile once and reuse. */
export function evaluate(rule: Rule, inv: Inventory | Facts): Tri {
  return compile(rule)('os' in inv ? facts(inv) : inv);
}

/**
 * Products a computer must report for the rule to be true: the index that keeps
 * assessment from evaluating every update for every computer. Null when the rule
 * does not depend on a product (such an update is evaluated for everyone).
 */
export function requiredProducts(rule: Rule): string[] | null {
  const r = rule as Record<string, unknown>;
  if ('product' in r) return [lower(r.product as string)];
  if ('all' in r) {
    // Any one part's products is a necessary condition; take the smallest set.
    let best: string[] | null = null;
    for (const p of r.all as Rule[]) {
      const s = requiredProducts(p);
      if (s && (!best || s.length < best.length)) best = s;
    }
    return best;
  }
  if ('any' in r) {
    const out = new Set<string>();
    for (const p of r.any as Rule[]) {
      const s = requiredProducts(p);
      if (!s) return null;
      for (const x of s) out.add(x);
    }
    return [...out];
  }
  return null;
}
