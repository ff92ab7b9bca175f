import { existsSync, statSync, watch } from 'node:fs';
import { open, readFile } from 'node:fs/promises';
import { closest, parseCommand, usageOf, UsageError, wantsHelp, type Command, type Options } from '../lib/args.js';
import { AGENT_USAGE, CLEAR_RETRIES_HELP, LOG_HELP, RUN_HELP, STATUS_HELP, TASK_HELP, UPDATE_DATA_HELP } from './cli-help.js';
import { Agent, TASKS } from './agent.js';
import { controlRequest, NotRunning, Refused } from './control.js';
import { inventoryProvider } from './inventory.js';
import { PatchLog } from './log.js';
import { AgentStore, readCredentials } from './store.js';
import { fetchTrusting, readPinnedCa } from './trust.js';
import { updateStatuses, type Progress, type UpdateStatus } from './status.js';
import type { Assignments } from '../agent-api/assignments.js';

/** The package version, read without loading the server's modules. */
export async function agentVersion(): Promise<string> {
  const pkg = JSON.parse(await readFile(new URL('../../../package.json', import.meta.url), 'utf8')) as { version: string };
  return pkg.version;
}

const need = (v: string | undefined, flag: string): string => {
  if (!v) throw new UsageError(`${flag} is required\n\n${AGENT_USAGE}`);
  return v;
};

function int(v: string | undefined, flag: string, def: number, min: number, max: number): number {
  const n = v === undefined ? def : Number(v);
  if (!Number.isInteger(n) || n < min || n > max) throw new UsageError(`${flag} must be an integer from ${min} to ${max}`);
  return n;
}

/** `patchtree agent ...`; returns the exit code. */
export { AGENT_USAGE };

/** Parses a subcommand's arguments (null: its help was printed). */
function parse<O extends Options>(name: string, help: string, options: O, args: readonly string[], positionals = false) {
  const cmd: Command<O> = { name: `patchtree agent ${name}`, help, options, positionals };
  return parseCommand(cmd, args);
}

const SUBCOMMANDS = ['run', 'status', 'task', 'log', 'clear-retries', 'update-data', 'help'];

export async function agentCli(args: string[], version: string): Promise<number> {
  const [sub, ...rest] = args;
  try {
    switch (sub) {
      case 'help':
      case '--help':
      case '-h':
        console.log(AGENT_USAGE);
        return 0;
      case 'run':
        return await run(rest, version);
      case 'status':
        return await status(rest);
      case 'task':
        return await task(rest);
      case 'log':
        return await log(rest);
      case 'clear-retries':
        return await clearRetries(rest);
      case 'update-data': {
        const a = parse('update-data', UPDATE_DATA_HELP, { state: { type: 'string' } }, rest);
        if (!a) return 0;
        const { values } = a;
        const r = await controlRequest(need(values.state, '--state'), { cmd: 'update-data' });
        console.log(JSON.stringify(r, null, 2));
        return 0;
      }
      default: {
        const near = sub === undefined ? null : closest(sub, SUBCOMMANDS);
        console.error(`${sub === undefined ? '' : `unknown command "agent ${sub}"${near ? `; did you mean "${near}"?` : ''}\n\n`}${AGENT_USAGE}`);
        return 2;
      }
    }
  } catch (err) {
    if (err instanceof UsageError || err instanceof NotRunning || err instanceof Refused) {
      console.error(`patchtree agent: ${err.message}`);
      return 2;
    }
    if (err instanceof TypeError && String((err as { code?: string }).code ?? '').startsWith('ERR_PARSE_ARGS')) {
      console.error(`patchtree agent: ${usageOf(err, [], `patchtree agent ${sub}`).message}`);
      return 2;
    }
    console.error(`patchtree agent: ${(err as Error).message}`);
    return 1;
  }
}

async function run(args: string[], version: string): Promise<number> {
  const a = parse(
    'run',
    RUN_HELP,
    {
      server: { type: 'string' },
      state: { type: 'string' },
      'enrollment-token': { type: 'string' },
      inventory: { type: 'string' },
      name: { type: 'string' },
      interval: { type: 'string' },
      'install-timeout': { type: 'string' },
      insecure: { type: 'boolean' },
    },
    args,
  );
  if (!a) return 0;
  const { values } = a;
  const state = need(values.state, '--state');
  const creds = readCredentials(state);
  const url = values.server ?? creds?.server;
  if (url) {
    let parsed: URL;
    try {
      parsed = new URL(url);
    } catch {
      throw new UsageError(`invalid --server ${JSON.stringify(url)}: give the node's address as https://HOST:8443`);
    }
    // The agent runs what the node assigns as administrator: plaintext only when asked for, for a lab.
    // (An agent enrolled before HTTPS existed keeps its saved address; `agent status` and the log say so.)
    if (parsed.protocol === 'http:' && !values.insecure && !creds)
      throw new UsageError(`--server ${url} is plain HTTP: give the node's HTTPS address (https://${parsed.hostname}:8443), or --insecure for a lab`);
    if (parsed.protocol !== 'http:' && parsed.protocol !== 'https:') throw new UsageError(`invalid --server ${url}: give https://HOST:8443`);
  }
  const server = values.server ?? creds?.server;
  const inventory = values.inventory ?? (process.platform === 'win32' ? 'windows' : undefined);
  const agent = new Agent({
    server: need(server, '--server'),
    state,
    enrollmentToken: values['enrollment-token'] ?? process.env.PATCHTREE_ENROLLMENT_TOKEN,
    inventory: inventoryProvider(need(inventory, '--inventory')),
    name: values.name,
    intervalSeconds: int(values.interval, '--interval', 300, 1, 86_400),
    installTimeoutSeconds: int(values['install-timeout'], '--install-timeout', 7200, 1, 7 * 86_400),
    insecure: Boolean(values.insecure),
    version,
  });
  let stopping: Promise<void> | null = null;
  const stop = () => {
    stopping ??= agent.stop();
  };
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
  await agent.run();
  await stopping;
  return 0;
}

/** The running agent's status, or what its state dir says when it is not running. */
async function status(args: string[]): Promise<number> {
  const a = parse('status', STATUS_HELP, { state: { type: 'string' }, json: { type: 'boolean' } }, args);
  if (!a) return 0;
  const { values } = a;
  const state = need(values.state, '--state');
  let s: Record<string, unknown>;
  try {
    s = await controlRequest(state, { cmd: 'status' });
  } catch (err) {
    if (!(err instanceof NotRunning)) throw err;
    const creds = readCredentials(state);
    if (!creds && !existsSync(state)) throw new UsageError(`no agent state in ${state}`);
    const store = new AgentStore(state);
    try {
      s = {
        agentId: creds?.agentId ?? null,
        server: creds?.server ?? null,
        running: false,
        task: null,
        lastScan: store.get('lastScan'),
        lastCheckIn: store.get('lastCheckIn'),
        assignments: store.get<{ body: Assignments }>('assignments')?.body.items.length ?? 0,
        waitingForFiles: store.get<{ body: Assignments }>('assignments')?.body.waitingForFiles ?? 0,
        eventsQueued: store.queued(),
        retries: store.allCounters().filter((c) => c.download > 0 || c.install > 0),
        lastError: store.get<string>('lastError'),
        updates: updateStatuses(store.get<{ body: Assignments }>('assignments')?.body ?? null, store.get<Record<string, Progress>>('progress') ?? {}),
      };
    } finally {
      store.close();
    }
  }
  if (values.json) {
    console.log(JSON.stringify(s, null, 2));
    return 0;
  }
  const scan = s.lastScan as { at: string; required: number; bySeverity: Record<string, number> } | null;
  const t = s.task as { name: string; step: string; startedAt: string } | null;
  console.log(`agent ${s.agentId ?? '(not enrolled)'} on ${s.server ?? '?'}: ${s.running ? 'running' : 'not running'}`);
  console.log(`task: ${t ? `${t.name} since ${t.startedAt} (${t.step})` : 'none'}`);
  console.log(
    `last scan: ${
      scan
        ? `${scan.at}: ${scan.required} required (${
            Object.entries(scan.bySeverity)
              .map(([k, v]) => `${k} ${v}`)
              .join(', ') || 'none'
          })`
        : 'never'
    }`,
  );
  const updates = (s.updates ?? []) as UpdateStatus[];
  const waiting = updates.filter((u) => u.state === 'waiting').length;
  console.log(
    `last check-in: ${s.lastCheckIn ?? 'never'}; assignments: ${s.assignments}${waiting ? ` (and ${waiting} waiting)` : ''}; events queued: ${s.eventsQueued}`,
  );
  if (s.lastError) console.log(`last error: ${s.lastError}`);
  for (const u of updates) {
    const name = u.kb ? `KB${u.kb}` : u.updateId;
    const why = u.waitingFor ? (u.waitingFor.startsWith('nothing:') ? ` (${u.waitingFor.slice(9)})` : ` waiting for ${u.waitingFor}`) : '';
    console.log(`  ${name.padEnd(10)} ${u.state.padEnd(15)}${why}${u.lastError ? `; last error: ${u.lastError}` : ''}`);
  }
  if (!updates.length)
    console.log(
      s.lastCheckIn
        ? 'nothing is assigned to this computer: no policy delivers an update it requires (see docs/agent.md, "When nothing installs")'
        : 'no check-in yet',
    );
  for (const r of s.retries as { updateId: string; download: number; install: number }[])
    console.log(`retries: ${r.updateId}: ${r.download} failed download(s), ${r.install} failed install(s)`);
  return 0;
}

async function task(args: string[]): Promise<number> {
  const [verb, ...rest] = args;
  if (verb === undefined || wantsHelp([verb])) {
    if (verb === undefined) throw new UsageError(`give a task command\n\n${TASK_HELP}`);
    console.log(TASK_HELP);
    return 0;
  }
  const a = parse(`task ${verb}`, TASK_HELP, { state: { type: 'string' } }, rest, true);
  if (!a) return 0;
  const { values, positionals } = a;
  if (!['list', 'run', 'stop'].includes(verb))
    throw new UsageError(`unknown command "agent task ${verb}": patchtree agent task list | run NAME | stop --state DIR`);
  const state = need(values.state, '--state');
  switch (verb) {
    case 'list': {
      let tasks: { name: string; description: string; schedule: string; running: boolean }[];
      try {
        tasks = await controlRequest(state, { cmd: 'tasks' });
      } catch (err) {
        if (!(err instanceof NotRunning)) throw err;
        tasks = Object.entries(TASKS).map(([name, t]) => ({ name, description: t.description, schedule: t.schedule, running: false }));
      }
      for (const t of tasks) console.log(`${t.name.padEnd(8)} ${t.running ? '[running] ' : ''}${t.description}; runs ${t.schedule}, or by hand`);
      return 0;
    }
    case 'run': {
      const name = need(positionals[0], 'NAME');
      const r = await controlRequest<{ started: string }>(state, { cmd: 'run', task: name });
      console.log(`task ${r.started} started; follow it with: patchtree agent log --state ${state} --follow`);
      return 0;
    }
    case 'stop': {
      const r = await controlRequest<{ stopped: string | null; message: string }>(state, { cmd: 'stop' });
      console.log(r.message);
      return 0;
    }
    default:
      throw new UsageError(`patchtree agent task list | run NAME | stop --state DIR`);
  }
}

async function log(args: string[]): Promise<number> {
  const a = parse('log', LOG_HELP, { state: { type: 'string' }, follow: { type: 'boolean' }, clear: { type: 'boolean' } }, args);
  if (!a) return 0;
  const { values } = a;
  const l = new PatchLog(need(values.state, '--state'));
  if (values.clear) {
    l.clear('by user');
    console.log('patch log cleared');
    return 0;
  }
  process.stdout.write(l.read());
  if (!values.follow) return 0;
  // Follow: print what is appended (and start over when the log is rotated or cleared).
  let pos = existsSync(l.file) ? statSync(l.file).size : 0;
  const more = async () => {
    if (!existsSync(l.file)) return;
    const size = statSync(l.file).size;
    if (size < pos) pos = 0;
    if (size === pos) return;
    const fh = await open(l.file, 'r');
    const buf = Buffer.alloc(size - pos);
    await fh.read(buf, 0, buf.length, pos);
    await fh.close();
    pos = size;
    process.stdout.write(buf);
  };
  const w = watch(l.file.replace(/patch\.log$/, ''), () => void more());
  const t = setInterval(() => void more(), 1000);
  await new Promise<void>((resolve) => {
    const end = () => {
      w.close();
      clearInterval(t);
      resolve();
    };
    process.once('SIGINT', end);
    process.once('SIGTERM', end);
  });
  return 0;
}

async function clearRetries(args: string[]): Promise<number> {
  const a = parse('clear-retries', CLEAR_RETRIES_HELP, { state: { type: 'string' } }, args);
  if (!a) return 0;
  const { values } = a;
  const state = need(values.state, '--state');
  try {
    const r = await controlRequest<{ cleared: number }>(state, { cmd: 'clear-retries', by: 'by user' });
    console.log(`retry counts cleared: ${r.cleared} update(s)`);
    return 0;
  } catch (err) {
    if (!(err instanceof NotRunning)) throw err;
  }
  // Not running: clear here, and tell the node directly.
  const store = new AgentStore(state);
  const l = new PatchLog(state);
  try {
    const n = store.clearCounters();
    l.write(`retry counts cleared (by user, agent not running): ${n} update(s)`);
    const creds = readCredentials(state);
    if (creds) {
      const res = await fetchTrusting(readPinnedCa(state))(new URL('/agent/v1/retries/clear', creds.server), {
        method: 'POST',
        headers: { authorization: `Bearer ${creds.secret}`, 'content-type': 'application/json' },
        body: '{}',
      }).catch((e: Error) => e);
      if (res instanceof Error || !res.ok)
        console.error(`the node was not told (${res instanceof Error ? res.message : `HTTP ${res.status}`}); its counts clear when an admin clears them`);
    }
    console.log(`retry counts cleared: ${n} update(s)`);
    return 0;
  } finally {
    store.close();
  }
}
