import type { CatalogUpdate } from '../format.js';
import { maxSeverity } from './util.js';
import { FILE_NAME, installerFor, type Installer } from '../../delivery/installers.js';

/**
 * Converts OSDSUS exports of WSUS metadata (a JSON array, one row per file) into
 * catalog updates, one per `UpdateId`. SHA-256 comes from `AdditionalHash`
 * (space-separated decimal bytes); a row without one has no verifiable file and is
 * counted as skipped. The file's culture tag gives its language (`x-none`, or no
 * tag, is `neutral`). Mapping in docs/converters.md.
 */

export interface WsusRow {
  UpdateId: string;
  KBNumber?: string;
  Title?: string;
  Catalog?: string;
  UpdateArch?: string;
  CreationDate?: string;
  UpdateClassificationTitle?: string;
  MsrcSeverity?: string;
  SecurityBulletins?: string;
  CompanyTitles?: string;
  ProductFamilyTitles?: string;
  IsSuperseded?: boolean;
  Description?: string;
  AdditionalInformationUrls?: string;
  FileName?: string;
  /** The KB of the file's own package, where it differs (a .NET cumulative update's NDP48 and NDP481 cabs). */
  FileKBNumber?: string;
  FileUri?: string;
  Size?: number;
  AdditionalHash?: string;
}

export interface WsusResult {
  updates: CatalogUpdate[];
  /** Architecture of each update, for the join with CVRF. */
  arch: Map<string, string>;
  skippedFiles: number;
  /** Files with no known installer (an .exe whose arguments are not known). */
  noInstaller: number;
}

/** `x-none` and names without a culture are neutral; otherwise the culture, lowercased (`de-de`). */
export function languageOfFile(fileName: string): string {
  // A pseudo-localisation build (`lip-ja-jp.pseudo.cab`) is for testers, not for Japanese computers.
  if (/\.pseudo\./i.test(fileName)) return 'qps-ploc';
  const stem = fileName.toLowerCase().split('.')[0] ?? '';
  if (stem.endsWith('-x-none')) return 'neutral';
  const parts = stem.split('-');
  // The culture follows the file's own name: a 2-3 letter language, then a
  // 2-letter region or 4-letter script, then optional further subtags.
  for (let i = 1; i < parts.length - 1; i++) {
    if (/^[a-z]{2,3}$/.test(parts[i]!) && /^([a-z]{2}|[a-z]{4})$/.test(parts[i + 1]!) && parts.slice(i + 2).every((p) => /^[a-z0-9]{2,8}$/.test(p)))
      return parts.slice(i).join('-');
  }
  return 'neutral';
}

/** Space-separated decimal bytes (`"119 89 233 ..."`) to lowercase hex; null if malformed. */
export function decimalBytesToHex(s: string | undefined): string | null {
  if (!s) return null;
  const bytes = s.trim().split(/\s+/).map(Number);
  if (!bytes.every((b) => Number.isInteger(b) && b >= 0 && b <= 255)) return null;
  return Buffer.from(bytes).toString('hex');
}

const ARCH: Record<string, string> = { x64: 'x64', amd64: 'x64', x86: 'x86', arm64: 'arm64' };

/** Maps a WSUS catalog name and arch to the product name CVRF uses for it. */
export function productName(catalog: string, arch: string): string {
  const win = /^Windows (10|11) (\w+)$/i.exec(catalog);
  if (win) {
    const suffix = arch === 'x64' ? 'x64-based Systems' : arch === 'arm64' ? 'ARM64-based Systems' : '32-bit Systems';
    return `Windows ${win[1]} Version ${win[2]!.toUpperCase()} for ${suffix}`;
  }
  const office = /^Office (\d{4}) (32|64)-Bit$/i.exec(catalog);
  if (office) return `Microsoft Office ${office[1]} (${office[2]}-bit edition)`;
  return catalog;
}

/**
 * How a WSUS file installs (installers.ts): .msu with wusa, a Windows .cab with DISM,
 * an Office .cab (WSUS ships Office patches as cabs of .msp files) expanded and each
 * .msp given to msiexec, .msp and .msi with msiexec, and an .exe only where its
 * arguments are known (the .NET Framework's offline installers take `/q /norestart`).
 * Null: none known, said in the build summary, never guessed.
 */
export function fileInstaller(fileName: string, product: string, family: string | null): Installer | null {
  const office = /^(microsoft )?office\b/i.test(product) || /^office\b/i.test(family ?? '');
  const dotnet = /\.net framework/i.test(product) || /\.net framework/i.test(family ?? '') || /-ndp\d+/i.test(fileName);
  return installerFor(fileName, { office, exeArguments: dotnet ? '/q /norestart' : null });
}

function installedRule(kb: string | null, group: WsusRow[]): CatalogUpdate['installed'] {
  const parts = [...new Set(group.map((r) => (r.FileKBNumber ?? '').trim()).filter((k) => /^\d{4,8}$/.test(k) && k !== kb))].sort();
  if (!kb) return parts.length ? { any: parts.map((k) => ({ kb: k })) } : { always: false };
  return parts.length ? { any: [{ kb }, ...parts.map((k) => ({ kb: k }))] } : { kb };
}

function releaseDate(creation: string | undefined): string {
  const m = /\/Date\((-?\d+)\)\//.exec(creation ?? '');
  const d = m ? new Date(Number(m[1])) : null;
  return d && !Number.isNaN(d.getTime()) ? d.toISOString().slice(0, 10) : '1970-01-01';
}

export function parseWsus(json: string): WsusResult {
  const rows: unknown = JSON.parse(json);
  if (!Array.isArray(rows)) throw new Error('expected a JSON array of WSUS update rows');
  const groups = new Map<string, WsusRow[]>();
  for (const row of rows as WsusRow[]) {
    if (!row || typeof row.UpdateId !== 'string') throw new Error('a WSUS row has no UpdateId');
    const g = groups.get(row.UpdateId);
    if (g) g.push(row);
    else groups.set(row.UpdateId, [row]);
  }
  const updates: CatalogUpdate[] = [];
  const archOf = new Map<string, string>();
  let skippedFiles = 0;
  let noInstaller = 0;
  for (const [id, group] of groups) {
    const first = group[0]!;
    const arch = ARCH[(first.UpdateArch ?? '').toLowerCase()] ?? '';
    const product = productName(first.Catalog || first.ProductFamilyTitles || 'Unknown product', arch);
    const kb = /^\d{4,8}$/.test(first.KBNumber ?? '') ? first.KBNumber! : null;
    const files: CatalogUpdate['files'] = [];
    const seen = new Set<string>();
    for (const r of group) {
      const sha256 = decimalBytesToHex(r.AdditionalHash);
      if (sha256?.length !== 64 || !r.FileName || !FILE_NAME.test(r.FileName) || !r.FileUri || !/^https?:\/\//.test(r.FileUri)) {
        skippedFiles++;
        continue;
      }
      if (seen.has(sha256)) continue;
      seen.add(sha256);
      const installer = fileInstaller(r.FileName, product, first.ProductFamilyTitles ?? null);
      if (!installer) noInstaller++;
      files.push({
        name: r.FileName,
        url: r.FileUri,
        size: Number(r.Size ?? 0),
        sha256,
        language: languageOfFile(r.FileName),
        ...(installer ? { installer } : {}),
      });
    }
    // Catalog order is install order: the language-neutral files first, then by language and name.
    const rank = (l: string) => (l === 'neutral' ? '' : l);
    files.sort((a, b) => rank(a.language).localeCompare(rank(b.language)) || a.name.localeCompare(b.name));
    const bulletin = (first.SecurityBulletins ?? '').trim();
    const moreInfo = (first.AdditionalInformationUrls ?? '').split(/\s+/)[0] ?? '';
    archOf.set(id, arch);
    updates.push({
      id,
      revision: 1,
      kb,
      bulletin: bulletin ? bulletin.slice(0, 50) : null,
      title: (first.Title || `KB${kb ?? id}`).slice(0, 1000),
      ...(first.Description ? { description: first.Description.slice(0, 20000) } : {}),
      vendor: first.CompanyTitles || 'Microsoft',
      productFamily: first.ProductFamilyTitles || null,
      product,
      classification: first.UpdateClassificationTitle || 'Updates',
      severity: maxSeverity(null, first.MsrcSeverity ?? null),
      cves: [],
      releaseDate: releaseDate(first.CreationDate),
      supersedes: [],
      superseded: group.some((r) => r.IsSuperseded === true),
      restart: 'may',
      install: { successCodes: [0], rebootCodes: [3010, 1641] },
      // The product name carries the architecture (32-bit Office runs on x64 Windows too).
      applicability: { product },
      // Windows lists a .NET cumulative update under its packages' KBs (KB5042056, KB5042097), not the umbrella KB5042352.
      installed: installedRule(kb, group),
      ...(/^https?:\/\//.test(moreInfo) ? { moreInfoUrl: moreInfo } : {}),
      files,
    });
  }
  return { updates, arch: archOf, skippedFiles, noInstaller };
}
