import { readFile } from 'node:fs/promises';
import { basename } from 'node:path';
import { ConfigError, configHelp, loadConfig } from '../node/config.js';
import { VERSION } from '../node/version.js';
import { generateKeys, loadPublicKey, keyIdOf, parseSignature, sha256File, verifySignature } from '../catalog/signing.js';
import { describeError, AppError } from '../lib/errors.js';
import { closest, parseCommand, usageOf, UsageError, wantsHelp } from '../lib/args.js';
import {
  BACKUP_HELP,
  CATALOG_BUILD_HELP,
  CATALOG_HELP,
  CATALOG_IMPORT_HELP,
  CATALOG_SIGN_HELP,
  CATALOG_VERIFY_HELP,
  CONTENT_HELP,
  DEMO_HELP,
  KEYS_HELP,
  RESTORE_HELP,
  SIMULATE_HELP,
} from './help.js';
import { Progress } from './progress.js';

const USAGE = `patchtree ${VERSION}: patch distribution server

Usage:
  patchtree serve [options]                 run a node (patchtree serve --help lists the options)
  patchtree keys generate --out DIR         make a publisher key pair (publisher.key, publisher.pub)
  patchtree catalog build --cvrf FILE... [--wsus FILE...] --version V --out FILE [--sign KEYFILE] [--publisher NAME]
  patchtree catalog sign FILE --key KEYFILE         check a catalog made by another tool and sign it
  patchtree catalog verify FILE --key PUBFILE [--signature SIGFILE]
  patchtree catalog import FILE --server URL --token T [--signature SIGFILE]
  patchtree content status --server URL --token T [--watch] [--json]
  patchtree simulate --server URL --enrollment-token T --computers N [--seed S] [--concurrency C] [--prefix P]
  patchtree agent run|status|task|log|clear-retries|update-data ...   the agent (patchtree agent help)
  patchtree demo [--keep] [--computers N]   a root and three sites on this machine, with simulated computers
  patchtree backup --data DIR --out FILE [--with-content]   a consistent copy of a node's data folder (running or not)
  patchtree restore --from FILE --data DIR  a backup into a new data folder (the node's children then resync)
  patchtree --version

patchtree COMMAND --help says more about each.`;

/** Flags that take several values in a row (`--cvrf a.xml b.xml`), as well as repeated. */
function expandMulti(args: readonly string[], multi: readonly string[]): string[] {
  const out: string[] = [];
  let current: string | null = null;
  for (const a of args) {
    if (a.startsWith('--')) {
      current = multi.includes(a) ? a : null;
      out.push(a);
    } else if (current && out[out.length - 1] !== current) {
      out.push(current, a);
    } else {
      out.push(a);
    }
  }
  return out;
}

function fail(message: string): never {
  throw new UsageError(message);
}

async function serve(args: string[]): Promise<number> {
  if (wantsHelp(args)) {
    console.log(`patchtree serve [options]\n\nRuns a node: its HTTP API and console, the agents' API, and gRPC for its children.\n\n${configHelp()}`);
    return 0;
  }
  const config = loadConfig(args);
  // The server's modules only when a node runs: help, --version and the client commands start at once.
  const { PatchtreeNode } = await import('../node/node.js');
  const node = new PatchtreeNode(config);
  await node.start();
  await new Promise<void>((resolve) => {
    const stop = (signal: string) => {
      node.logger.info({ signal }, 'stopping');
      process.off('SIGINT', onInt);
      process.off('SIGTERM', onTerm);
      node.stop().then(resolve, resolve);
    };
    const onInt = () => stop('SIGINT');
    const onTerm = () => stop('SIGTERM');
    process.on('SIGINT', onInt);
    process.on('SIGTERM', onTerm);
  });
  return 0;
}

async function keys(args: string[]): Promise<number> {
  const [sub, ...rest] = args;
  if (sub === undefined || wantsHelp([sub]) || sub === 'help') return help(KEYS_HELP, sub);
  if (sub !== 'generate') fail(`unknown command "keys ${sub}": patchtree keys generate --out DIR`);
  const a = parseCommand({ name: 'patchtree keys generate', help: KEYS_HELP, options: { out: { type: 'string' } } }, rest);
  if (!a) return 0;
  if (!a.values.out) fail('--out DIR is required (patchtree keys generate --help)');
  const r = await generateKeys(a.values.out);
  console.log(JSON.stringify({ privateKey: r.keyFile, publicKey: r.pubFile, keyId: r.keyId }, null, 2));
  return 0;
}

/** Prints a group's help: on stdout with exit 0 when asked for, on stderr with exit 2 when no subcommand was given. */
function help(text: string, asked: string | undefined): number {
  if (asked === undefined) {
    console.error(text);
    return 2;
  }
  console.log(text);
  return 0;
}

async function catalog(args: string[]): Promise<number> {
  const [sub, ...rest] = args;
  if (sub === undefined || wantsHelp([sub]) || sub === 'help') return help(CATALOG_HELP, sub);
  if (sub === 'build') {
    const a = parseCommand(
      {
        name: 'patchtree catalog build',
        help: CATALOG_BUILD_HELP,
        options: {
          cvrf: { type: 'string', multiple: true },
          wsus: { type: 'string', multiple: true },
          version: { type: 'string' },
          out: { type: 'string' },
          sign: { type: 'string' },
          publisher: { type: 'string' },
        },
      },
      expandMulti(rest, ['--cvrf', '--wsus']),
    );
    if (!a) return 0;
    const { values } = a;
    const progress = new Progress();
    if (!values.version) fail('--version V is required (patchtree catalog build --help)');
    if (!values.out) fail('--out FILE is required (patchtree catalog build --help)');
    const { buildCatalog } = await import('../catalog/build.js');
    const summary = await buildCatalog({
      cvrf: values.cvrf ?? [],
      wsus: values.wsus ?? [],
      version: values.version,
      out: values.out,
      ...(values.sign ? { sign: values.sign } : {}),
      ...(values.publisher ? { publisher: values.publisher } : {}),
      onProgress: (step) => progress.show(step, true),
    });
    progress.done();
    console.log(JSON.stringify(summary, null, 2));
    return 0;
  }
  if (sub === 'sign') {
    const a = parseCommand({ name: 'patchtree catalog sign', help: CATALOG_SIGN_HELP, options: { key: { type: 'string' } }, positionals: true }, rest);
    if (!a) return 0;
    const file = a.positionals[0] ?? fail('usage: patchtree catalog sign FILE --key KEYFILE');
    if (!a.values.key) fail('--key KEYFILE is required (patchtree catalog sign --help)');
    return (await import('./catalog.js')).signCatalog(file, a.values.key);
  }
  if (sub === 'verify') {
    const a = parseCommand(
      {
        name: 'patchtree catalog verify',
        help: CATALOG_VERIFY_HELP,
        options: { key: { type: 'string', multiple: true }, signature: { type: 'string' } },
        positionals: true,
      },
      rest,
    );
    if (!a) return 0;
    const { values, positionals } = a;
    const file = positionals[0] ?? fail('usage: patchtree catalog verify FILE --key PUBFILE');
    if (!values.key?.length) fail('--key PUBFILE is required (patchtree catalog verify --help)');
    const trusted = new Map();
    for (const k of values.key) {
      const key = await loadPublicKey(k);
      trusted.set(keyIdOf(key), key);
    }
    const sig = parseSignature(await readFile(values.signature ?? `${file}.sig`));
    try {
      const keyId = verifySignature(sig, await sha256File(file), trusted);
      console.log(`OK: ${basename(file)} is signed by key ${keyId}`);
      return 0;
    } catch (err) {
      console.error(`FAILED: ${(err as Error).message}`);
      return 1;
    }
  }
  if (sub === 'import') {
    const a = parseCommand(
      {
        name: 'patchtree catalog import',
        help: CATALOG_IMPORT_HELP,
        options: { server: { type: 'string' }, token: { type: 'string' }, signature: { type: 'string' } },
        positionals: true,
      },
      rest,
    );
    if (!a) return 0;
    const { values, positionals } = a;
    const file = positionals[0] ?? fail('usage: patchtree catalog import FILE --server URL --token T');
    const server = values.server ?? process.env.PATCHTREE_SERVER ?? fail('--server URL is required');
    const token = values.token ?? process.env.PATCHTREE_TOKEN ?? fail('--token T is required');
    return (await import('./catalog.js')).importCatalog(file, values.signature ?? `${file}.sig`, server, token);
  }
  fail(`unknown command "catalog ${sub}"${suggest(sub, ['build', 'sign', 'verify', 'import'])}\n\n${CATALOG_HELP}`);
}

/** "; did you mean X?" when a word is close to one of the choices. */
function suggest(word: string, choices: readonly string[]): string {
  const near = closest(word, choices);
  return near ? `; did you mean "${near}"?` : '';
}

const mb = (n: number): string => `${(n / 1e6).toFixed(1)} MB`;

/** One line of progress: a bar when attached to a terminal. */
export function progressLine(
  s: {
    bytes: number;
    bytesDone: number;
    files: number;
    verified: number;
    pending: number;
    downloading: number;
    failed: number;
    downloader: { state: string; reason: string | null };
  },
  width = 30,
): string {
  const frac = s.bytes > 0 ? Math.min(1, s.bytesDone / s.bytes) : 1;
  const fill = Math.round(frac * width);
  const bar = `[${'#'.repeat(fill)}${'.'.repeat(width - fill)}]`;
  const state = s.downloader.reason ? `${s.downloader.state}: ${s.downloader.reason}` : s.downloader.state;
  return `${bar} ${(frac * 100).toFixed(1).padStart(5)}% ${mb(s.bytesDone)} / ${mb(s.bytes)}  verified ${s.verified}/${s.files}, downloading ${s.downloading}, pending ${s.pending}, failed ${s.failed}  (${state})`;
}

async function content(args: string[]): Promise<number> {
  const [sub, ...rest] = args;
  if (sub === undefined || wantsHelp([sub]) || sub === 'help') return help(CONTENT_HELP, sub);
  if (sub !== 'status') fail(`unknown command "content ${sub}"${suggest(sub, ['status'])}: patchtree content status --server URL --token T`);
  const a = parseCommand(
    {
      name: 'patchtree content status',
      help: CONTENT_HELP,
      options: { server: { type: 'string' }, token: { type: 'string' }, watch: { type: 'boolean' }, json: { type: 'boolean' } },
    },
    rest,
  );
  if (!a) return 0;
  const { values } = a;
  const server = values.server ?? process.env.PATCHTREE_SERVER ?? fail('--server URL is required');
  const token = values.token ?? process.env.PATCHTREE_TOKEN ?? fail('--token T is required');
  const get = async () => {
    const res = await fetch(new URL('/api/v1/content', server), { headers: { authorization: `Bearer ${token}` } });
    if (!res.ok) throw new UsageError(`HTTP ${res.status}: ${await res.text()}`);
    return (await res.json()) as Parameters<typeof progressLine>[0];
  };
  const tty = process.stdout.isTTY && !values.json;
  for (;;) {
    const s = await get();
    const busy = s.pending + s.downloading > 0 && s.downloader.state !== 'paused';
    if (values.json) console.log(JSON.stringify(s, null, 2));
    else if (tty) process.stdout.write(`\r${progressLine(s, Math.max(10, Math.min(40, (process.stdout.columns ?? 100) - 90)))}\x1b[K`);
    else console.log(progressLine(s));
    if (!values.watch || !busy) {
      if (tty) process.stdout.write('\n');
      return s.failed > 0 ? 1 : 0;
    }
    await new Promise((r) => setTimeout(r, tty ? 500 : 5000));
  }
}

async function simulateCmd(args: string[]): Promise<number> {
  const a = parseCommand(
    {
      name: 'patchtree simulate',
      help: SIMULATE_HELP,
      options: {
        server: { type: 'string' },
        'enrollment-token': { type: 'string' },
        computers: { type: 'string' },
        seed: { type: 'string' },
        concurrency: { type: 'string' },
        prefix: { type: 'string' },
      },
    },
    args,
  );
  if (!a) return 0;
  const { values } = a;
  const server = values.server ?? process.env.PATCHTREE_SERVER ?? fail('--server URL is required');
  const token = values['enrollment-token'] ?? process.env.PATCHTREE_ENROLLMENT_TOKEN ?? fail('--enrollment-token T is required');
  const int = (v: string | undefined, name: string, def: number, min: number, max: number) => {
    const n = v === undefined ? def : Number(v);
    if (!Number.isInteger(n) || n < min || n > max) fail(`--${name} must be an integer from ${min} to ${max}`);
    return n;
  };
  const computers = int(values.computers, 'computers', NaN, 1, 10_000_000);
  const tty = process.stderr.isTTY;
  let last = 0;
  const { simulate } = await import('../assessment/simulate.js');
  const r = await simulate({
    server,
    token,
    computers,
    seed: int(values.seed, 'seed', 1, 0, 2 ** 31),
    concurrency: int(values.concurrency, 'concurrency', 16, 1, 1024),
    ...(values.prefix ? { prefix: values.prefix } : {}),
    onProgress: (done, total) => {
      if (tty && (done === total || Date.now() - last > 250)) {
        last = Date.now();
        process.stderr.write(`\rreported ${done}/${total}\x1b[K${done === total ? '\n' : ''}`);
      }
    },
  });
  console.log(JSON.stringify(r, null, 2));
  return r.failed > 0 ? 1 : 0;
}

async function backupCmd(command: 'backup' | 'restore', args: string[]): Promise<number> {
  if (wantsHelp(args)) {
    console.log(command === 'backup' ? BACKUP_HELP : RESTORE_HELP);
    return 0;
  }
  const { backup, restore } = await import('../node/backup.js');
  if (command === 'backup') {
    const { values } = parseCommand(
      { name: 'patchtree backup', help: BACKUP_HELP, options: { data: { type: 'string' }, out: { type: 'string' }, 'with-content': { type: 'boolean' } } },
      args,
    )!;
    if (!values.data) fail('--data DIR is required (patchtree backup --help)');
    if (!values.out) fail('--out FILE is required (patchtree backup --help)');
    console.log(JSON.stringify(await backup({ data: values.data, out: values.out, withContent: Boolean(values['with-content']) }), null, 2));
    return 0;
  }
  const { values } = parseCommand({ name: 'patchtree restore', help: RESTORE_HELP, options: { from: { type: 'string' }, data: { type: 'string' } } }, args)!;
  if (!values.from) fail('--from FILE is required (patchtree restore --help)');
  if (!values.data) fail('--data DIR is required (patchtree restore --help)');
  console.log(JSON.stringify(await restore({ from: values.from, data: values.data }), null, 2));
  return 0;
}

const COMMANDS = ['serve', 'keys', 'catalog', 'content', 'simulate', 'agent', 'demo', 'backup', 'restore', 'help'];

export async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  try {
    switch (command) {
      case 'serve':
        return await serve(rest);
      case 'keys':
        return await keys(rest);
      case 'catalog':
        return await catalog(rest);
      case 'content':
        return await content(rest);
      case 'simulate':
        return await simulateCmd(rest);
      case 'agent':
        return await (await import('../agent/cli.js')).agentCli(rest, VERSION);
      case 'backup':
      case 'restore':
        return await backupCmd(command, rest);
      case 'demo': {
        const a = parseCommand({ name: 'patchtree demo', help: DEMO_HELP, options: { keep: { type: 'boolean' }, computers: { type: 'string' } } }, rest);
        if (!a) return 0;
        const { values } = a;
        const computers = values.computers === undefined ? 200 : Number(values.computers);
        if (!Number.isInteger(computers) || computers < 1 || computers > 100_000) fail('--computers must be an integer from 1 to 100000 (per site)');
        return await (await import('./demo.js')).runDemo({ keep: Boolean(values.keep), computers, out: (l) => console.log(l) });
      }
      case '--version':
      case '-v':
        console.log(VERSION);
        return 0;
      case undefined:
      case '--help':
      case '-h':
      case 'help':
        console.log(USAGE);
        return command === undefined ? 2 : 0;
      default:
        console.error(`unknown command "${command}"${suggest(command, COMMANDS)}\n\n${USAGE}`);
        return 2;
    }
  } catch (err) {
    if (err instanceof ConfigError) {
      console.error(`patchtree: configuration error: ${err.message}`);
      return 2;
    }
    if (err instanceof UsageError || err instanceof AppError) {
      console.error(`patchtree: ${err.message}`);
      return 2;
    }
    if (err instanceof TypeError && 'code' in err && String((err as { code: unknown }).code).startsWith('ERR_PARSE_ARGS')) {
      console.error(`patchtree: ${usageOf(err, [], `patchtree ${command}`).message}`);
      return 2;
    }
    // A request that failed: its cause, and what to do when it is the node's own CA.
    if (err instanceof TypeError && err.message === 'fetch failed') {
      const why = describeError(err);
      const ca = /certificate|self.signed|UNABLE_TO_VERIFY/i.test(why)
        ? "; trust the node's own CA with NODE_EXTRA_CA_CERTS=<data>/tls/ca.pem (the node's data folder)"
        : '';
      console.error(`patchtree: ${why}${ca}`);
      return 1;
    }
    // Expected failures (a port in use, a host that does not resolve, a parent with another CA): one line, no stack.
    const code = (err as { code?: unknown }).code;
    if (typeof code === 'string' && /^E[A-Z]+$/.test(code)) {
      console.error(`patchtree: ${(err as Error).message}`);
      return 1;
    }
    if (err instanceof Error && /^(refusing |--upstream |[^ ]+:\d+: )/.test(err.message)) {
      console.error(`patchtree: ${err.message}`);
      return 1;
    }
    console.error(`patchtree: ${(err as Error).stack ?? err}`);
    return 1;
  }
}
