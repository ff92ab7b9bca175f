/**
 * How soon `npx patchtree serve` is healthy after `npm install` (issue 22): npx runs
 * the package's `prepare` again, which compiles only when a source is newer than the
 * last build (bin/build.mjs). Starts it twice from the repository, as a user would,
 * on a fresh data folder, and prints the time from the command to a 200 from /healthz.
 *
 *   node dist/bench/serve-start.js
 */
import { spawn } from 'node:child_process';
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { ROOT, benchArgs, benchTempDir, onInterrupt, runBench } from './util.js';

async function startOnce(data: string): Promise<number> {
  const t0 = performance.now();
  const child = spawn('npx', ['patchtree', 'serve', '--data', data, '--http-port', '0', '--https-port', '0', '--grpc-port', '0', '--log-format', 'json'], {
    cwd: ROOT,
    stdio: ['ignore', 'pipe', 'inherit'],
    detached: true,
  });
  // Its own process group (npx and the node it starts): a Ctrl-C of the bench does not reach it.
  onInterrupt(() => {
    try {
      process.kill(-child.pid!, 'SIGKILL');
    } catch {
      /* gone already */
    }
  });
  try {
    const port = await new Promise<number>((resolve, reject) => {
      child.on('exit', (c) => reject(new Error(`npx patchtree serve exited ${c}`)));
      createInterface({ input: child.stdout! }).on('line', (l) => {
        try {
          const r = JSON.parse(l) as { msg?: string; http?: number };
          if (r.msg === 'node started') resolve(r.http!);
        } catch {
          /* npm's own lines */
        }
      });
    });
    for (;;) {
      const ok = await fetch(`http://127.0.0.1:${port}/healthz`).then(
        (r) => r.status === 200,
        () => false,
      );
      if (ok) return (performance.now() - t0) / 1000;
      await new Promise((r) => setTimeout(r, 20));
    }
  } finally {
    try {
      process.kill(-child.pid!, 'SIGTERM');
    } catch {
      /* gone */
    }
    await new Promise((r) => setTimeout(r, 300));
  }
}

benchArgs(
  'serve-start',
  `usage: node dist/bench/serve-start.js

How soon \`npx patchtree serve\` is healthy after \`npm install\`: starts it twice from the
repository, as a user would, on a fresh data folder, and prints the time from the command
to a 200 from /healthz. No options.`,
  {},
);

runBench(async () => {
  const dir = await benchTempDir('patchtree-serve-start-');
  try {
    const first = await startOnce(join(dir, 'a'));
    const second = await startOnce(join(dir, 'b'));
    console.log(`npx patchtree serve healthy: first ${first.toFixed(2)} s, second ${second.toFixed(2)} s (goal <= 3 s)`);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
