import { readFile } from 'node:fs/promises';

/** Peak resident set size (VmHWM) of a process, in MB, from /proc. */
export async function vmHwmMB(pid: number | 'self'): Promise<number> {
  const m = /VmHWM:\s+(\d+) kB/.exec(await readFile(`/proc/${pid}/status`, 'utf8'));
  return m ? Math.round(Number(m[1]) / 1024) : NaN;
}
