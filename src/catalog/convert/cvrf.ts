import { XMLParser } from 'fast-xml-parser';
import type { CatalogUpdate, Severity } from '../format.js';
import type { Rule } from '../rules.js';
import { compareVersions, deterministicId, isVersion, maxSeverity } from './util.js';

/**
 * Converts Microsoft's CVRF 1.1 security update guide (one monthly release) into
 * catalog updates: one per (KB, product) of the `Vendor Fix` remediations whose
 * description is a KB number. Fixes that name no KB (Azure Linux package releases,
 * Click-to-Run builds, release notes) have nothing an agent could install by KB and
 * are counted as skipped. The mapping is documented in docs/converters.md.
 */

export interface CvrfFix {
  kb: string;
  product: string;
  /** Security advisory id (ADVnnnnnn) when the fix comes from an advisory rather than a CVE. */
  advisory: string | null;
  productFamily: string | null;
  vendor: string;
  cves: Set<string>;
  cveDetails: Map<string, { severity?: Severity; exploited?: boolean; publiclyDisclosed?: boolean; baseScore?: number; title?: string }>;
  severity: Severity | null;
  supersedes: Set<string>;
  restart: 'required' | 'may' | 'never';
  fixedBuild: string | null;
  subType: string | null;
  url: string | null;
  releaseDate: string;
}

export interface CvrfResult {
  documentId: string;
  fixes: Map<string, CvrfFix>;
  /** Vendor Fix remediations skipped because their description is not a KB, by description. */
  skipped: Map<string, number>;
}

const ARRAYS = new Set(['Vulnerability', 'Remediation', 'ProductID', 'Threat', 'Branch', 'FullProductName', 'ScoreSet', 'Note', 'Revision', 'Title']);

type Node = Record<string, unknown>;
const arr = (v: unknown): Node[] => (Array.isArray(v) ? (v as Node[]) : v === undefined || v === null || v === '' ? [] : [v as Node]);
function text(v: unknown): string {
  if (v === undefined || v === null) return '';
  if (typeof v === 'string') return v.trim();
  if (typeof v === 'object' && '#text' in (v as Node)) return String((v as Node)['#text']).trim();
  return String(v).trim();
}
const ids = (node: Node): string[] => arr(node.ProductID).map((p) => text(p));

export const fixKey = (kb: string, product: string): string => `${kb}|${product}`;

export function parseCvrf(xml: string): CvrfResult {
  const parser = new XMLParser({
    ignoreAttributes: false,
    attributeNamePrefix: '@_',
    removeNSPrefix: true,
    parseTagValue: false,
    parseAttributeValue: false,
    isArray: (name) => ARRAYS.has(name),
  });
  const doc = (parser.parse(xml) as Node).cvrfdoc as Node | undefined;
  if (!doc) throw new Error('not a CVRF document (no cvrfdoc root element)');
  const tracking = (doc.DocumentTracking ?? {}) as Node;
  const documentId = text((tracking.Identification as Node | undefined)?.ID);
  const initial = text(tracking.InitialReleaseDate);
  const releaseDate = /^\d{4}-\d{2}-\d{2}/.test(initial) ? initial.slice(0, 10) : new Date().toISOString().slice(0, 10);

  // Product tree: ProductID -> name, family and vendor, from nested branches.
  const products = new Map<string, { name: string; family: string | null; vendor: string }>();
  const walk = (node: Node, vendor: string, family: string | null): void => {
    for (const fp of arr(node.FullProductName)) {
      products.set(String(fp['@_ProductID']), { name: text(fp), family, vendor });
    }
    for (const b of arr(node.Branch)) {
      const type = String(b['@_Type'] ?? '');
      const name = String(b['@_Name'] ?? '');
      walk(b, type === 'Vendor' ? name : vendor, type === 'Product Family' ? name : family);
    }
  };
  walk((doc.ProductTree ?? {}) as Node, 'Microsoft', null);

  const fixes = new Map<string, CvrfFix>();
  const skipped = new Map<string, number>();
  for (const v of arr(doc.Vulnerability)) {
    // Most entries are CVEs; advisories (e.g. ADV160001, Adobe Flash in 2016) carry
    // their id in the same element and still name KB fixes, which must not be lost.
    const id = text(v.CVE);
    const cve = /^CVE-\d{4}-\d{4,}$/.test(id) ? id : null;
    const advisory = !cve && /^ADV\d+$/.test(id) ? id : null;
    const title = text(arr(v.Title)[0]);
    const sevByProduct = new Map<string, Severity>();
    let exploited: boolean | undefined;
    let publiclyDisclosed: boolean | undefined;
    for (const t of arr((v.Threats as Node | undefined)?.Threat)) {
      const type = String(t['@_Type']);
      const desc = text(t.Description);
      if (type === 'Severity') {
        const sev = maxSeverity(null, desc);
        if (sev) for (const pid of ids(t)) sevByProduct.set(pid, maxSeverity(sevByProduct.get(pid) ?? null, sev) ?? sev);
      } else if (type === 'Exploit Status') {
        const m = /Exploited:(Yes|No)/i.exec(desc);
        if (m) exploited = m[1]!.toLowerCase() === 'yes';
        const d = /Publicly Disclosed:(Yes|No)/i.exec(desc);
        if (d) publiclyDisclosed = d[1]!.toLowerCase() === 'yes';
      }
    }
    const scoreByProduct = new Map<string, number>();
    for (const s of arr((v.CVSSScoreSets as Node | undefined)?.ScoreSet)) {
      const score = Number(text(s.BaseScore));
      if (Number.isFinite(score)) for (const pid of ids(s)) scoreByProduct.set(pid, Math.max(scoreByProduct.get(pid) ?? 0, score));
    }

    for (const r of arr((v.Remediations as Node | undefined)?.Remediation)) {
      if (r['@_Type'] !== 'Vendor Fix') continue;
      const desc = text(r.Description);
      const kbMatch = /^(?:KB)?(\d{4,8})$/i.exec(desc);
      if (!kbMatch) {
        const kind = desc || '(empty)';
        skipped.set(kind, (skipped.get(kind) ?? 0) + 1);
        continue;
      }
      const kb = kbMatch[1]!;
      const restartText = text(r.RestartRequired).toLowerCase();
      const restart = restartText.startsWith('yes') ? 'required' : restartText.startsWith('no') ? 'never' : 'may';
      const supersedes = (text(r.Supercedence).match(/\d{6,8}/g) ?? []).filter((s) => s !== kb);
      const fixedBuild = text(r.FixedBuild);
      for (const pid of ids(r)) {
        const product = products.get(pid);
        if (!product) continue;
        const key = fixKey(kb, product.name);
        let fix = fixes.get(key);
        if (!fix) {
          fix = {
            kb,
            product: product.name,
            advisory: null,
            productFamily: product.family,
            vendor: product.vendor,
            cves: new Set(),
            cveDetails: new Map(),
            severity: null,
            supersedes: new Set(),
            restart,
            fixedBuild: null,
            subType: text(r.SubType) || null,
            url: text(r.URL) || null,
            releaseDate,
          };
          fixes.set(key, fix);
        }
        const sev = sevByProduct.get(pid) ?? null;
        fix.severity = maxSeverity(fix.severity, sev);
        if (advisory) fix.advisory = advisory;
        for (const s of supersedes) fix.supersedes.add(s);
        if (restart === 'required' || (restart === 'may' && fix.restart === 'never')) fix.restart = restart;
        if (isVersion(fixedBuild) && (!fix.fixedBuild || compareVersions(fixedBuild, fix.fixedBuild) > 0)) fix.fixedBuild = fixedBuild;
        if (!cve) continue;
        fix.cves.add(cve);
        const detail = fix.cveDetails.get(cve) ?? {};
        if (sev) detail.severity = maxSeverity(detail.severity ?? null, sev) ?? sev;
        if (exploited !== undefined) detail.exploited = exploited;
        if (publiclyDisclosed !== undefined) detail.publiclyDisclosed = publiclyDisclosed;
        const score = scoreByProduct.get(pid);
        if (score !== undefined) detail.baseScore = score;
        if (title) detail.title = title.slice(0, 500);
        fix.cveDetails.set(cve, detail);
      }
    }
  }
  return { documentId, fixes, skipped };
}

/** Merges the fixes of several monthly documents; a (KB, product) seen twice unions its facts. */
export function mergeFixes(into: Map<string, CvrfFix>, from: Map<string, CvrfFix>): void {
  for (const [key, fix] of from) {
    const have = into.get(key);
    if (!have) {
      into.set(key, fix);
      continue;
    }
    for (const c of fix.cves) have.cves.add(c);
    for (const [c, d] of fix.cveDetails) have.cveDetails.set(c, { ...have.cveDetails.get(c), ...d });
    for (const s of fix.supersedes) have.supersedes.add(s);
    have.severity = maxSeverity(have.severity, fix.severity);
    if (fix.fixedBuild && (!have.fixedBuild || compareVersions(fix.fixedBuild, have.fixedBuild) > 0)) have.fixedBuild = fix.fixedBuild;
    if (fix.releaseDate < have.releaseDate) have.releaseDate = fix.releaseDate;
    have.advisory ??= fix.advisory;
  }
}

/** The rules CVRF lets us derive: the product applies; the KB or the fixed build installs it. */
export function cvrfRules(fix: Pick<CvrfFix, 'kb' | 'product' | 'fixedBuild'>): { applicability: Rule; installed: Rule } {
  const installed: Rule[] = [{ kb: fix.kb }];
  if (fix.fixedBuild) installed.push({ product: fix.product, version: { gte: fix.fixedBuild } });
  return { applicability: { product: fix.product }, installed: installed.length === 1 ? installed[0]! : { any: installed } };
}

export function cvrfToUpdate(fix: CvrfFix): CatalogUpdate {
  const { applicability, installed } = cvrfRules(fix);
  const cves = [...fix.cves].sort();
  return {
    id: deterministicId(`cvrf|${fix.kb}|${fix.product}`),
    revision: 1,
    kb: fix.kb,
    bulletin: fix.advisory,
    title: `${fix.releaseDate.slice(0, 7)} ${fix.subType ?? 'Security Update'} for ${fix.product} (KB${fix.kb})`,
    vendor: fix.vendor,
    productFamily: fix.productFamily,
    product: fix.product,
    classification: 'Security Updates',
    severity: fix.severity,
    cves,
    cveDetails: cves.map((id) => ({ id, ...fix.cveDetails.get(id) })),
    releaseDate: fix.releaseDate,
    supersedes: [...fix.supersedes].sort(),
    restart: fix.restart,
    install: { successCodes: [0], rebootCodes: [3010, 1641] },
    applicability,
    installed,
    ...(fix.url && /^https?:\/\//.test(fix.url) ? { moreInfoUrl: fix.url } : {}),
    files: [],
  };
}
