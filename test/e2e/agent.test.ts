import t, { type Test } from 'tap';
import { spawn } from 'node:child_process';
import { readFileSync, writeFileSync, existsSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import {
  ADMIN_TOKEN,
  api,
  startAgent,
  header,
  makeKeys,
  runCli,
  sampleUpdate,
  spawnNode,
  tempDir,
  uploadCatalog,
  writeSignedCatalog,
  type NodeProcess,
} from '../helpers.js';
import { startVendor, waitFor, type VendorFile } from '../vendor.js';
import { startProxy } from '../proxy.js';
import { AgentStore, type QueuedEvent } from '../../src/agent/store.js';

const W11 = 'Windows 11 Version 23H2 for x64-based Systems';

/**
 * A node (a real process) with a catalog of updates whose files live on a vendor
 * server and whose installers are shell scripts in the test's directory:
 * `sh <dir>/install-<n>.sh "{file}"`, exit 0 = success, 3 = restart required. An
 * installer that succeeds adds its KB to the agent's inventory file, as a real
 * install changes what the next scan finds.
 */
async function setup(t: Test, sizes: number[]) {
  const dir = await tempDir(t, 'patchtree-agent-');
  const keys = await makeKeys(dir);
  const vendor = await startVendor(t);
  const files: VendorFile[] = sizes.map((s, i) => vendor.add(`/kb${i + 1}.msu`, s));
  const updates = files.map((f, i) =>
    sampleUpdate(i + 1, {
      files: [
        {
          name: f.path.slice(1),
          url: vendor.url(f.path),
          size: f.data.length,
          sha256: f.sha256,
          language: 'neutral',
          installer: { type: 'command', command: `sh ${join(dir, `install-${i + 1}.sh`)} "{file}"` },
        },
      ],
      install: { successCodes: [0], rebootCodes: [3] },
    }),
  );
  const cat = await writeSignedCatalog(dir, keys, 'c.gz', header('v1', updates.length), updates);
  const nodeArgs = ['--data', join(dir, 'node'), '--admin-token', ADMIN_TOKEN, '--trusted-key', keys.pubFile, '--name', 'site'];
  const node = await spawnNode(t, nodeArgs);
  t.equal((await uploadCatalog(node.url, ADMIN_TOKEN, cat.file, cat.sig)).status, 201);
  await api(node.url, ADMIN_TOKEN, '/api/v1/settings/content', { method: 'PUT', body: JSON.stringify({ reserveBytes: 0, retryBaseMs: 50, retryMaxMs: 200 }) });
  const et = await api(node.url, ADMIN_TOKEN, '/api/v1/agents/enrollment-tokens', { method: 'POST', body: JSON.stringify({ name: 'lab' }) });
  const inventory = join(dir, 'inventory.json');
  writeFileSync(
    inventory,
    JSON.stringify({
      os: { family: 'windows', name: W11, version: '10.0.22631.2861', arch: 'x64', language: 'en-us' },
      products: [{ name: W11 }],
      kbs: ['1000'],
    }),
  );
  const installer = (n: number, kind: 'ok' | 'fail' | 'reboot' | 'hang') => {
    const kb = String(5000000 + n);
    const add = `sed -i 's/"kbs":\\[/"kbs":["${kb}",/' '${inventory}'`;
    const body = {
      ok: `${add}\necho "installed ${kb} from $1"\nexit 0`,
      fail: 'echo "error: fatal error during installation" >&2\nexit 2',
      reboot: `${add}\necho "restart needed"\nexit 3`,
      hang: 'sleep 600',
    }[kind];
    writeFileSync(join(dir, `install-${n}.sh`), `#!/bin/sh\n${body}\n`);
  };
  return { dir, node, nodeArgs, files, inventory, installer, enrollmentToken: et.body.token as string, state: join(dir, 'agent') };
}

const patchLog = (state: string) => (existsSync(join(state, 'patch.log')) ? readFileSync(join(state, 'patch.log'), 'utf8') : '');
/** Waits for a line of the patch log; on a timeout the error shows the log's end. */
async function waitLog(state: string, re: RegExp, timeoutMs = 30_000): Promise<RegExpExecArray> {
  try {
    return await waitFor(async () => re.exec(patchLog(state)), `patch log: ${re}`, timeoutMs);
  } catch (err) {
    throw new Error(`${(err as Error).message}\n--- patch log (end) ---\n${patchLog(state).split('\n').slice(-25).join('\n')}`);
  }
}
const agentCli = (...args: string[]) => runCli(['agent', ...args]);

async function computerId(node: NodeProcess): Promise<number> {
  return waitFor(async () => (await api(node.url, ADMIN_TOKEN, '/api/v1/computers')).body.items[0]?.id as number | undefined, 'the computer');
}

async function policy(node: NodeProcess, body: Record<string, unknown>): Promise<string> {
  const r = await api(node.url, ADMIN_TOKEN, '/api/v1/policies', { method: 'POST', body: JSON.stringify({ targets: { all: true }, ...body }) });
  if (r.status !== 201) throw new Error(`policy: ${r.status} ${JSON.stringify(r.body)}`);
  return r.body.id;
}

async function rowState(node: NodeProcess, policyId: string, update: string): Promise<any> {
  return (await api(node.url, ADMIN_TOKEN, `/api/v1/policies/${policyId}/delivery`)).body.items.find((i: any) => i.updateId === update);
}

async function eventTypes(node: NodeProcess, id: number, update: string): Promise<string[]> {
  const r = await api(node.url, ADMIN_TOKEN, `/api/v1/computers/${id}/events?update=${update}&limit=1000`);
  return (r.body.items as { type: string }[]).map((e) => e.type).reverse();
}

/** A window of an hour that opens 12 hours from now, in UTC: closed for the whole test. */
function closedWindow() {
  const at = new Date(Date.now() + 12 * 3_600_000);
  const hhmm = (d: Date) => `${String(d.getUTCHours()).padStart(2, '0')}:${String(d.getUTCMinutes()).padStart(2, '0')}`;
  return {
    mode: 'windows',
    zone: 'UTC',
    windows: [{ days: ['sun', 'mon', 'tue', 'wed', 'thu', 'fri', 'sat'], start: hhmm(at), end: hhmm(new Date(at.getTime() + 3_600_000)) }],
  };
}

t.test('a policy installed end to end: scan, download, install, rescan; tasks, status and the log', async (t) => {
  const s = await setup(t, [3000]);
  s.installer(1, 'ok');
  const agent = startAgent(t, s.node.url, s.state, s.enrollmentToken, s.inventory);
  await waitLog(s.state, /scan: 1 update\(s\) required \(Important 1\)/);
  const mode = (await import('node:fs')).statSync(join(s.state, 'credentials.json')).mode & 0o777;
  t.equal(mode, 0o600, 'credentials kept with mode 0600');
  const st = JSON.parse((await agentCli('status', '--state', s.state, '--json')).stdout);
  t.match(st, { running: true, lastScan: { required: 1, bySeverity: { Important: 1 } } }, 'the scan result, evaluated by the agent');

  const id = await computerId(s.node);
  const p = await policy(s.node, { name: 'Now', updates: ['test-1'], installation: { maintenance: { mode: 'any-time' } } });
  await waitLog(s.state, /KB5000001: installed \(exit code 0\)/);
  await waitFor(async () => (await rowState(s.node, p, 'test-1'))?.state === 'installed', 'installed at the node');
  await waitLog(s.state, /scan: 0 update\(s\) required/);
  t.same(
    (await api(s.node.url, ADMIN_TOKEN, `/api/v1/computers/${id}/updates?state=installed`)).body.items.map((u: any) => u.id),
    ['test-1'],
    'the rescan shows it installed',
  );
  await waitFor(async () => (await eventTypes(s.node, id, 'test-1')).length === 4, 'four events');
  t.same(await eventTypes(s.node, id, 'test-1'), ['download-started', 'download-completed', 'install-started', 'install-succeeded']);
  const log = patchLog(s.state);
  t.match(log, /enrolled with http:\/\/127\.0\.0\.1:\d+ as PC-1/);
  t.match(log, /task deploy started \(schedule\)/);
  t.match(log, /KB5000001: downloaded kb1\.msu \(3000 bytes, sha256 verified\)/);
  t.match(log, /KB5000001: installing \(attempt 1 of 4, any time allowed\): 1 file\(s\) to install/);
  t.match(log, /KB5000001: step 1: sh .*install-1\.sh ".*downloads\/[0-9a-f]{64}\/kb1\.msu"$/m, "the command line with the file's absolute path and name");

  // An idle agent (an hour between check-ins): tasks by hand, stop with nothing running.
  agent.kill('SIGTERM');
  await new Promise((r) => agent.once('exit', r));
  startAgent(t, s.node.url, s.state, s.enrollmentToken, s.inventory, { interval: 3600 });
  await waitFor(
    async () => (patchLog(s.state).match(/task deploy finished/g) ?? []).length >= 2 && /agent started.*3600 s/.test(patchLog(s.state)),
    'the first check-in',
  );
  const stop = await agentCli('task', 'stop', '--state', s.state);
  t.equal(stop.code, 0);
  t.match(stop.stdout, /no task is running/);
  await waitLog(s.state, /stop requested: no task was running/);
  const list = await agentCli('task', 'list', '--state', s.state);
  t.match(list.stdout, /^scan .*Scan only/m);
  t.match(list.stdout, /^deploy .*Scan and deploy/m);
  const run = await agentCli('task', 'run', 'scan', '--state', s.state);
  t.match(run.stdout, /task scan started/);
  await waitLog(s.state, /task scan started \(started by hand\)/);
  t.equal((await agentCli('task', 'run', 'nope', '--state', s.state)).code, 2, 'an unknown task');
  const upd = await agentCli('update-data', '--state', s.state);
  t.equal(upd.code, 0);
  t.match(JSON.parse(upd.stdout), { assignments: 0, scanIntervalMinutes: 1440 });
  const cleared = await agentCli('log', '--state', s.state, '--clear');
  t.equal(cleared.code, 0);
  t.match(patchLog(s.state), /^\S+ {2}patch log cleared \(by user\)\n$/);
});

t.test('installs only inside the window; a file tampered with after download is refused before the install', async (t) => {
  const s = await setup(t, [4000]);
  s.installer(1, 'ok');
  startAgent(t, s.node.url, s.state, s.enrollmentToken, s.inventory);
  await waitLog(s.state, /scan: 1 update/);
  const p = await policy(s.node, { name: 'Nightly', updates: ['test-1'], installation: { maintenance: closedWindow() } });
  await waitLog(s.state, /KB5000001: downloaded; waiting for a maintenance window to install \(outside-window; next: /);
  await waitFor(async () => (await rowState(s.node, p, 'test-1'))?.state === 'downloading', 'downloaded, reported');
  const checkins = (patchLog(s.state).match(/task deploy finished/g) ?? []).length;
  await waitFor(async () => (patchLog(s.state).match(/task deploy finished/g) ?? []).length >= checkins + 2, 'two more check-ins');
  t.notMatch(patchLog(s.state), /installing/, 'nothing installed outside the window');
  t.equal((patchLog(s.state).match(/waiting for a maintenance window/g) ?? []).length, 1, 'said once');

  // Tampered with on disk; then the window opens.
  const file = join(s.state, 'downloads', s.files[0]!.sha256, 'kb1.msu');
  writeFileSync(file, Buffer.alloc(4000, 1));
  const r = await api(s.node.url, ADMIN_TOKEN, `/api/v1/policies/${p}`, {
    method: 'PATCH',
    body: JSON.stringify({ installation: { maintenance: { mode: 'any-time' } } }),
  });
  t.equal(r.status, 200);
  await waitLog(s.state, /KB5000001: kb1\.msu refused before install: sha256 is [0-9a-f]{64}, expected [0-9a-f]{64}; deleted/);
  await waitLog(s.state, /KB5000001: installed \(exit code 0\)/);
  const log = patchLog(s.state);
  t.ok(log.indexOf('refused before install') < log.indexOf('KB5000001: installing'), 'refused first, installed from a fresh download');
  t.equal((log.match(/installing \(/g) ?? []).length, 1, 'one install');
});

t.test('retry ceilings: the 11th failed download and the 4th failed install stop it until cleared', async (t) => {
  const s = await setup(t, [2000, 2500]);
  s.installer(1, 'ok');
  s.installer(2, 'fail');
  startAgent(t, s.node.url, s.state, s.enrollmentToken, s.inventory);
  await waitLog(s.state, /scan: 2 update/);
  const id = await computerId(s.node);
  // The node serves a corrupt copy of file 1: every download fails its sha256 check.
  const p1 = await policy(s.node, { name: 'Downloads', updates: ['test-1'], installation: { maintenance: { mode: 'any-time' } } });
  await waitFor(
    async () => (await api(s.node.url, ADMIN_TOKEN, '/api/v1/content/files?update=test-1')).body.items[0]?.state === 'verified',
    'file 1 on the node',
  );
  const stored = join(s.dir, 'node', 'content', 'objects', s.files[0]!.sha256.slice(0, 2), s.files[0]!.sha256);
  const good = readFileSync(stored);
  writeFileSync(stored, Buffer.alloc(good.length, 7));
  const p2 = await policy(s.node, { name: 'Installs', updates: ['test-2'], installation: { maintenance: { mode: 'any-time' } } });

  await waitLog(s.state, /KB5000001: retry ceiling reached after 11 failed downloads; not trying it again until the retry counts are cleared/, 90_000);
  await waitLog(s.state, /KB5000002: retry ceiling reached after 4 failed installs/, 90_000);
  const log = patchLog(s.state);
  t.equal((log.match(/KB5000001: download of kb1\.msu failed/g) ?? []).length, 11, '11 failed downloads');
  t.match(log, /download of kb1\.msu failed \(attempt 11 of 11\): sha256 mismatch/);
  t.equal((log.match(/KB5000002: install failed/g) ?? []).length, 4, '4 failed installs');
  t.match(log, /KB5000002: install failed \(attempt 4 of 4\): exit code 2; output: error: fatal error during installation/);
  await waitFor(
    async () => (await rowState(s.node, p1, 'test-1'))?.state === 'ceiling-reached' && (await rowState(s.node, p2, 'test-2'))?.state === 'ceiling-reached',
    'ceilings at the node',
  );
  t.match(await rowState(s.node, p1, 'test-1'), { attempts: { download: 11 } });
  t.match(await rowState(s.node, p2, 'test-2'), { attempts: { install: 4 }, lastExitCode: 2 });
  const n = (patchLog(s.state).match(/failed \(attempt/g) ?? []).length;
  await waitFor(
    async () => (patchLog(s.state).match(/task deploy finished/g) ?? []).length >= 3 + (log.match(/task deploy finished/g) ?? []).length,
    'more check-ins',
  );
  t.equal((patchLog(s.state).match(/failed \(attempt/g) ?? []).length, n, 'no further attempts');
  t.equal((patchLog(s.state).match(/retry ceiling reached/g) ?? []).length, 2, 'each ceiling said once');

  // Repaired; the user clears the counts at the computer: file 1 installs.
  writeFileSync(stored, good);
  const c = await agentCli('clear-retries', '--state', s.state);
  t.equal(c.code, 0, c.stderr);
  t.match(c.stdout, /retry counts cleared: 2 update\(s\)/);
  await waitLog(s.state, /KB5000001: installed/);
  // Update 2's installer still fails: four more attempts, and the ceiling again.
  await waitFor(
    async () => (patchLog(s.state).match(/KB5000002: retry ceiling reached after 4 failed installs/g) ?? []).length === 2,
    'the second ceiling of update 2',
    60_000,
  );
  t.equal((patchLog(s.state).match(/KB5000002: install failed/g) ?? []).length, 8, 'four more failed installs after the clear');
  // The admin clears update 2 at the node, once its installer is fixed: the agent follows.
  s.installer(2, 'reboot');
  const cl = await api(s.node.url, ADMIN_TOKEN, `/api/v1/computers/${id}/retries/clear`, { method: 'POST', body: JSON.stringify({ updates: ['test-2'] }) });
  t.equal(cl.status, 200);
  await waitLog(s.state, /KB5000002: retry counts cleared by the node/);
  await waitLog(s.state, /KB5000002: installed, restart required \(exit code 3; restart mode in-window\)/);
  await waitFor(async () => (await rowState(s.node, p2, 'test-2'))?.state === 'installed', 'update 2 installed at the node after the rescan');
});

t.test('the node away for a while: the agent installs on schedule and every event arrives afterwards, once', async (t) => {
  const s = await setup(t, [3000]);
  s.installer(1, 'ok');
  startAgent(t, s.node.url, s.state, s.enrollmentToken, s.inventory);
  await waitLog(s.state, /scan: 1 update/);
  const id = await computerId(s.node);
  const deadline = new Date(Date.now() + 10_000).toISOString();
  const p = await policy(s.node, { name: 'By deadline', updates: ['test-1'], deadline, installation: { maintenance: closedWindow() } });
  await waitFor(async () => (await rowState(s.node, p, 'test-1'))?.state === 'downloading', 'downloaded, reported');
  s.node.child.kill('SIGTERM');
  await s.node.exited;
  await waitLog(s.state, /KB5000001: installing \(attempt 1 of 4, deadline passed\)/, 30_000);
  await waitLog(s.state, /KB5000001: installed/);
  await waitLog(s.state, /events kept for later/);
  const queued = JSON.parse((await agentCli('status', '--state', s.state, '--json')).stdout).eventsQueued;
  t.ok(queued >= 2, `events wait in the queue (${queued})`);

  const again = await spawnNode(
    t,
    [...s.nodeArgs, '--http-port', String(s.node.httpPort)].filter((a, i, all) => !(a === '0' && all[i - 1] === '--http-port')),
  );
  t.equal(again.httpPort, s.node.httpPort);
  await waitFor(async () => (await eventTypes(again, id, 'test-1')).length >= 4, 'the queued events', 60_000);
  await waitFor(async () => JSON.parse((await agentCli('status', '--state', s.state, '--json')).stdout).eventsQueued === 0, 'the queue emptied');
  t.same(await eventTypes(again, id, 'test-1'), ['download-started', 'download-completed', 'install-started', 'install-succeeded'], 'each event once');
  await waitFor(async () => (await rowState(again, p, 'test-1'))?.state === 'installed', 'installed at the node');
});

/** Queues events in the agent's store before it runs, as an agent of another version (or a bug) could have left them. */
function queueEvents(state: string, events: unknown[]): void {
  mkdirSync(state, { recursive: true, mode: 0o700 });
  const store = new AgentStore(state);
  for (const e of events) store.enqueue(e as QueuedEvent);
  store.close();
}

async function eventIds(node: NodeProcess, id: number): Promise<string[]> {
  return ((await api(node.url, ADMIN_TOKEN, `/api/v1/computers/${id}/events?limit=1000`)).body.items as { id: string }[]).map((e) => e.id).sort();
}

t.test("events the node can never accept are dropped one by one, each logged with the node's reason; the others of the batch arrive", async (t) => {
  const s = await setup(t, [3000]);
  const at = new Date().toISOString();
  const ev = (id: string, over: Record<string, unknown> = {}) => ({ id, updateId: 'test-1', type: 'download-started', attempt: 1, at, ...over });
  queueEvents(s.state, [
    ev('good-1'),
    ev('bad-type', { type: 'exploded' }),
    ev('good-2', { type: 'download-failed', message: 'one' }),
    ev('bad-update', { updateId: 'no-such-update' }),
    ev('good-3', { type: 'download-completed' }),
  ]);
  startAgent(t, s.node.url, s.state, s.enrollmentToken, s.inventory);
  const id = await computerId(s.node);
  await waitLog(s.state, /the node refused the event exploded of test-1 \(bad-type\): type: Invalid option[^\n]*; dropped/);
  await waitLog(
    s.state,
    /the node refused the event download-started of no-such-update \(bad-update\): updateId: no-such-update is not an update this node knows; dropped/,
  );
  await waitFor(async () => (await eventIds(s.node, id)).length === 3, 'the three good events at the node');
  t.same(await eventIds(s.node, id), ['good-1', 'good-2', 'good-3'], 'every good event of the batch, once');
  await waitFor(async () => JSON.parse((await agentCli('status', '--state', s.state, '--json')).stdout).eventsQueued === 0, 'the queue emptied');
  t.equal(patchLog(s.state).match(/the node refused/g)?.length, 2, 'two refusals logged, nothing else dropped');
});

t.test('a batch answered with a 5xx stays queued and arrives once the node takes it', async (t) => {
  const s = await setup(t, [3000]);
  const proxy = await startProxy(t, { host: '127.0.0.1', port: s.node.httpPort });
  proxy.state.failEvents = 3;
  const at = new Date().toISOString();
  queueEvents(
    s.state,
    ['a', 'b', 'c'].map((n) => ({ id: `kept-${n}`, updateId: 'test-1', type: 'download-started', attempt: 1, at })),
  );
  startAgent(t, proxy.url, s.state, s.enrollmentToken, s.inventory);
  const id = await computerId(s.node);
  await waitLog(s.state, /events kept for later \(3 queued\): \/agent\/v1\/events: HTTP 503 [^\n]*the test proxy fails this batch/);
  await waitFor(async () => proxy.state.failEvents === 0 && (await eventIds(s.node, id)).length === 3, 'the kept events at the node', 60_000);
  t.same(await eventIds(s.node, id), ['kept-a', 'kept-b', 'kept-c'], 'each once');
  await waitFor(async () => JSON.parse((await agentCli('status', '--state', s.state, '--json')).stdout).eventsQueued === 0, 'the queue emptied');
  t.notMatch(patchLog(s.state), /the node refused/, 'nothing dropped');
});

t.test('a cut download resumes with Range; a task stopped mid-download', async (t) => {
  const s = await setup(t, [3_000_000, 4_000_000]);
  s.installer(1, 'ok');
  s.installer(2, 'ok');
  const proxy = await startProxy(t, { host: '127.0.0.1', port: s.node.httpPort });
  startAgent(t, proxy.url, s.state, s.enrollmentToken, s.inventory);
  await waitLog(s.state, /scan: 2 update/);
  const id = await computerId(s.node);
  proxy.state.cutFileAfter = 1_000_000;
  await policy(s.node, { name: 'First', updates: ['test-1'], installation: { maintenance: { mode: 'any-time' } } });
  await waitLog(s.state, /KB5000001: download of kb1\.msu failed \(attempt 1 of 11\)/);
  await waitLog(s.state, /kb1\.msu: resuming at byte \d+ of 3000000/);
  await waitLog(s.state, /KB5000001: installed/);
  t.equal(proxy.state.cuts, 1);
  const resumed = Number(/resuming at byte (\d+)/.exec(patchLog(s.state))![1]);
  t.ok(resumed > 0 && resumed < 3_000_000, `resumed from byte ${resumed}`);
  await waitFor(async () => (await eventTypes(s.node, id, 'test-1')).includes('install-succeeded'), 'events');
  t.same((await eventTypes(s.node, id, 'test-1')).slice(0, 4), ['download-started', 'download-failed', 'download-started', 'download-completed']);

  // Slow link: the next download takes long; the user stops the task in the middle.
  proxy.state.bytesPerSecond = 100_000;
  await policy(s.node, { name: 'Second', updates: ['test-2'], installation: { maintenance: { mode: 'any-time' } } });
  await waitFor(async () => JSON.parse((await agentCli('status', '--state', s.state, '--json')).stdout).task?.step === 'downloading KB5000002', 'downloading');
  await new Promise((r) => setTimeout(r, 1500));
  const stop = await agentCli('task', 'stop', '--state', s.state);
  t.match(stop.stdout, /task deploy stopped/);
  await waitLog(s.state, /task deploy stopped during downloading KB5000002: stopped by user/);
  const part = join(s.state, 'downloads', s.files[1]!.sha256, 'kb2.msu.part');
  t.ok(existsSync(part), 'the partial download is kept');
  t.notMatch(patchLog(s.state), /KB5000002: download of kb2\.msu failed/, 'a stop is not a failed attempt');
  proxy.state.bytesPerSecond = 0;
  await waitLog(s.state, /kb2\.msu: resuming at byte/);
  await waitLog(s.state, /KB5000002: installed/);
});

t.test('an installer that hangs is killed at the timeout and counted as a failed install', async (t) => {
  const s = await setup(t, [2000]);
  s.installer(1, 'hang');
  startAgent(t, s.node.url, s.state, s.enrollmentToken, s.inventory, { installTimeout: 2 });
  await waitLog(s.state, /scan: 1 update/);
  const id = await computerId(s.node);
  const p = await policy(s.node, { name: 'Hangs', updates: ['test-1'], installation: { maintenance: { mode: 'any-time' } } });
  await waitLog(s.state, /KB5000001: install failed \(attempt 1 of 4\): timed out after 2 s/);
  await waitFor(async () => (await eventTypes(s.node, id, 'test-1')).includes('install-failed'), 'the failure at the node');
  const ev = (await api(s.node.url, ADMIN_TOKEN, `/api/v1/computers/${id}/events?update=test-1`)).body.items.find((e: any) => e.type === 'install-failed');
  t.match(ev, { attempt: 1, message: /timed out after 2 s/ });
  t.equal(ev.exitCode, null, 'no exit code: it was killed');
  s.installer(1, 'ok');
  await waitLog(s.state, /KB5000001: installed/);
  await waitFor(async () => (await rowState(s.node, p, 'test-1'))?.state === 'installed', 'installed on a later attempt');
  // The hung installers' process groups were killed, not left sleeping.
  const ps = await new Promise<string>((r) => {
    let out = '';
    const c = spawn('ps', ['-eo', 'args'], { stdio: ['ignore', 'pipe', 'ignore'] });
    c.stdout!.on('data', (d) => (out += String(d)));
    c.on('close', () => r(out));
  });
  t.notMatch(ps, /^sleep 600$/m, 'no installer left running');
});
