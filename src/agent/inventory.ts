import { execFile } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { inventorySchema } from '../agent-api/inventory.js';
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
  if (!r.success)
    throw new Error(
      `the inventory from ${source} is invalid: ${r.error.issues
        .slice(0, 3)
        .map((i) => `${i.path.join('.')}: ${i.message}`)
        .join('; ')}`,
    );
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
  /** The uninstall key's name: an MSI product code, or `{product}_{family}_{patch code}` for an Office patch. */
  PSChildName?: string | null;
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
$apps = Get-ItemProperty 'HKLM:\\Software\\Microsoft\\Windows\\CurrentVersion\\Uninstall\\*','HKLM:\\Software\\WOW6432Node\\Microsoft\\Windows\\CurrentVersion\\Uninstall\\*' | Where-Object DisplayName | Select-Object PSChildName, DisplayName, DisplayVersion
$files = @('C:\\Windows\\System32\\ntoskrnl.exe','C:\\Windows\\System32\\win32k.sys') | Where-Object { Test-Path $_ } | ForEach-Object { [pscustomobject]@{ path = $_; version = (Get-Item $_).VersionInfo.FileVersionRaw.ToString() } }
[pscustomobject]@{ caption = $os.Caption; version = $os.Version; buildNumber = $os.BuildNumber; ubr = $cv.UBR; displayVersion = $cv.DisplayVersion; architecture = $os.OSArchitecture; language = [System.Globalization.CultureInfo]::InstalledUICulture.Name; hotfixes = @(Get-HotFix | Select-Object -ExpandProperty HotFixID); apps = @($apps); files = @($files) } | ConvertTo-Json -Depth 4 -Compress`;

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
const SERVER_VERSIONS: Record<number, string> = {
  14393: 'Windows Server 2016',
  17763: 'Windows Server 2019',
  20348: 'Windows Server 2022',
  26100: 'Windows Server 2025',
};

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
  const products: { name: string; version?: string; languages?: string[]; patches?: string[] }[] = [];
  if (name) products.push({ name, ...(version ? { version } : {}) });
  const office = officeProducts(list(o.apps));
  for (const a of list(o.apps)) {
    const n = a.DisplayName?.trim();
    if (!n || office.patchKeys.has(a.PSChildName ?? '')) continue; // an Office patch is a KB of its product, not a product
    const v = a.DisplayVersion?.trim();
    products.push({ name: n.slice(0, 300), ...(v && /^\d+(\.\d+){0,3}$/.test(v) ? { version: v } : {}) });
  }
  products.push(...office.products);
  const kbs = [
    ...new Set([
      ...list(o.hotfixes)
        .map((h) => /^KB(\d{4,8})$/i.exec(String(h).trim())?.[1])
        .filter((k): k is string => Boolean(k)),
      ...office.kbs,
    ]),
  ];
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

/**
 * Office 2016's MSI products by their product codes, `{BRMMmmmm-PPPP-LLLL-p000-D000000FF1CE}`
 * (Microsoft's numbering scheme: MM = 16, PPPP the product, LLLL the language as a hex
 * LCID, 0000 for the neutral core; p = 1 for 64-bit). Office patches are listed under
 * `{product code}_{product family}_{patch code}` with the KB in their display name.
 */
const OFFICE_PRODUCT = /^\{9\d16\d{4}-[0-9A-F]{4}-([0-9A-F]{4})-([01])000-[01]000000FF1CE\}$/i;
const OFFICE_PATCH =
  /^(\{9\d16\d{4}-[0-9A-F]{4}-[0-9A-F]{4}-([01])000-[01]000000FF1CE\})_[^_]+_(\{[0-9A-F]{8}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{12}\})$/i;

/** Windows LCIDs (hex) of the languages Office 2016 ships in, with their culture tags as the catalog names files. */
export const OFFICE_LCIDS: Record<string, string> = {
  '0401': 'ar-sa',
  '0402': 'bg-bg',
  '0403': 'ca-es',
  '0404': 'zh-tw',
  '0405': 'cs-cz',
  '0406': 'da-dk',
  '0407': 'de-de',
  '0408': 'el-gr',
  '0409': 'en-us',
  '040B': 'fi-fi',
  '040C': 'fr-fr',
  '040D': 'he-il',
  '040E': 'hu-hu',
  '040F': 'is-is',
  '0410': 'it-it',
  '0411': 'ja-jp',
  '0412': 'ko-kr',
  '0413': 'nl-nl',
  '0414': 'nb-no',
  '0415': 'pl-pl',
  '0416': 'pt-br',
  '0418': 'ro-ro',
  '0419': 'ru-ru',
  '041A': 'hr-hr',
  '041B': 'sk-sk',
  '041C': 'sq-al',
  '041D': 'sv-se',
  '041E': 'th-th',
  '041F': 'tr-tr',
  '0420': 'ur-pk',
  '0421': 'id-id',
  '0422': 'uk-ua',
  '0423': 'be-by',
  '0424': 'sl-si',
  '0425': 'et-ee',
  '0426': 'lv-lv',
  '0427': 'lt-lt',
  '0429': 'fa-ir',
  '042A': 'vi-vn',
  '042B': 'hy-am',
  '042C': 'az-latn-az',
  '042D': 'eu-es',
  '042F': 'mk-mk',
  '0432': 'tn-za',
  '0434': 'xh-za',
  '0435': 'zu-za',
  '0436': 'af-za',
  '0437': 'ka-ge',
  '0439': 'hi-in',
  '043A': 'mt-mt',
  '043E': 'ms-my',
  '043F': 'kk-kz',
  '0440': 'ky-kg',
  '0441': 'sw-ke',
  '0442': 'tk-tm',
  '0443': 'uz-latn-uz',
  '0444': 'tt-ru',
  '0445': 'bn-in',
  '0446': 'pa-in',
  '0447': 'gu-in',
  '0448': 'or-in',
  '0449': 'ta-in',
  '044A': 'te-in',
  '044B': 'kn-in',
  '044C': 'ml-in',
  '044D': 'as-in',
  '044E': 'mr-in',
  '0450': 'mn-mn',
  '0452': 'cy-gb',
  '0453': 'km-kh',
  '0456': 'gl-es',
  '0457': 'kok-in',
  '045B': 'si-lk',
  '045E': 'am-et',
  '0461': 'ne-np',
  '0463': 'ps-af',
  '0464': 'fil-ph',
  '0468': 'ha-latn-ng',
  '046A': 'yo-ng',
  '046C': 'nso-za',
  '046E': 'lb-lu',
  '0470': 'ig-ng',
  '0480': 'ug-cn',
  '0481': 'mi-nz',
  '0487': 'rw-rw',
  '0488': 'wo-sn',
  '048C': 'prs-af',
  '0491': 'gd-gb',
  '0804': 'zh-cn',
  '0803': 'ca-es-valencia',
  '0814': 'nn-no',
  '0816': 'pt-pt',
  '083C': 'ga-ie',
  '0845': 'bn-bd',
  '0859': 'sd-arab-pk',
  '0C0A': 'es-es',
  '0C1A': 'sr-cyrl-cs',
  '0C6B': 'quz-pe',
  '141A': 'bs-latn-ba',
  '201A': 'sr-cyrl-ba',
  '241A': 'sr-latn-rs',
  '281A': 'sr-cyrl-rs',
};

/** Office 2016 as the catalog names it (per edition), with its languages, patch codes and the KBs of its patches. */
export function officeProducts(apps: PsApp[]): {
  products: { name: string; version?: string; languages: string[]; patches: string[] }[];
  kbs: string[];
  patchKeys: Set<string>;
} {
  const byArch = new Map<string, { version?: string; languages: Set<string>; patches: Set<string> }>();
  const edition = (bit: string) => {
    let e = byArch.get(bit);
    if (!e) byArch.set(bit, (e = { languages: new Set(), patches: new Set() }));
    return e;
  };
  const kbs = new Set<string>();
  const patchKeys = new Set<string>();
  for (const a of apps) {
    const key = a.PSChildName?.trim() ?? '';
    const patch = OFFICE_PATCH.exec(key);
    if (patch) {
      patchKeys.add(key);
      edition(patch[2]!).patches.add(patch[3]!.toUpperCase());
      const kb = /\(KB(\d{4,8})\)/i.exec(a.DisplayName ?? '')?.[1];
      if (kb) kbs.add(kb);
      continue;
    }
    const product = OFFICE_PRODUCT.exec(key);
    if (!product) continue;
    const e = edition(product[2]!);
    const lcid = product[1]!.toUpperCase();
    if (lcid === '0000') {
      const v = a.DisplayVersion?.trim();
      if (v && /^\d+(\.\d+){0,3}$/.test(v)) e.version = v;
    } else {
      const tag = OFFICE_LCIDS[lcid];
      if (tag) e.languages.add(tag);
    }
  }
  const products = [...byArch].sort().map(([bit, e]) => ({
    name: `Microsoft Office 2016 (${bit === '1' ? '64' : '32'}-bit edition)`,
    ...(e.version ? { version: e.version } : {}),
    languages: [...e.languages].sort(),
    patches: [...e.patches].sort(),
  }));
  return { products, kbs: [...kbs].sort(), patchKeys };
}

export function windowsProvider(): InventoryProvider {
  return {
    name: 'windows',
    collect(signal) {
      return new Promise((resolve, reject) => {
        execFile(
          'powershell.exe',
          ['-NoProfile', '-NonInteractive', '-Command', POWERSHELL_SCRIPT],
          { maxBuffer: 64 * 1024 * 1024, timeout: 300_000, ...(signal ? { signal } : {}) },
          (err, stdout) => {
            if (err) return reject(new Error(`PowerShell inventory failed: ${err.message}`));
            try {
              resolve(parseWindowsInventory(JSON.parse(stdout)));
            } catch (e) {
              reject(e as Error);
            }
          },
        );
      });
    },
  };
}
