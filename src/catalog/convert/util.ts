import { createHash } from 'node:crypto';
import { SEVERITIES, type Severity } from '../format.js';

/** Lower-cased severity -> rank, the most severe highest (Critical 4 ... Low 1). */
const RANK: Record<string, number> = Object.fromEntries(SEVERITIES.map((s, i) => [s.toLowerCase(), SEVERITIES.length - i]));

/** The more severe of two vendor severities (either may be null or any casing). */
export function maxSeverity(a: string | null, b: string | null): Severity | null {
  const ra = a ? (RANK[a.toLowerCase()] ?? 0) : 0;
  const rb = b ? (RANK[b.toLowerCase()] ?? 0) : 0;
  const r = Math.max(ra, rb);
  return r === 0 ? null : SEVERITIES[SEVERITIES.length - r]!;
}

export const isVersion = (v: string): boolean => /^\d+(\.\d+){1,3}$/.test(v);

/** Compares dotted versions numerically part by part (missing parts are 0). */
export function compareVersions(a: string, b: string): number {
  const pa = a.split('.');
  const pb = b.split('.');
  for (let i = 0; i < Math.max(pa.length, pb.length); i++) {
    const d = Number(pa[i] ?? 0) - Number(pb[i] ?? 0);
    if (d !== 0) return d < 0 ? -1 : 1;
  }
  return 0;
}

/** A stable GUID-shaped id from a name, for updates the vendor gave no id. */
export function deterministicId(name: string): string {
  const h = createHash('sha256').update(name).digest('hex');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-5${h.slice(13, 16)}-${((parseInt(h[16]!, 16) & 3) | 8).toString(16)}${h.slice(17, 20)}-${h.slice(20, 32)}`;
}
