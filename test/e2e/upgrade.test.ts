import t, { type Test } from 'tap';
import { join } from 'node:path';
import { ADMIN_TOKEN, api, buildRealCatalog, listAll, makeKeys, spawnNode, tempDir, uploadCatalog, type NodeProcess } from '../helpers.js';
import { appliedMigrations, fixtureAnswers, fixtureTokens, journalMigrations, placeFixture, tableColumns, tableRows, withDb } from '../upgrade-fixtures.js';

/**
 * Data folders made by old releases (test/fixtures/upgrade/README.md), opened by
 * this code: every migration applies once, every row is still there, and the API
 * serves what the old node served.
 */

const sorted = <T>(l: T[]) => [...l].sort();

/** What migration 0010 makes of a format-1 command line for one file (catalog/format.ts fromV1). */
function installerOf(command: string, file: string): unknown {
  if (command === '') return null;
  const f = file.toLowerCase();
  if (command === 'wusa.exe "{file}" /quiet /norestart' && f.endsWith('.msu')) return { type: 'wusa' };
  if (command === 'dism.exe /online /add-package /packagepath:"{file}" /quiet /norestart' && f.endsWith('.cab')) return { type: 'dism' };
  if (command === 'msiexec.exe /p "{file}" /qn /norestart' && f.endsWith('.msp')) return { type: 'msp' };
  return { type: 'command', command };
}

async function stop(t: Test, node: NodeProcess) {
  node.child.kill('SIGTERM');
  t.equal(await node.exited, 0, 'the node stops cleanly');
  t.same(
    node.logs.filter((l) => Number(l.level) >= 50),
    [],
    'it logged no error',
  );
}

/** Upgrades a copy of the fixture (another copy stays as the old release left it). */
async function upgrade(t: Test, name: string, args: string[], dir: string) {
  const data = join(dir, 'data');
  const original = placeFixture(name, join(dir, 'original'));
  const file = placeFixture(name, data);
  const node = await spawnNode(t, ['--data', data, '--name', 'upgraded', ...args]);
  return { original, file, node };
}

/** `actual` on the keys `expected` has (less `omit`), for one comparison with a readable diff. */
function onKeys(actual: any, expected: any, omit: string[] = []) {
  const keys = Object.keys(expected).filter((k) => !omit.includes(k));
  return [Object.fromEntries(keys.map((k) => [k, actual?.[k]])), Object.fromEntries(keys.map((k) => [k, expected[k]]))] as const;
}

/** The catalog as the old node served it: the same updates, expired ones, custom severities, imports and update details. */
async function catalogServed(t: Test, url: string, token: string, old: any) {
  const ids = async (q: string) => sorted((await listAll(url, token, `/api/v1/updates?${q}`, 1000)).map((u) => u.id));
  t.same(await ids('expired=false'), old.updates, `the ${old.updates.length} current updates`);
  t.same(await ids('expired=true'), old.expired, `the ${old.expired.length} expired updates`);
  const sev = old.severities.items[0];
  t.same(await ids(`customSeverity=${sev.id}`), old.customSeverity, `the ${old.customSeverity.length} updates of custom severity "${sev.name}"`);
  const severities = (await api(url, token, '/api/v1/severities')).body.items;
  // 9362aed counted 0 updates for every level (its count compared with the update's own id); d057594 counted right.
  t.same(...onKeys(severities[0], { ...sev, updates: old.customSeverity.length }), 'the custom severity level, with its update count');
  const imports = (await api(url, token, '/api/v1/catalog/imports')).body.items;
  t.equal(imports.length, old.imports.items.length, 'every catalog import');
  for (const [i, o] of old.imports.items.entries()) t.same(...onKeys(imports[i], o), `import of ${o.version}`);
  for (const o of old.samples) {
    const res = await api(url, token, `/api/v1/updates/${o.id}`);
    t.equal(res.status, 200, `update ${o.id}`);
    const u = res.body;
    t.same(...onKeys(u, o, ['install', 'files', 'supersedence']), `update KB${o.kb} (${o.product}): the same fields`);
    t.same(u.install, { successCodes: o.install.successCodes, rebootCodes: o.install.rebootCodes }, 'its exit codes');
    t.same(
      u.files,
      o.files.map((f: any) => ({ ...f, installer: installerOf(o.install.command, f.name) })),
      'its files, each with the installer its old command line meant',
    );
    t.same(u.supersedence, o.supersedence, 'its supersedence chain');
  }
}

/** Migration 0010 over every stored file: the installer its update's old command line meant, positions in the old order. */
function filesMigrated(t: Test, up: Awaited<ReturnType<typeof upgrade>>) {
  const commands = new Map(
    withDb(up.original, (db) => db.prepare('SELECT id, install_command FROM updates').all() as { id: string; install_command: string }[]).map((r) => [
      r.id,
      r.install_command,
    ]),
  );
  const files = withDb(
    up.file,
    (db) =>
      db.prepare('SELECT update_id, name, position, installer FROM update_files ORDER BY update_id, language, name, sha256').all() as {
        update_id: string;
        name: string;
        position: number;
        installer: string | null;
      }[],
  );
  const wrong = files.filter(
    (f) => JSON.stringify(f.installer === null ? null : JSON.parse(f.installer)) !== JSON.stringify(installerOf(commands.get(f.update_id)!, f.name)),
  );
  t.same(wrong, [], `each of ${files.length} files has the installer of its update's old command`);
  const next = new Map<string, number>();
  const misplaced = files.filter((f) => {
    const n = next.get(f.update_id) ?? 0;
    next.set(f.update_id, n + 1);
    return Number(f.position) !== n;
  });
  t.same(misplaced, [], 'positions 0, 1, ... in the old order (language, name)');
}

interface Changes {
  /** Columns a newer release rewrites on its own (left out of the comparison). */
  changed?: Record<string, string[]>;
  /** Tables a migration drops. */
  dropped?: string[];
  /** Tables the node appends to at its first start: the old rows all still there. */
  grows?: string[];
}

/** The upgraded database: every migration recorded once, every old row still there. */
function rowsKept(t: Test, up: Awaited<ReturnType<typeof upgrade>>, o: Changes = {}) {
  t.same(
    appliedMigrations(up.file),
    journalMigrations().map(({ hash, createdAt }) => ({ hash, createdAt })),
    'every migration of the journal recorded once, in order, with the hash of its file',
  );
  const before = tableColumns(up.original);
  const after = tableColumns(up.file);
  for (const [table, cols] of before) {
    if (table === '__drizzle_migrations') continue;
    if (o.dropped?.includes(table)) {
      t.notOk(after.has(table), `${table} dropped by a migration`);
      continue;
    }
    const kept = cols.filter((c) => after.get(table)?.includes(c) && !o.changed?.[table]?.includes(c));
    const [was, is] = [tableRows(up.original, table, kept), tableRows(up.file, table, kept)];
    if (o.grows?.includes(table)) {
      const now = new Set(is);
      t.same(
        was.filter((r) => !now.has(r)),
        [],
        `${table}: its ${was.length} rows still there on ${kept.length} of its ${cols.length} columns (${is.length - was.length} added)`,
      );
      continue;
    }
    t.equal(is.length, was.length, `${table}: ${was.length} rows`);
    t.same(is, was, `${table}: the same rows on ${kept.length} of its ${cols.length} columns`);
  }
}

t.test('a data folder of 9362aed (migration 0000: the catalog only) upgrades and is served', async (t) => {
  const name = 'catalog-9362aed';
  const old = fixtureAnswers(name);
  const tokens = fixtureTokens(name);
  // The bootstrap admin token given on the command line replaces the one the old node stored.
  const dir = await tempDir(t);
  const keys = await makeKeys(dir);
  const up = await upgrade(t, name, ['--admin-token', ADMIN_TOKEN, '--trusted-key', keys.pubFile], dir);
  t.same(
    appliedMigrations(up.original).map((m) => m.createdAt),
    journalMigrations()
      .slice(0, 1)
      .map((m) => m.createdAt),
    'the fixture holds 0000_init only',
  );
  const { url } = up.node;
  await catalogServed(t, url, ADMIN_TOKEN, old);
  t.equal((await api(url, tokens.admin, '/api/v1/updates?limit=1')).status, 401, "the old bootstrap token is replaced by --admin-token's");
  t.equal((await api(url, tokens.viewer, '/api/v1/updates?limit=1')).status, 200, 'the API token the old node made still reads');
  t.equal(
    (await api(url, tokens.viewer, '/api/v1/tokens', { method: 'POST', body: JSON.stringify({ name: 'x', role: 'viewer' }) })).status,
    403,
    'as a viewer',
  );

  rowsKept(t, up, { changed: { api_tokens: ['token_hash'] } });
  filesMigrated(t, up);

  // This release's build of the same data imports onto the upgraded database: the same
  // update ids (nothing added), the expired ones back, custom severities kept.
  const catalog = await buildRealCatalog(dir, keys, '2024.02.1');
  const imported = await uploadCatalog(url, ADMIN_TOKEN, catalog.file, catalog.sig);
  t.equal(imported.status, 201, JSON.stringify(imported.body));
  t.match(imported.body, { version: '2024.02.1', updates: old.updates.length + old.expired.length, added: 0, expired: 0 });
  const now = await listAll(url, ADMIN_TOKEN, '/api/v1/updates?expired=false', 1000);
  t.same(sorted(now.map((u) => u.id)), sorted([...old.updates, ...old.expired]), 'every update of the old release, none expired');
  t.same(sorted(now.filter((u) => u.customSeverity !== null).map((u) => u.id)), old.customSeverity, 'custom severities kept');
  await stop(t, up.node);
});

t.test('a data folder of d057594 (migration 0005: computers, policies, agents, events) upgrades and is served', async (t) => {
  const name = 'delivery-d057594';
  const old = fixtureAnswers(name);
  const tokens = fixtureTokens(name);
  const dir = await tempDir(t);
  // No --admin-token: the bootstrap token the old node stored stays.
  const up = await upgrade(t, name, [], dir);
  t.equal(appliedMigrations(up.original).length, 6, 'the fixture holds 0000 to 0005');
  const { url } = up.node;
  const token = tokens.admin;
  t.equal((await api(url, token, '/api/v1/node')).status, 200, "the old node's bootstrap admin token still works");
  await catalogServed(t, url, token, old);

  const computers = await listAll(url, token, '/api/v1/computers', 1000);
  t.equal(computers.length, old.computers.items.length, `${computers.length} computers`);
  const byId = new Map(computers.map((c) => [c.id, c]));
  for (const o of old.computers.items) t.same(...onKeys(byId.get(o.id), o), `computer ${o.name}`);

  const policies = (await api(url, token, '/api/v1/policies')).body.items;
  t.equal(policies.length, old.policies.items.length, 'both policies');
  for (const o of old.policies.items) {
    t.same(
      ...onKeys(
        policies.find((p: any) => p.id === o.id),
        o,
      ),
      `policy "${o.name}"`,
    );
    const d = (await api(url, token, `/api/v1/policies/${o.id}/delivery?limit=1000`)).body;
    t.same(d.totals, old.delivery[o.id].totals, `"${o.name}": its delivery totals`);
    t.equal(d.items.length, old.delivery[o.id].items.length, `"${o.name}": ${d.items.length} deliveries`);
    for (const [i, item] of old.delivery[o.id].items.entries()) t.same(...onKeys(d.items[i], item), `"${o.name}": delivery to ${item.computer}`);
  }
  t.same(...onKeys((await api(url, token, '/api/v1/settings/installation')).body, old.installation), 'the installation settings');
  const agents = (await api(url, token, '/api/v1/agents')).body.items;
  t.equal(agents.length, old.agents.items.length, 'both agents');
  for (const [i, o] of old.agents.items.entries()) t.same(...onKeys(agents[i], o), `agent ${o.name}`);
  rowsKept(t, up, {
    dropped: ['resync_seen'],
    // The assessor's position in the change log, which grows by the policies below.
    changed: { assessment_state: ['cursor'] },
    grows: ['change_log'],
  });
  // Policies made before policies replicated are logged for the subtree at the first start.
  const logged = withDb(
    up.file,
    (db) =>
      db.prepare("SELECT key, op FROM change_log WHERE seq > (SELECT max(seq) FROM change_log WHERE kind <> 'policy')").all() as { key: string; op: string }[],
  );
  t.same(
    sorted(logged.map((r) => `${r.key} ${r.op}`)),
    sorted(old.policies.items.map((p: any) => `${p.id} upsert`)),
    'the change log gains one upsert of each old policy and nothing else',
  );
  filesMigrated(t, up);

  // The agents' credentials still work, and their events are served.
  const pcA = tokens.agents.find((a) => a.name === 'PC-A')!;
  const computerA = old.agents.items.find((a: any) => a.agentId === pcA.agentId).computerId;
  const config = await api(url, pcA.secret, '/agent/v1/config');
  t.equal(config.status, 200, "PC-A's agent secret still authenticates");
  t.match(config.body, { agentId: pcA.agentId, computerId: computerA }, 'as the agent of its computer');
  const events = await listAll(url, token, `/api/v1/computers/${computerA}/events`, 100);
  const stored = withDb(
    up.original,
    (db) => db.prepare('SELECT event_id, update_id, policy_id, type, exit_code, message FROM agent_events WHERE computer_id = ?').all(computerA) as any[],
  );
  t.equal(stored.length, 7, 'the fixture holds the 7 events PC-A sent');
  t.same(
    sorted(events.map((e) => JSON.stringify([e.id, e.updateId, e.policyId, e.type, e.exitCode ?? null, e.message ?? null]))),
    sorted(stored.map((e) => JSON.stringify([e.event_id, e.update_id, e.policy_id, e.type, e.exit_code, e.message]))),
    "PC-A's events, as it sent them",
  );
  await stop(t, up.node);
});
