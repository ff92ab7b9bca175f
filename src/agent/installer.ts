import { spawn } from 'node:child_process';
import { mkdirSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { join, relative } from 'node:path';
import {
  classify,
  combine,
  extractCommand,
  formatExitCode,
  installCommand,
  patchCommand,
  unsigned,
  type Command,
  type Outcome,
} from '../delivery/installers.js';
import type { Assignment } from '../agent-api/assignments.js';

/**
 * Runs an update's install steps: one per file that has an installer, in catalog
 * order, each command line through the shell (`cmd /c` on Windows, `sh -c`
 * elsewhere) in its own process group, with a timeout. An Office cab is expanded
 * into a fresh folder and each .msp it held is given to msiexec. A failed step
 * stops the update; a step that does not apply is skipped (installers.ts).
 *
 * On systems other than Windows a process's exit status has 8 bits, so a stand-in
 * for a Windows tool (tests put recording stand-ins for wusa.exe, dism.exe,
 * expand.exe and msiexec.exe on PATH) may write its full 32-bit exit code to the
 * file named by PATCHTREE_EXIT_CODE_FILE; on Windows that file is never read.
 */

export const EXIT_CODE_ENV = 'PATCHTREE_EXIT_CODE_FILE';

export interface Run {
  code: number | null;
  signal: string | null;
  timedOut: boolean;
  output: string;
}

export interface Step {
  file: string;
  tool: Command['tool'];
  command: string;
  /** Unsigned 32-bit, as Windows reports it; null when the process ended by a signal or the timeout. */
  code: number | null;
  outcome: Outcome;
  output: string;
  why?: string;
}

export interface StepsResult {
  result: 'installed' | 'reboot' | 'not-applicable' | 'failed';
  steps: Step[];
  /** The code that decided: the failing step's, else the last step that applied (else the last step's). */
  code: number | null;
  /** One line per step, for the event and the log: `dism.exe ... -> exit 0x800F081E (not applicable)`. */
  summary: string;
}

export interface RunOptions {
  /** A folder of the agent's own for expanded cabs and the exit-code file. */
  work: string;
  timeoutSeconds: number;
  signal: AbortSignal;
  /** Called before each command runs, and with each step's result as it ends (the patch log). */
  onStep: (c: Command) => void;
  onResult: (s: Step) => void;
}

const OUTCOME_TEXT: Record<Outcome, string> = {
  installed: 'installed',
  'already-installed': 'already installed',
  reboot: 'installed, restart required',
  'not-applicable': 'not applicable',
  failed: 'failed',
};

export function describeStep(s: Step): string {
  const how = s.code === null ? (s.why ?? 'no exit code') : `exit ${formatExitCode(s.code)}`;
  return `${s.command} -> ${how} (${OUTCOME_TEXT[s.outcome]})`;
}

/** Runs the steps of `item`, whose files are at `paths` (absolute, verified). */
export async function runSteps(item: Assignment, paths: readonly string[], o: RunOptions): Promise<StepsResult> {
  const steps: Step[] = [];
  const codes = { successCodes: item.successCodes, rebootCodes: item.rebootCodes };
  const run = async (c: Command, file: string): Promise<Step> => {
    o.onStep(c);
    const r = await runCommand(c.line, o);
    const why = r.timedOut ? `timed out after ${o.timeoutSeconds} s` : r.code === null ? `ended by signal ${r.signal}` : undefined;
    const step: Step = {
      file,
      tool: c.tool,
      command: c.line,
      code: r.code,
      outcome: r.code === null ? 'failed' : classify(c.tool, r.code, codes),
      output: r.output,
      ...(why ? { why } : {}),
    };
    steps.push(step);
    o.onResult(step);
    return step;
  };
  for (const [i, f] of item.files.entries()) {
    if (o.signal.aborted) throw o.signal.reason as Error;
    const installer = f.installer;
    if (!installer) continue;
    const path = paths[i]!;
    if (installer.type !== 'office-cab') {
      if ((await run(installCommand(installer, path), f.name)).outcome === 'failed') break;
      continue;
    }
    // An Office cab: every file into a fresh folder, then each .msp it held.
    const dir = join(o.work, 'extract', f.sha256);
    rmSync(dir, { recursive: true, force: true });
    mkdirSync(dir, { recursive: true });
    try {
      const x = await run(extractCommand(path, dir), f.name);
      if (x.outcome === 'failed') break;
      const msps = readdirSync(dir, { recursive: true, encoding: 'utf8' })
        .filter((name) => name.toLowerCase().endsWith('.msp'))
        .sort()
        .map((name) => join(dir, name));
      if (!msps.length) {
        const none: Step = {
          file: f.name,
          tool: 'msiexec',
          command: `(no .msp in ${f.name})`,
          code: null,
          outcome: 'failed',
          output: '',
          why: `${f.name} held no .msp patch (${readdirSync(dir).length} file(s))`,
        };
        steps.push(none);
        o.onResult(none);
        break;
      }
      let failed = false;
      for (const msp of msps) {
        if ((await run(patchCommand(msp), `${f.name}/${relative(dir, msp)}`)).outcome === 'failed') {
          failed = true;
          break;
        }
      }
      if (failed) break;
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }
  // The expand step is a means, not an install: only the steps that install decide.
  const deciding = steps.filter((s) => s.tool !== 'expand' || s.outcome === 'failed');
  const result = combine(deciding.map((s) => s.outcome));
  const failedStep = steps.find((s) => s.outcome === 'failed');
  const applied = [...deciding].reverse().find((s) => s.outcome !== 'not-applicable');
  const code = (failedStep ?? applied ?? steps[steps.length - 1])?.code ?? null;
  return { result, steps, code, summary: steps.map(describeStep).join('; ') };
}

/** Reads the full exit code a stand-in wrote (decimal, or hex with 0x); null when there is none. */
function exitCodeFile(path: string): number | null {
  let text: string;
  try {
    text = readFileSync(path, 'utf8').trim();
  } catch {
    return null;
  }
  if (/^-?\d+$/.test(text)) return unsigned(Number(text));
  if (/^0x[0-9a-f]{1,8}$/i.test(text)) return unsigned(Number.parseInt(text.slice(2), 16));
  return null;
}

/** One command line through the shell, in its own process group, killed at the timeout or on abort. */
export function runCommand(command: string, o: { work: string; timeoutSeconds: number; signal: AbortSignal }): Promise<Run> {
  const windows = process.platform === 'win32';
  const codeFile = join(o.work, 'step.exitcode');
  rmSync(codeFile, { force: true });
  return new Promise((resolve) => {
    const child = spawn(command, {
      shell: true,
      detached: !windows,
      stdio: ['ignore', 'pipe', 'pipe'],
      env: windows ? process.env : { ...process.env, [EXIT_CODE_ENV]: codeFile },
    });
    let output = '';
    const keep = (b: Buffer) => {
      output = (output + b.toString('utf8')).slice(-1000);
    };
    child.stdout.on('data', keep);
    child.stderr.on('data', keep);
    let timedOut = false;
    const kill = () => {
      try {
        if (windows) child.kill('SIGKILL');
        else process.kill(-child.pid!, 'SIGKILL');
      } catch {
        /* gone */
      }
    };
    const timer = setTimeout(() => {
      timedOut = true;
      kill();
    }, o.timeoutSeconds * 1000);
    const onAbort = () => kill();
    o.signal.addEventListener('abort', onAbort, { once: true });
    child.on('error', (err) => {
      output = err.message;
    });
    child.on('close', (code, sig) => {
      clearTimeout(timer);
      o.signal.removeEventListener('abort', onAbort);
      let full = code === null || timedOut ? null : unsigned(code);
      if (full !== null && !windows) full = exitCodeFile(codeFile) ?? full;
      resolve({ code: full, signal: sig, timedOut, output: output.trim().slice(-500) });
    });
  });
}
