#!/usr/bin/env node
// `npm install` (prepare) and `npm run build`: compiles to dist/ only when a source is
// newer than the last build, so a start after install (npx runs prepare again) begins
// at once. `--force` compiles anyway. tsc builds incrementally (dist/.tsbuildinfo).
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync, statSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const stamp = join(root, 'dist', '.built');
const INPUTS = ['src', 'test', 'bench', 'proto', 'tsconfig.json', 'package.json', 'package-lock.json'];

/** The newest modification time under a path (files only; node_modules and dist skipped). */
function newest(path) {
  if (!existsSync(path)) return 0;
  const st = statSync(path);
  if (!st.isDirectory()) return st.mtimeMs;
  let max = 0;
  for (const e of readdirSync(path, { withFileTypes: true })) {
    if (e.name === 'node_modules' || e.name === 'dist') continue;
    max = Math.max(max, newest(join(path, e.name)));
  }
  return max;
}

const force = process.argv.includes('--force');
const built = existsSync(stamp) ? statSync(stamp).mtimeMs : 0;
const sources = Math.max(...INPUTS.map((p) => newest(join(root, p))));
if (!force && built > sources) {
  console.log('dist/ is current');
  process.exit(0);
}
const started = Date.now();
const tsc = join(root, 'node_modules', 'typescript', 'bin', 'tsc');
const r = spawnSync(process.execPath, [tsc, '-p', join(root, 'tsconfig.json'), '--incremental', '--tsBuildInfoFile', join(root, 'dist', '.tsbuildinfo')], {
  stdio: 'inherit',
});
if (r.status !== 0) process.exit(r.status ?? 1);
writeFileSync(stamp, `${new Date().toISOString()}\n`);
console.log(`compiled to dist/ in ${((Date.now() - started) / 1000).toFixed(1)} s`);
