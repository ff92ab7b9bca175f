import { execFile } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { inventorySchema } from '../assessment/inventory.js';
import type { Inventory } from '../assessment/evaluate.js';

/**
 * Inventory providers, behind one interface: `file:PATH` (a JSON inventory re-read
 * at every scan: labs, simulations, tests) and `windows` (PowerShell: OS build,
 * installed KBs, products from the uninstall registry keys, file versions). Either
 * way the result is checked against the same schema the node applies.
 */
export interface InventoryProvider {
  readonly name: string;
  collect(signal?: AbortSignal): Promise<Inventory>;
}

export function inventoryProvider(spec: string): InventoryProvider {
  if (spec.startsWith('file:')) return fileProvider(spec.slice(5));
  if (spec === 'windows') return windowsProvider();
  throw new Error(`unknown inventory provider "${spec}": use file:PATH or windows`);
}

function checked(raw: unknown, source: string): Inventory {
  const r = inventorySchema.safeParse(raw);
  if (!r.success) throw new Error(`the inventory from ${source} is invalid: ${r.error.issues.slice(0, 3).map((i) => `${i.path.join('.')}: ${i.message}`).join('; ')}`);
  return r.data as Inventory;
}

export function fileProvider(path: string): InventoryProvider {
  return {
    name: `file:${path}`,
    async collect() {
      let raw: unknown;
      try {
        raw = JSON.parse(await readFile(path, 'utf8'));
      } catch (err) {
        throw new Error(`reading the inventory file ${path}: ${(err as Error).message}`);
      }
      return checked(raw, path);
    },
  };
}

/** What the PowerShell script prints (ConvertTo-Json): a single item may come as an object, not an array. */
interface PsOutput {
  caption?: string;
  version?: string;
  buildNumber?: string | number;
  ubr?: number | string | null;
  displayVersion?: string | null;
  architecture?: string;
  language?: string;
  hotfixes?: string | string[] | null;
  apps?: PsApp | PsApp[] | null;
  files?: PsFile | PsFile[] | null;
}
interface PsApp {
  DisplayName?: string | null;
  DisplayVersion?: string | null;
}
interface PsFile {
  path?: string;
  version?: string | null;
}

export const POWERSHELL_SCRIPT = `$ErrorActionPreference = 'SilentlyContinue'
$os = Get-CimInstance Win32_OperatingSystem
$cv = Get-ItemProperty 'HKLM:\\SOFTWARE\\Microsoft\\Windows NT\\CurrentVersion'
$apps = Get-ItemProperty 'HKLM:\\Software\\Microsoft\\Windows\\CurrentVersion\\Uninstall\\*','HKLM:\\Software\\WOW6432Node\\Microsoft\\Windows\\CurrentVersion\\Uninstall\\*' | Where-Object DisplayName | Select-Object DisplayName, DisplayVersion
$files = @('C:\\Windows\\System32\\ntoskrnl.exe','C:\\Windows\\System32\\win32k.sys') | Where-Object { Test-Path $_ } | ForEach-Object { [pscustomobject]@{ path = $_; version = (Get-Item $_).VersionInfo.FileVersionRaw.ToString() } }
[pscustomobject]@{ caption = $os.Caption; version = $os.Version; buildNumber = $os.BuildNumber; ubr = $cv.UBR; displayVersion = $cv.DisplayVersion; architecture = $os.OSArchitecture; language = (Get-Culture).Name; hotfixes = @(Get-HotFix | Select-Object -ExpandProperty HotFixID); apps = @($apps); files = @($files) } | ConvertTo-Json -Depth 4 -Compress`;

const list = <T>(v: T | T[] | null | undefined): T[] => (v === null || v === undefined ? [] : Array.isArray(v) ? v : [v]);

/** Windows 10/11 feature updates by build: the names the catalog gives them. */
const CLIENT_VERSIONS: Record<number, [os: string, version: string | null]> = {
  10240: ['Windows 10', null],
  14393: ['Windows 10', '1607'],
  17763: ['Windows 10', '1809'],
  19041: ['Windows 10', '2004'],
  19042: ['Windows 10', '20H2'],
  19043: ['Windows 10', '21H1'],
  19044: ['Windows 10', '21H2'],
  19045: ['Windows 10', '22H2'],
  22000: ['Windows 11', null],
  22621: ['Windows 11', '22H2'],
  22631: ['Windows 11', '23H2'],
  26100: ['Windows 11', '24H2'],
};
const SERVER_VERSIONS: Record<number, string> = { 14393: 'Windows Server 2016', 17763: 'Windows Server 2019', 20348: 'Windows Server 2022', 26100: 'Windows Server 2025' };

function archOf(a: string | undefined): 'x64' | 'x86' | 'arm64' | undefined {
  const s = (a ?? '').toLowerCase();
  if (s.includes('arm')) return 'arm64';
  if (s.includes('64')) return 'x64';
  if (s.includes('32')) return 'x86';
  return undefined;
}

/**
 * The product name the catalog uses for this OS ("Windows 11 Version 23H2 for
 * x64-based Systems", "Windows Server 2022"), or undefined for a build it does not know.
 */
export function windowsProductName(caption: string, build: number, arch: 'x64' | 'x86' | 'arm64' | undefined): string | undefined {
  if (/server/i.test(caption)) return SERVER_VERSIONS[build];
  const v = CLIENT_VERSIONS[build];
  if (!v || !arch) return undefined;
  const suffix = arch === 'x64' ? 'x64-based Systems' : arch === 'arm64' ? 'ARM64-based Systems' : '32-bit Systems';
  return `${v[0]}${v[1] ? ` Version ${v[1]}` : ''} for ${suffix}`;
}

/** The inventory in PowerShell's output (tested against fixtures: these machines have no Windows). */
export function parseWindowsInventory(raw: unknown): Inventory {
  const o = (raw ?? {}) as PsOutput;
  const build = Number(o.buildNumber);
  const arch = archOf(o.architecture);
  const base = o.version && /^\d+\.\d+\.\d+$/.test(o.version) ? o.version : undefined;
  const ubr = o.ubr === null || o.ubr === undefined || o.ubr === '' ? null : Number(o.ubr);
  const version = base && ubr !== null && Number.isInteger(ubr) ? `${base}.${ubr}` : base;
  const name = o.caption && Number.isInteger(build) ? windowsProductName(o.caption, build, arch) : undefined;
  const products: { name: string; version?: string }[] = [];
  if (name) products.push({ name, ...(version ? { version } : {}) });
  for (const a of list(o.apps)) {
    const n = a.DisplayName?.trim();
    if (!n) continue;
    const v = a.DisplayVersion?.trim();
    products.push({ name: n.slice(0, 300), ...(v && /^\d+(\.\d+){0,3}$/.test(v) ? { version: v } : {}) });
  }
  const kbs = [...new Set(list(o.hotfixes).map((h) => /^KB(\d{4,8})$/i.exec(String(h).trim())?.[1]).filter((k): k is string => Boolean(k)))];
  const files = list(o.files)
    .filter((f): f is { path: string; version?: string | null } => typeof f.path === 'string' && f.path.length > 0)
    .map((f) => ({ path: f.path, ...(f.version && /^\d+(\.\d+){0,3}$/.test(f.version) ? { version: f.version } : {}) }));
  const language = o.language && /^[a-zA-Z]{2,3}(-[a-zA-Z0-9]{2,8})*$/.test(o.language) ? o.language.toLowerCase() : undefined;
  return checked(
    {
      os: { family: 'windows', ...(name ? { name } : {}), ...(version ? { version } : {}), ...(arch ? { arch } : {}), ...(language ? { language } : {}) },
      products,
      kbs,
      files,
    },
    'PowerShell',
  );
}

export function windowsProvider(): InventoryProvider {
  return {
    name: 'windows',
    collect(signal) {
      return new Promise((resolve, reject) => {
        execFile('powershell.exe', ['-NoProfile', '-NonInteractive', '-Command', POWERSHELL_SCRIPT], { maxBuffer: 64 * 1024 * 1024, timeout: 300_000, ...(signal ? { signal } : {}) }, (err, stdout) => {
          if (err) return reject(new Error(`PowerShell inventory failed: ${err.message}`));
          try {
            resolve(parseWindowsInventory(JSON.parse(stdout)));
          } catch (e) {
            reject(e as Error);
          }
        });
      });
    },
  };
}
