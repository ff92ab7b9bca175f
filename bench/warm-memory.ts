import { spawn } from 'node:child_process';
import { cpus, freemem } from 'node:os';

/**
 * Touches `gb` GB of memory in short-lived processes (one per core, all of it held at
 * once) and lets it go, so that a bench measures the nodes and not the hypervisor.
 *
 * This machine is a virtual machine (Firecracker, `page_reporting.page_reporting_order=11`
 * on the kernel's command line) whose memory the host backs only when the guest first
 * touches it, and takes back a while after the guest frees it. A first touch then costs
 * the kernel about 12 µs a 4 KB page instead of about 1.5 µs (measured with 8 processes
 * touching 768 MB each, cold then again at once). Thirty nodes touch about 4.7 GiB of fresh
 * pages in a tree's sync (bench/README.md, "the machine's memory"). A real server's memory
 * is always backed.
 *
 * Returns the seconds it took and the kernel's microseconds per fresh page it saw
 * (about 1.5 when the memory was warm already).
 */
export async function warmMemory(gb: number): Promise<{ gb: number; seconds: number; microsPerPage: number }> {
  const n = cpus().length;
  const total = Math.min(gb, (0.7 * freemem()) / 2 ** 30);
  const mbEach = Math.floor((total * 1024) / n);
  const script = `
    const { readFileSync } = require('node:fs');
    const stat = () => { const s = readFileSync('/proc/self/stat', 'utf8'); const f = s.slice(s.lastIndexOf(')') + 2).split(' '); return [Number(f[7]), Number(f[12])]; };
    const mb = Number(process.argv[1]); const keep = []; const [f0, s0] = stat();
    for (let m = 0; m < mb; m += 256) { const b = Buffer.allocUnsafeSlow(Math.min(256, mb - m) * 2 ** 20); b.fill(1); keep.push(b); }
    const [f1, s1] = stat();
    process.stdout.write(JSON.stringify({ faults: f1 - f0, sysTicks: s1 - s0 }));`;
  const t0 = performance.now();
  const results = await Promise.all(
    Array.from(
      { length: n },
      () =>
        new Promise<{ faults: number; sysTicks: number }>((resolve, reject) => {
          const p = spawn(process.execPath, ['-e', script, String(mbEach)], { stdio: ['ignore', 'pipe', 'inherit'] });
          let out = '';
          p.stdout.on('data', (d: Buffer) => (out += d.toString()));
          p.once('error', reject);
          p.once('exit', (code) =>
            code === 0 ? resolve(JSON.parse(out) as { faults: number; sysTicks: number }) : reject(new Error(`warming memory: exit ${code}`)),
          );
        }),
    ),
  );
  const faults = results.reduce((a, r) => a + r.faults, 0);
  const sysMicros = results.reduce((a, r) => a + r.sysTicks, 0) * 10_000; // clock ticks of 10 ms
  return { gb: (mbEach * n) / 1024, seconds: (performance.now() - t0) / 1000, microsPerPage: faults ? sysMicros / faults : 0 };
}
