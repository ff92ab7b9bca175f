import { chmodSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { delimiter, join } from 'node:path';

/**
 * Recording stand-ins for the Windows tools the agent runs (wusa.exe, dism.exe,
 * expand.exe, msiexec.exe): executables of those names in a folder put first on the
 * agent's PATH. Each call appends its argv to `calls.ndjson` and ends with the exit
 * code of the first rule that matches it. A process here exits with 8 bits, so the
 * full 32-bit code is also written where the agent's PATCHTREE_EXIT_CODE_FILE says
 * (src/agent/installer.ts). A rule can make expand.exe put .msp files in its
 * destination, or make a tool wait until a file exists (to watch the agent mid-step).
 */

export const TOOLS = ['wusa.exe', 'dism.exe', 'expand.exe', 'msiexec.exe'] as const;

export interface Rule {
  tool: (typeof TOOLS)[number];
  /** A part of the argv joined by spaces; absent: every call of the tool. */
  match?: string;
  code: number;
  /** expand.exe: file names to create in the destination folder (its last argument). */
  extract?: string[];
  /** Wait (at most 60 s) until this file exists before exiting. */
  waitFor?: string;
}

export interface Call {
  tool: string;
  argv: string[];
}

/** The stand-in itself (CommonJS, so no loader hook of the test runner's takes it for ESM); each tool is a shell wrapper naming itself. */
const SCRIPT = `const fs = require('node:fs');
const path = require('node:path');
const dir = ${'__DIR__'};
const tool = process.argv[2];
const argv = process.argv.slice(3);
fs.appendFileSync(path.join(dir, 'calls.ndjson'), JSON.stringify({ tool, argv }) + '\\n');
const rules = JSON.parse(fs.readFileSync(path.join(dir, 'rules.json'), 'utf8'));
const joined = argv.join(' ');
const rule = rules.find((r) => r.tool === tool && (r.match === undefined || joined.includes(r.match))) || { code: 0 };
for (const name of rule.extract || []) fs.writeFileSync(path.join(argv[argv.length - 1], name), 'patch ' + name);
const done = () => {
  if (process.env.PATCHTREE_EXIT_CODE_FILE) fs.writeFileSync(process.env.PATCHTREE_EXIT_CODE_FILE, String(rule.code));
  process.exit(rule.code === 0 ? 0 : (rule.code & 0xff) || 1);
};
if (rule.waitFor) {
  const until = Date.now() + 60000;
  const poll = () => (fs.existsSync(rule.waitFor) || Date.now() > until ? done() : setTimeout(poll, 50));
  poll();
} else done();
`;

export function installStandins(dir: string, rules: Rule[]) {
  mkdirSync(dir, { recursive: true });
  const script = join(dir, 'standin.cjs');
  writeFileSync(script, SCRIPT.replace('__DIR__', JSON.stringify(dir)));
  for (const tool of TOOLS) {
    const file = join(dir, tool);
    writeFileSync(file, `#!/bin/sh\nunset NODE_OPTIONS\nexec '${process.execPath}' '${script}' '${tool}' "$@"\n`);
    chmodSync(file, 0o755);
  }
  writeFileSync(join(dir, 'rules.json'), JSON.stringify(rules));
  return {
    dir,
    /** PATH with the stand-ins first. */
    path: `${dir}${delimiter}${process.env.PATH ?? ''}`,
    calls(): Call[] {
      const f = join(dir, 'calls.ndjson');
      return existsSync(f)
        ? readFileSync(f, 'utf8')
            .split('\n')
            .filter(Boolean)
            .map((l) => JSON.parse(l) as Call)
        : [];
    },
  };
}
