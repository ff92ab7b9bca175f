import { z } from 'zod';

/**
 * How a file of an update installs on Windows: the installer kinds of the catalog
 * (format 2, docs/catalog-format.md), the exact command lines the agent runs for
 * them, and what each tool's exit codes mean. Shared by the catalog builder (which
 * chooses a kind per file), the node (which stores and replicates it) and the agent
 * (which runs it); it depends on nothing else of the server.
 *
 * Command lines follow Microsoft's documentation of each tool:
 * - wusa.exe `<file.msu> /quiet /norestart`
 * - DISM `/Online /Add-Package /PackagePath:<file.cab> /Quiet /NoRestart`
 * - expand.exe `-F:* <file.cab> <destination>` (Office's WSUS cabs hold .msp patches)
 * - msiexec.exe `/p <patch.msp> /qn /norestart`, `/i <package.msi> /qn /norestart`
 */

export const INSTALLER_TYPES = ['wusa', 'dism', 'office-cab', 'msp', 'msi', 'exe', 'command'] as const;
export type InstallerType = (typeof INSTALLER_TYPES)[number];

/** Arguments and command templates: one line of printable characters. */
const oneLine = (max: number) =>
  z
    .string()
    .max(max)
    // biome-ignore lint/suspicious/noControlCharactersInRegex: refusing control characters is the point
    .regex(/^[^\u0000-\u001f\u007f]*$/, 'one line, no control characters');

export const installerSchema = z.discriminatedUnion('type', [
  z.strictObject({ type: z.literal('wusa') }),
  z.strictObject({ type: z.literal('dism') }),
  z.strictObject({ type: z.literal('office-cab') }),
  z.strictObject({ type: z.literal('msp') }),
  z.strictObject({ type: z.literal('msi') }),
  /** An executable run with the catalog's arguments; its exit codes are the update's `install` codes. */
  z.strictObject({ type: z.literal('exe'), arguments: oneLine(2000) }),
  /** A command line with `{file}` for the file's path (what format 1 had); exit codes as for `exe`. */
  z.strictObject({ type: z.literal('command'), command: oneLine(4000).min(1) }),
]);
export type Installer = z.infer<typeof installerSchema>;

/**
 * A file name the agent may keep on disk and quote in a command line: no path, no
 * quote, no character cmd.exe or sh expands inside double quotes (`%`, `!`, `$`,
 * backquote), no reserved device name, not ending in a dot or a space.
 */
export const FILE_NAME = /^(?!(con|prn|aux|nul|com\d|lpt\d)(\.|$))[A-Za-z0-9_(][A-Za-z0-9 ._()+,=@#~-]{0,254}(?<![. ])$/i;

/** The kind the builder gives a file, from its extension and product; null: none known (an .exe without known arguments). */
export function installerFor(fileName: string, o: { office: boolean; exeArguments?: string | null }): Installer | null {
  const ext = fileName.toLowerCase().split('.').pop();
  switch (ext) {
    case 'msu':
      return { type: 'wusa' };
    case 'cab':
      return o.office ? { type: 'office-cab' } : { type: 'dism' };
    case 'msp':
      return { type: 'msp' };
    case 'msi':
      return { type: 'msi' };
    case 'exe':
      return o.exeArguments ? { type: 'exe', arguments: o.exeArguments } : null;
    default:
      return null;
  }
}

/** Format 1's command templates, as its builder wrote them: a file with one of these installs as that kind. */
const V1_TEMPLATES: Record<string, { ext: string; installer: Installer }> = {
  'wusa.exe "{file}" /quiet /norestart': { ext: 'msu', installer: { type: 'wusa' } },
  'dism.exe /online /add-package /packagepath:"{file}" /quiet /norestart': { ext: 'cab', installer: { type: 'dism' } },
  'msiexec.exe /p "{file}" /qn /norestart': { ext: 'msp', installer: { type: 'msp' } },
};

/**
 * A format-1 update's command (run once per file) as a file's installer: the kind
 * whose command line it is, else the command itself; none when it was empty.
 */
export function installerFromV1(command: string, fileName: string): Installer | null {
  if (!command) return null;
  const known = V1_TEMPLATES[command];
  if (known && fileName.toLowerCase().endsWith(`.${known.ext}`)) return known.installer;
  return { type: 'command', command };
}

/** The tool a command line runs, which decides what its exit codes mean. */
export type Tool = 'wusa' | 'dism' | 'expand' | 'msiexec' | 'catalog';

export interface Command {
  tool: Tool;
  line: string;
}

const q = (path: string) => `"${path}"`;

/** The command line that installs one file (absolute path); `office-cab` is two stages (see extractCommand, patchCommand). */
export function installCommand(installer: Exclude<Installer, { type: 'office-cab' }>, file: string): Command {
  switch (installer.type) {
    case 'wusa':
      return { tool: 'wusa', line: `wusa.exe ${q(file)} /quiet /norestart` };
    case 'dism':
      return { tool: 'dism', line: `dism.exe /online /add-package /packagepath:${q(file)} /quiet /norestart` };
    case 'msp':
      return patchCommand(file);
    case 'msi':
      return { tool: 'msiexec', line: `msiexec.exe /i ${q(file)} /qn /norestart` };
    case 'exe':
      return { tool: 'catalog', line: `${q(file)}${installer.arguments ? ` ${installer.arguments}` : ''}` };
    case 'command':
      return { tool: 'catalog', line: installer.command.replaceAll('{file}', file) };
  }
}

/** An Office cab's first stage: every file of the cab into `dir`. */
export function extractCommand(file: string, dir: string): Command {
  return { tool: 'expand', line: `expand.exe -F:* ${q(file)} ${q(dir)}` };
}

/** An .msp patch (alone, or each one an Office cab held). */
export function patchCommand(msp: string): Command {
  return { tool: 'msiexec', line: `msiexec.exe /p ${q(msp)} /qn /norestart` };
}

export type Outcome = 'installed' | 'already-installed' | 'reboot' | 'not-applicable' | 'failed';

/** Exit codes by name (Windows error and HRESULT values, as unsigned 32-bit). */
export const EXIT = {
  SUCCESS: 0,
  /** ERROR_SUCCESS_REBOOT_INITIATED */
  REBOOT_INITIATED: 1641,
  /** ERROR_PATCH_TARGET_NOT_FOUND: msiexec found no product the patch applies to. */
  PATCH_TARGET_NOT_FOUND: 1642,
  /** ERROR_SUCCESS_REBOOT_REQUIRED */
  REBOOT_REQUIRED: 3010,
  /** WU_S_REBOOT_REQUIRED (wusa) */
  WU_S_REBOOT_REQUIRED: 0x00240005,
  /** WU_S_ALREADY_INSTALLED (wusa) */
  WU_S_ALREADY_INSTALLED: 0x00240006,
  /** WU_E_NOT_APPLICABLE (wusa) */
  WU_E_NOT_APPLICABLE: 0x80240017,
  /** CBS_E_NOT_APPLICABLE (DISM): the package is not for this Windows (e.g. the .NET 4.8 cab on a 4.8.1 computer). */
  CBS_E_NOT_APPLICABLE: 0x800f081e,
} as const;

const TABLE: Record<Exclude<Tool, 'catalog'>, { reboot: number[]; already: number[]; notApplicable: number[] }> = {
  wusa: {
    reboot: [EXIT.REBOOT_REQUIRED, EXIT.REBOOT_INITIATED, EXIT.WU_S_REBOOT_REQUIRED],
    already: [EXIT.WU_S_ALREADY_INSTALLED],
    notApplicable: [EXIT.WU_E_NOT_APPLICABLE],
  },
  dism: { reboot: [EXIT.REBOOT_REQUIRED, EXIT.REBOOT_INITIATED], already: [], notApplicable: [EXIT.CBS_E_NOT_APPLICABLE] },
  msiexec: { reboot: [EXIT.REBOOT_REQUIRED, EXIT.REBOOT_INITIATED], already: [], notApplicable: [EXIT.PATCH_TARGET_NOT_FOUND] },
  expand: { reboot: [], already: [], notApplicable: [] },
};

/** An exit code as Windows reports it: unsigned 32-bit (a negative HRESULT from some tools is the same value). */
export const unsigned = (code: number): number => code >>> 0;

/** `0x80240017` for HRESULT-like codes, the decimal number for small ones. */
export function formatExitCode(code: number): string {
  const u = unsigned(code);
  return u > 0xffff ? `0x${u.toString(16).toUpperCase().padStart(8, '0')}` : String(u);
}

/**
 * What a tool's exit code means. The catalog's own codes (`successCodes`,
 * `rebootCodes` of the update) decide for `exe` and `command` steps; every other
 * code is a failure.
 */
export function classify(tool: Tool, code: number, catalog: { successCodes: readonly number[]; rebootCodes: readonly number[] }): Outcome {
  const u = unsigned(code);
  if (tool === 'catalog') {
    if (catalog.successCodes.some((c) => unsigned(c) === u)) return 'installed';
    if (catalog.rebootCodes.some((c) => unsigned(c) === u)) return 'reboot';
    return 'failed';
  }
  const t = TABLE[tool];
  if (u === EXIT.SUCCESS) return 'installed';
  if (t.reboot.includes(u)) return 'reboot';
  if (t.already.includes(u)) return 'already-installed';
  if (t.notApplicable.includes(u)) return 'not-applicable';
  return 'failed';
}

/**
 * An update's result from its steps' outcomes, in order: a failure decides (the
 * steps after it do not run); otherwise installed (restart required when a step
 * said so) if any step applied, not applicable if none did.
 */
export function combine(outcomes: readonly Outcome[]): 'installed' | 'reboot' | 'not-applicable' | 'failed' {
  if (outcomes.includes('failed')) return 'failed';
  if (outcomes.includes('reboot')) return 'reboot';
  if (outcomes.some((o) => o === 'installed' || o === 'already-installed')) return 'installed';
  return 'not-applicable';
}
