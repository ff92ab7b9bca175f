#!/usr/bin/env node
// The sources are compiled to dist/ by `npm install` (the `prepare` script).
// The agent runs on every managed computer: it loads only its own modules, not the server's.
const args = process.argv.slice(2);
const run =
  args[0] === 'agent'
    ? import('../dist/src/agent/cli.js').then(async ({ agentCli, agentVersion }) => agentCli(args.slice(1), await agentVersion()))
    : import('../dist/src/cli/main.js').then(({ main }) => main(args));

run.then(
  (code) => {
    process.exitCode = code;
  },
  (err) => {
    console.error(err instanceof Error ? err.message : err);
    process.exitCode = 1;
  },
);
