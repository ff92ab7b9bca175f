import { spawn, type ChildProcess } from 'node:child_process';
import { EventEmitter } from 'node:events';
import { createWriteStream, rmSync } from 'node:fs';
import { mkdtemp, readFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { parseCommand, UsageError, type Options } from '../src/lib/args.js';

/**
 * A bench's arguments, read as the patchtree command reads its own (src/lib/args.ts):
 * `--help` or `-h` prints `help` and exits 0; an unknown option (with the closest one the
 * bench has), a missing value or a stray word is printed on one line, exit 2.
 */
export function benchArgs<O extends Options>(script: string, help: string, options: O) {
  benchName = script;
  try {
    const parsed = parseCommand({ name: `node dist/bench/${script}.js`, help, options }, process.argv.slice(2));
    if (!parsed) process.exit(0);
    return parsed.values;
  } catch (err) {
    if (err instanceof UsageError) usageExit(err.message);
    throw err;
  }
}

/** The running bench's name (benchArgs), for its usage errors. */
let benchName = '';

/** A mistake in how a bench was called: one line on stderr, exit code 2 (not a failure of the bench). */
export function usageExit(message: string): never {
  console.error(benchName ? `bench/${benchName}: ${message}` : message);
  process.exit(2);
}

/** An option's value as a whole number from `min` to `max`, or a usage error naming the option. */
export function wholeNumber(value: string | undefined, option: string, min: number, max = Number.MAX_SAFE_INTEGER): number {
  const n = Number(value);
  if (value === undefined || !/^\d+$/.test(value) || n < min || n > max)
    usageExit(`--${option} takes a whole number ${max === Number.MAX_SAFE_INTEGER ? `of at least ${min}` : `from ${min} to ${max}`}, not '${value}'`);
  return n;
}

/** An option's value as one of `choices`, or a usage error listing them. */
export function oneOf<T extends string>(value: string | undefined, option: string, choices: readonly T[]): T {
  if (!choices.includes(value as T)) usageExit(`--${option} takes ${choices.join(', ')}, not '${value}'`);
  return value as T;
}

/** Scratch folders of the running bench, and what else to undo: done, with its processes stopped, when it is interrupted (Ctrl-C, SIGTERM). */
const benchDirs = new Set<string>();
const benchUndo: (() => void)[] = [];
let trapped = false;

function trapInterrupts(): void {
  if (trapped) return;
  trapped = true;
  for (const sig of ['SIGINT', 'SIGTERM'] as const) process.once(sig, () => interrupted(sig));
}

/** A new scratch folder in the system's temporary folder, removed if the bench is interrupted (its own `finally` removes it otherwise). */
export async function benchTempDir(prefix: string): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), prefix));
  trapInterrupts();
  benchDirs.add(dir);
  return dir;
}

/** Something to undo (synchronously) if the bench is interrupted, before its scratch folders are removed. */
export function onInterrupt(undo: () => void): void {
  trapInterrupts();
  benchUndo.push(undo);
}

function interrupted(sig: NodeJS.Signals): void {
  for (const c of benchProcesses) c.kill('SIGKILL');
  const left: string[] = [];
  for (const undo of benchUndo)
    try {
      undo();
    } catch {
      /* undone already */
    }
  for (const dir of benchDirs)
    try {
      rmSync(dir, { recursive: true, force: true, maxRetries: 3 });
    } catch {
      left.push(dir);
    }
  const folders = left.length ? `; left behind: ${left.join(' ')}` : benchDirs.size ? ' and its scratch folders removed' : '';
  console.error(`interrupted (${sig}): the bench's processes stopped${folders}`);
  process.exit(sig === 'SIGINT' ? 130 : 143);
}

/**
 * A free port below the kernel's ephemeral range (32768 and up on Linux), so that no
 * outgoing connection of a bench's processes takes it between now and a node's start
 * (or its restart after a kill).
 */
let nextPort = 20_000 + Math.floor(Math.random() * 10_000);
export async function freePort(): Promise<number> {
  for (;;) {
    const port = nextPort++;
    const free = await new Promise<boolean>((resolve) => {
      const s = createServer();
      s.once('error', () => resolve(false));
      s.listen(port, '127.0.0.1', () => s.close(() => resolve(true)));
    });
    if (free) return port;
  }
}

/** A process's /proc/PID/stat fields after its name (the name may hold spaces): [0] is the state, [7] minflt, [11] utime, [12] stime. */
async function procStat(pid: number): Promise<string[]> {
  const stat = await readFile(`/proc/${pid}/stat`, 'utf8');
  return stat.slice(stat.lastIndexOf(')') + 2).split(' ');
}

/** CPU time (user + system) a process has used so far, in seconds, from /proc. */
export async function cpuSeconds(pid: number): Promise<number> {
  const fields = await procStat(pid);
  return (Number(fields[11]) + Number(fields[12])) / 100;
}

/** Minor page faults of a process so far (each a fresh page the kernel zeroed or mapped), from /proc. */
export async function minorFaults(pid: number): Promise<number> {
  return Number((await procStat(pid))[7]);
}

/** Peak resident set size (VmHWM) of a process, in MB, from /proc. */
export async function vmHwmMB(pid: number | 'self'): Promise<number> {
  const m = /VmHWM:\s+(\d+) kB/.exec(await readFile(`/proc/${pid}/status`, 'utf8'));
  return m ? Math.round(Number(m[1]) / 1024) : NaN;
}

export const ROOT = fileURLToPath(new URL('../../', import.meta.url));
export const TOKEN = 'bench-admin-token-0123456789';
export const auth = { authorization: `Bearer ${TOKEN}` };
/** Every node process a bench started, to stop at its end. */
export const benchProcesses: ChildProcess[] = [];

export interface Node {
  pid: number;
  url: string;
  grpc: number;
  proc: ChildProcess;
  /** What it was started with (`restartNode` starts it again the same way). */
  args: string[];
  /** The next log record with this message, from now on (its `time` is when the node wrote it). */
  logged(msg: string): Promise<{ time: number } & Record<string, unknown>>;
}

/**
 * Starts `patchtree serve` as a real process on loopback (plaintext), joined to
 * `upstream` when given. BENCH_PROFILE_DIR=dir writes a CPU profile of it there;
 * BENCH_LOG_DIR=dir keeps its log there.
 */
export async function startNode(dir: string, name: string, pub: string, upstream?: Pick<Node, 'url' | 'grpc'>, extra: string[] = []): Promise<Node> {
  const args = [
    join(ROOT, 'bin', 'patchtree.js'),
    'serve',
    '--data',
    join(dir, name),
    '--name',
    name,
    '--http-port',
    '0',
    '--https-port',
    '0',
    '--grpc-port',
    '0',
    '--insecure-http',
    '--http-host',
    '127.0.0.1',
    '--grpc-host',
    '127.0.0.1',
    '--admin-token',
    TOKEN,
    '--trusted-key',
    pub,
    '--insecure',
    ...extra,
  ];
  if (upstream) {
    const tok = (await (
      await fetch(`${upstream.url}/api/v1/hierarchy/join-tokens`, { method: 'POST', headers: { ...auth, 'content-type': 'application/json' }, body: '{}' })
    ).json()) as { token: string };
    args.push('--upstream', `127.0.0.1:${upstream.grpc}`, '--join-token', tok.token);
  }
  return spawnNode(name, args);
}

/** Starts a node again with the arguments it had (the same data folder and join token: it resumes, it does not join again). */
export function restartNode(n: Node, name: string): Promise<Node> {
  return spawnNode(name, n.args);
}

function spawnNode(name: string, args: string[]): Promise<Node> {
  const prof = process.env.BENCH_PROFILE_DIR;
  const proc = spawn(process.execPath, [...(prof ? ['--cpu-prof', '--cpu-prof-dir', prof] : []), ...args], { stdio: ['ignore', 'pipe', 'inherit'] });
  benchProcesses.push(proc);
  const records = new EventEmitter();
  records.setMaxListeners(0);
  const logged = (msg: string) => new Promise<{ time: number } & Record<string, unknown>>((resolve) => records.once(msg, resolve));
  return new Promise((resolve, reject) => {
    proc.on('exit', (c) => reject(new Error(`${name} exited ${c}`)));
    const logDir = process.env.BENCH_LOG_DIR;
    const logFile = logDir ? createWriteStream(join(logDir, `${name}.log`)) : null;
    createInterface({ input: proc.stdout! }).on('line', (l) => {
      logFile?.write(`${l}\n`);
      try {
        const rec = JSON.parse(l) as { msg?: string; http?: number; grpc?: number };
        if (rec.msg) records.emit(rec.msg, rec);
        if (rec.msg === 'node started') resolve({ pid: proc.pid!, url: `http://127.0.0.1:${rec.http}`, grpc: rec.grpc!, proc, args, logged });
      } catch {
        /* not JSON */
      }
    });
  });
}

export async function importCatalog(n: Node, file: string): Promise<void> {
  const form = new FormData();
  form.append('catalog', new Blob([await readFile(file)]), 'c.gz');
  form.append('signature', new Blob([await readFile(`${file}.sig`)]), 'c.gz.sig');
  const res = await fetch(`${n.url}/api/v1/catalog/imports`, { method: 'POST', body: form, headers: auth });
  if (res.status !== 201) throw new Error(`import: ${res.status} ${await res.text()}`);
}

/** Stops every process the bench started and gives them a moment to exit. */
export async function stopBenchProcesses(): Promise<void> {
  for (const c of benchProcesses) c.kill('SIGTERM');
  await new Promise((r) => setTimeout(r, 500));
}

/** Runs a bench's main; on an error, prints it, stops the processes and exits 1. */
export function runBench(main: () => Promise<void>): void {
  main().catch((err) => {
    console.error(err);
    for (const c of benchProcesses) c.kill('SIGTERM');
    process.exit(1);
  });
}
