import t from 'tap';
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { ADMIN_TOKEN, api, header, makeKeys, runCli, sampleUpdate, spawnNode, startAgent, tempDir, uploadCatalog, writeSignedCatalog } from '../helpers.js';
import { startVendor, waitFor, type VendorFile } from '../vendor.js';
import { installStandins, type Call } from '../standins.js';
import type { Installer } from '../../src/delivery/installers.js';

const W11 = 'Windows 11 Version 23H2 for x64-based Systems';

/**
 * Real processes: a node, a catalog of updates whose files install with Microsoft's
 * tools, and a real agent whose PATH holds recording stand-ins for wusa.exe,
 * dism.exe, expand.exe and msiexec.exe (test/standins.ts), each ending with the
 * exit code this test chose for that file. The computer's language is German.
 */
t.test('every file the computer needs, with the right installer, and exit codes typed', async (t) => {
  const dir = await tempDir(t, 'patchtree-install-');
  const keys = await makeKeys(dir);
  const vendor = await startVendor(t);
  const release = join(dir, 'release-u9');
  const standins = installStandins(join(dir, 'bin'), [
    { tool: 'wusa.exe', match: 'u3.msu', code: 2359302 }, // WU_S_ALREADY_INSTALLED: success
    { tool: 'wusa.exe', match: 'u4.msu', code: 3010 },
    { tool: 'wusa.exe', match: 'u5.msu', code: 0x80240017 }, // WU_E_NOT_APPLICABLE
    { tool: 'dism.exe', match: 'NDP48.cab', code: 0x800f081e }, // CBS_E_NOT_APPLICABLE: this computer has .NET 4.8.1
    { tool: 'wusa.exe', match: 'u7.msu', code: 1603 },
    { tool: 'expand.exe', code: 0, extract: ['b-patch.msp', 'a-patch.msp', 'readme.txt'] },
    { tool: 'msiexec.exe', match: 'u9.msp', code: 0, waitFor: release },
  ]);

  type F = { name: string; language?: string; installer: Installer | null; behaviour?: VendorFile['behaviour'] };
  const spec: Record<number, F[]> = {
    1: [
      { name: 'u1-base.msu', installer: { type: 'wusa' } },
      { name: 'u1-extra.cab', installer: { type: 'dism' } },
      { name: 'u1-de-de.cab', language: 'de-de', installer: { type: 'dism' } },
      { name: 'u1-fr-fr.cab', language: 'fr-fr', installer: { type: 'dism' } },
      { name: 'u1-ja-jp.cab', language: 'ja-jp', installer: { type: 'dism' } },
    ],
    2: [{ name: 'u2-x-none.cab', installer: { type: 'office-cab' } }],
    3: [{ name: 'u3.msu', installer: { type: 'wusa' } }],
    4: [{ name: 'u4.msu', installer: { type: 'wusa' } }],
    5: [{ name: 'u5.msu', installer: { type: 'wusa' } }],
    6: [
      { name: 'Windows10.0-KB5042097-x64-NDP481.cab', installer: { type: 'dism' } },
      { name: 'Windows10.0-KB5042056-x64-NDP48.cab', installer: { type: 'dism' } },
    ],
    7: [{ name: 'u7.msu', installer: { type: 'wusa' } }],
    8: [{ name: 'u8.msu', installer: { type: 'wusa' }, behaviour: { kind: 'status', status: 404 } }],
    9: [{ name: 'u9.msp', installer: { type: 'msp' } }],
    10: [], // metadata only (as a CVRF-only update is): nothing can install it
  };
  const files = new Map<string, VendorFile>();
  const updates = Object.entries(spec).map(([n, fs]) =>
    sampleUpdate(Number(n), {
      install: { successCodes: [0], rebootCodes: [3010] },
      files: fs.map((f, i) => {
        const v = vendor.add(`/${f.name}`, 1000 + Number(n) * 10 + i, f.behaviour);
        files.set(f.name, v);
        return {
          name: f.name,
          url: vendor.url(v.path),
          size: v.data.length,
          sha256: v.sha256,
          language: f.language ?? 'neutral',
          ...(f.installer ? { installer: f.installer } : {}),
        };
      }),
    }),
  );
  const cat = await writeSignedCatalog(dir, keys, 'c.gz', header('v2', updates.length), updates);
  // The node manages English only at first: the German file is not on it.
  const nodeArgs = ['--data', join(dir, 'node'), '--admin-token', ADMIN_TOKEN, '--trusted-key', keys.pubFile, '--name', 'site'];
  let node = await spawnNode(t, nodeArgs);
  t.equal((await uploadCatalog(node.url, ADMIN_TOKEN, cat.file, cat.sig)).status, 201);
  await api(node.url, ADMIN_TOKEN, '/api/v1/settings/content', { method: 'PUT', body: JSON.stringify({ reserveBytes: 0, retryBaseMs: 50, retryMaxMs: 200 }) });
  const detail = await api(node.url, ADMIN_TOKEN, '/api/v1/updates/test-1');
  t.same(
    detail.body.files.map((f: any) => [f.name, f.installer]),
    spec[1]!.map((f) => [f.name, f.installer]),
    'the update shows its files in catalog order with their installers',
  );
  const et = await api(node.url, ADMIN_TOKEN, '/api/v1/agents/enrollment-tokens', { method: 'POST', body: JSON.stringify({ name: 'lab' }) });
  const inventory = join(dir, 'inventory.json');
  writeFileSync(
    inventory,
    JSON.stringify({ os: { family: 'windows', name: W11, version: '10.0.22631.2861', arch: 'x64', language: 'de-DE' }, products: [{ name: W11 }], kbs: [] }),
  );
  const p = await api(node.url, ADMIN_TOKEN, '/api/v1/policies', {
    method: 'POST',
    body: JSON.stringify({
      name: 'All now',
      targets: { all: true },
      updates: Object.keys(spec).map((n) => `test-${n}`),
      installation: { maintenance: { mode: 'any-time' } },
    }),
  });
  t.equal(p.status, 201);
  const state = join(dir, 'agent');
  startAgent(t, node.url, state, et.body.token, inventory, { env: { PATH: standins.path } });

  const computer = await waitFor(async () => (await api(node.url, ADMIN_TOKEN, '/api/v1/computers')).body.items[0]?.id as number | undefined, 'the computer');
  const events = async (u: number) =>
    ((await api(node.url, ADMIN_TOKEN, `/api/v1/computers/${computer}/events?update=test-${u}&limit=1000`)).body.items as any[]).reverse();
  const row = async (u: number) =>
    (await api(node.url, ADMIN_TOKEN, `/api/v1/policies/${p.body.id}/delivery`)).body.items.find((i: any) => i.updateId === `test-${u}`);
  const status = async () => JSON.parse((await runCli(['agent', 'status', '--state', state, '--json'])).stdout);

  // Events reach the node as the steps happen, not when the task ends: the .msp step is still running.
  await waitFor(async () => (await events(9)).some((e) => e.type === 'install-started'), 'install-started of test-9 at the node while its step runs', 60_000);
  t.notOk(
    (await events(9)).some((e) => e.type !== 'install-started' && e.type.startsWith('install')),
    'no result yet: msiexec is still running',
  );
  const during = await status();
  t.match(during.task, { name: 'deploy', step: 'installing KB5000009' }, 'the agent is inside the step');
  t.match(
    during.updates.find((u: any) => u.updateId === 'test-9'),
    { state: 'installing', waitingFor: null },
  );
  t.match(
    during.updates.find((u: any) => u.updateId === 'test-1'),
    { state: 'waiting', waitingFor: "files in languages the node does not download (de-de): add them to the node's --languages" },
    'why test-1 waits',
  );
  writeFileSync(release, '');

  // The admin adds German to the node: the German file comes, and test-1 installs.
  node.child.kill('SIGTERM');
  await node.exited;
  node = await spawnNode(t, [...nodeArgs, '--languages', 'en,de', '--http-port', String(node.httpPort)]);

  // test-7 fails at every try until its ceiling; by then everything else is done.
  await waitFor(async () => (await row(7))?.state === 'ceiling-reached', 'test-7 at its retry ceiling', 90_000);
  await waitFor(async () => (await row(9))?.state === 'installed', 'test-9 installed');
  const abs = (f: string) => resolve(state, 'downloads', files.get(f)!.sha256, f);
  const calls = standins.calls();
  const of = (tool: string, part: string) => calls.filter((c: Call) => c.tool === tool && c.argv.join(' ').includes(part));

  // 1. Every file the computer needs, each once, by absolute path with its extension; no other language's.
  t.same(
    of('wusa.exe', 'u1-base.msu').map((c) => c.argv),
    [[abs('u1-base.msu'), '/quiet', '/norestart']],
    'wusa.exe "<file.msu>" /quiet /norestart, once',
  );
  for (const f of ['u1-extra.cab', 'u1-de-de.cab'])
    t.same(
      of('dism.exe', f).map((c) => c.argv),
      [['/online', '/add-package', `/packagepath:${abs(f)}`, '/quiet', '/norestart']],
      `dism.exe /online /add-package /packagepath:"${f}", once`,
    );
  t.same(
    of('dism.exe', 'u1-').map((c) => c.argv.at(2)!.split('/').pop()),
    ['u1-extra.cab', 'u1-de-de.cab'],
    'in catalog order, the German file and neither French nor Japanese',
  );
  const patchLog = readFileSync(join(state, 'patch.log'), 'utf8');
  const downloaded = [...patchLog.matchAll(/: downloaded (\S+) \(\d+ bytes, sha256 verified\)/g)].map((m) => m[1]!).sort();
  const needed = [...files.keys()].filter((n) => !['u1-fr-fr.cab', 'u1-ja-jp.cab', 'u8.msu'].includes(n)).sort();
  t.same(downloaded, needed, 'the agent downloaded exactly the files it needs, each once: none in another language');
  // Installed, restart pending or not applicable: its downloads are removed; the failing update keeps its file for the next try.
  t.same(readdirSync(join(state, 'downloads')), [files.get('u7.msu')!.sha256], 'settled updates leave nothing in downloads/');
  t.same(readdirSync(join(state, 'downloads', files.get('u7.msu')!.sha256)), ['u7.msu'], 'kept under its catalog name, no partial left');
  t.match(patchLog, /KB5000001: its downloads removed \(\d+ bytes\)/);

  // 2. An Office cab is expanded and each .msp it held given to msiexec, in name order; the folder is removed after.
  const [expand, ...more] = of('expand.exe', 'u2-x-none.cab');
  t.equal(more.length, 0, 'expanded once');
  t.same(expand!.argv.slice(0, 2), ['-F:*', abs('u2-x-none.cab')]);
  const into = expand!.argv[2]!;
  t.ok(into.startsWith(resolve(state)) && into.includes(files.get('u2-x-none.cab')!.sha256), "into a folder of the agent's own");
  t.same(
    calls.filter((c) => c.tool === 'msiexec.exe' && c.argv[1]!.startsWith(into)).map((c) => c.argv),
    [
      ['/p', join(into, 'a-patch.msp'), '/qn', '/norestart'],
      ['/p', join(into, 'b-patch.msp'), '/qn', '/norestart'],
    ],
    'msiexec.exe /p "<each .msp>" /qn /norestart',
  );
  t.notOk(existsSync(into), 'the expanded folder is removed');
  t.same(
    of('msiexec.exe', 'u9.msp').map((c) => c.argv),
    [['/p', abs('u9.msp'), '/qn', '/norestart']],
    'a plain .msp',
  );

  // 3. Exit codes, typed.
  t.match(await row(1), { state: 'installed' });
  t.match(await row(2), { state: 'installed' });
  t.match(await row(3), { state: 'installed', lastExitCode: 2359302 }, 'wusa 0x00240006 (already installed) is success');
  t.match(await row(4), { state: 'pending-reboot', lastExitCode: 3010 }, '3010: installed, restart pending');
  t.match(await row(5), { state: 'not-applicable', attempts: { install: 0 }, lastExitCode: 0x80240017 }, 'wusa 0x80240017: not applicable, no attempt counted');
  t.match(await row(6), { state: 'installed', attempts: { install: 0 }, lastExitCode: 0 }, 'one .NET cab not applicable, the other 0: installed');
  t.same(
    of('dism.exe', 'NDP4').map((c) => c.argv.at(2)!.split('-').pop()),
    ['NDP481.cab', 'NDP48.cab'],
    'both .NET cabs were tried, in catalog order',
  );
  t.match(await row(7), { state: 'ceiling-reached', attempts: { install: 4 }, lastExitCode: 1603 }, '1603 failed, four times: the ceiling');
  t.equal(of('wusa.exe', 'u7.msu').length, 4, 'four attempts, no fifth');
  t.same(
    (await events(5)).map((e) => e.type),
    ['download-started', 'download-completed', 'install-started', 'install-not-applicable'],
  );
  const six = (await events(6)).find((e) => e.type === 'install-succeeded');
  t.match(
    six.message,
    /NDP481\.cab" \/quiet \/norestart -> exit 0 \(installed\); .*NDP48\.cab" \/quiet \/norestart -> exit 0x800F081E \(not applicable\)/,
    'the event tells each step',
  );
  for (const u of [1, 2, 3, 4, 5, 6, 9]) t.equal((await events(u)).filter((e) => e.type === 'install-started').length, 1, `test-${u} installed once`);

  // 4. The status says why: files not on the node, the ceiling with its last error.
  await waitFor(
    async () => (await status()).updates.some((u: any) => u.updateId === 'test-7' && u.state === 'ceiling-reached'),
    'the ceiling in the agent status',
  );
  const s = await status();
  t.match(
    s.updates.find((u: any) => u.updateId === 'test-8'),
    { kb: '5000008', state: 'waiting', waitingFor: /^files not yet on the node \(1 of 1 missing; the node's download fails: HTTP 404.*, next try \d{4}-/ },
  );
  t.match(
    s.updates.find((u: any) => u.updateId === 'test-7'),
    { state: 'ceiling-reached', waitingFor: /retry counts to be cleared/, lastError: /u7\.msu" \/quiet \/norestart -> exit 1603 \(failed\)/ },
  );
  t.equal(s.waitingForFiles, 1);
  t.match(
    s.updates.find((u: any) => u.updateId === 'test-10'),
    { state: 'waiting', waitingFor: /the update is metadata only/ },
    'an update without files says so',
  );
  const text = (await runCli(['agent', 'status', '--state', state])).stdout;
  t.match(
    text,
    /KB5000008 +waiting +waiting for files not yet on the node \(1 of 1 missing; the node's download fails: HTTP 404/,
    'the text status lists it too',
  );

  // 5. The node away: the last error names the cause.
  node.child.kill('SIGTERM');
  await node.exited;
  await waitFor(
    async () => /unreachable: fetch failed: connect ECONNREFUSED 127\.0\.0\.1:\d+/.test((await status()).lastError ?? ''),
    'the cause in lastError',
    30_000,
  );
  t.pass('lastError: "... unreachable: fetch failed: connect ECONNREFUSED 127.0.0.1:<port>"');
  t.match(readFileSync(join(state, 'patch.log'), 'utf8'), /KB5000005: not applicable to this computer \(exit code 0x80240017\): no step applied/);
});
