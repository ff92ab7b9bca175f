import type { Inventory } from './evaluate.js';
import { LIMITS, type Delta } from '../agent-api/inventory.js';

const lower = (s: string) => s.toLowerCase();

/** Applies a delta to the previous inventory; the result is checked against the same limits. */
export function applyDelta(base: Inventory, d: Delta): Inventory {
  const out: Inventory = { ...base, os: d.os ?? base.os };
  if (d.products) {
    const rm = new Set((d.products.remove ?? []).map(lower));
    const add = d.products.add ?? [];
    const addNames = new Set(add.map((p) => lower(p.name)));
    out.products = [...(base.products ?? []).filter((p) => !rm.has(lower(p.name)) && !addNames.has(lower(p.name))), ...add];
  }
  if (d.kbs) {
    const set = new Set(base.kbs ?? []);
    for (const k of d.kbs.remove ?? []) set.delete(k);
    for (const k of d.kbs.add ?? []) set.add(k);
    out.kbs = [...set];
  }
  if (d.files) {
    const m = new Map((base.files ?? []).map((f) => [lower(f.path), f]));
    for (const p of d.files.remove ?? []) m.delete(lower(p));
    for (const f of d.files.add ?? []) m.set(lower(f.path), f);
    out.files = [...m.values()];
  }
  if (d.registry) {
    const k = (r: { key: string; value?: string | undefined }) => `${lower(r.key)}\u0000${lower(r.value ?? '')}`;
    const m = new Map((base.registry ?? []).map((r) => [k(r), r]));
    for (const r of d.registry.remove ?? []) m.delete(k(r));
    for (const r of d.registry.add ?? []) m.set(k(r), r);
    out.registry = [...m.values()];
  }
  for (const [list, max] of Object.entries(LIMITS)) {
    const n = (out as unknown as Record<string, unknown[] | undefined>)[list]?.length ?? 0;
    if (n > max) throw new RangeError(`${list}: ${n} entries after the delta, at most ${max}`);
  }
  return out;
}

/** A computer's languages: the OS's and its products', lowercase, sorted, once each. */
export function inventoryLanguages(inv: Inventory): string[] {
  const all = new Set<string>();
  if (inv.os.language) all.add(inv.os.language.toLowerCase());
  for (const p of inv.products ?? []) for (const l of p.languages ?? []) all.add(l.toLowerCase());
  return [...all].sort();
}
