import t, { type Test } from 'tap';
import { api, header, makeKeys, sampleUpdate, startNode, tempDir, uploadCatalog, writeSignedCatalog, type Keys, type RunningNode } from '../helpers.js';
import { startVendor, waitFor, type Vendor, type VendorFile } from '../vendor.js';

const W11 = 'Windows 11 Version 23H2 for x64-based Systems';
const W10 = 'Windows 10 Version 22H2 for x64-based Systems';

interface Agent {
  agentId: string;
  secret: string;
  computerId: number;
}

/**
 * A node whose catalog's files live on a vendor server: test-1 (critical, W11),
 * test-2 (important, W11), test-3 (critical, W10). Each update requires its
 * product and is installed when the computer reports its KB.
 */
async function setup(t: Test) {
  const dir = await tempDir(t);
  const keys = await makeKeys(dir);
  const vendor = await startVendor(t);
  const node = await startNode(t, { trustedKeys: [keys.pubFile] });
  const vf = [vendor.add('/kb1.msu', 2000), vendor.add('/kb2.msu', 3000), vendor.add('/kb3.msu', 4000), vendor.add('/kb4.msu', 5000)];
  const updates = [
    upd(1, vf[0]!, vendor, { severity: 'Critical' }),
    upd(2, vf[1]!, vendor, { severity: 'Important' }),
    upd(3, vf[2]!, vendor, { severity: 'Critical', product: W10, applicability: { product: W10 } }),
  ];
  const cat = await writeSignedCatalog(dir, keys, 'c1.gz', header('v1', updates.length), updates);
  t.equal((await uploadCatalog(node.url, node.token, cat.file, cat.sig)).status, 201);
  t.equal(
    (
      await api(node.url, node.token, '/api/v1/settings/content', {
        method: 'PUT',
        body: JSON.stringify({ reserveBytes: 0, retryBaseMs: 50, retryMaxMs: 200 }),
      })
    ).status,
    200,
  );
  const et = await api(node.url, node.token, '/api/v1/agents/enrollment-tokens', { method: 'POST', body: JSON.stringify({ name: 'lab', maxUses: 10 }) });
  return { node, vendor, vf, dir, keys, enrollmentToken: et.body.token as string };
}

function upd(n: number, f: VendorFile, vendor: Vendor, over: Record<string, unknown> = {}) {
  return sampleUpdate(n, {
    files: [{ name: f.path.slice(1), url: vendor.url(f.path), size: f.data.length, sha256: f.sha256, language: 'neutral', installer: { type: 'wusa' } }],
    ...over,
  });
}

async function enrolAgent(n: RunningNode, enrollmentToken: string, name: string, product: string, kbs: string[]): Promise<Agent> {
  const e = await api(n.url, null, '/agent/v1/enroll', { method: 'POST', body: JSON.stringify({ enrollmentToken, name }) });
  if (e.status !== 201) throw new Error(`enrol: ${e.status} ${JSON.stringify(e.body)}`);
  const r = await api(n.url, e.body.secret, '/agent/v1/inventory', {
    method: 'POST',
    body: JSON.stringify({
      agentKey: e.body.agentId,
      name,
      full: { os: { family: 'windows', name: product, version: '10.0.22631.2861', arch: 'x64', language: 'en-us' }, products: [{ name: product }], kbs },
    }),
  });
  if (r.status !== 200) throw new Error(`inventory: ${r.status} ${JSON.stringify(r.body)}`);
  return { agentId: e.body.agentId, secret: e.body.secret, computerId: r.body.computerId };
}

const assignments = (n: RunningNode, a: Agent, etag?: string) =>
  api(n.url, a.secret, '/agent/v1/assignments', { headers: etag ? { 'if-none-match': etag } : {} });
const ids = (r: { body: { items: { updateId: string }[] } }) => r.body.items.map((i) => i.updateId).sort();
let seq = 0;
const ev = (updateId: string, type: string, extra: Record<string, unknown> = {}) => ({
  id: `ev-${++seq}`,
  updateId,
  type,
  attempt: 1,
  at: new Date().toISOString(),
  ...extra,
});
const send = (n: RunningNode, a: Agent, events: unknown[]) => api(n.url, a.secret, '/agent/v1/events', { method: 'POST', body: JSON.stringify({ events }) });
const count = async (n: RunningNode, table: string) => Number((await n.node.db.client.execute(`SELECT count(*) AS n FROM ${table}`)).rows[0]!.n);

/** Waits until the node's background work (assessment, targeting, downloads) has caught up. */
async function settle(n: RunningNode) {
  await n.node.assessment!.assessor.idle();
  await n.node.delivery!.engine.idle();
}

async function filesVerified(n: RunningNode, updateIds: string[]) {
  for (const id of updateIds)
    await waitFor(async () => (await api(n.url, n.token, `/api/v1/content/files?update=${id}`)).body.items[0]?.state === 'verified', `${id} verified`);
}

t.test('a policy from a filter and a severity reaches exactly the computers that need its updates', async (t) => {
  const { node, enrollmentToken, vf } = await setup(t);
  const a = await enrolAgent(node, enrollmentToken, 'PC-A', W11, []); // needs test-1, test-2
  const b = await enrolAgent(node, enrollmentToken, 'PC-B', W11, ['5000001']); // needs test-2
  const c = await enrolAgent(node, enrollmentToken, 'PC-C', W10, []); // needs test-3
  const d = await enrolAgent(node, enrollmentToken, 'PC-D', W11, ['5000001', '5000002']); // needs nothing
  await settle(node);

  const p = await api(node.url, node.token, '/api/v1/policies', {
    method: 'POST',
    body: JSON.stringify({
      name: 'Critical now',
      fromRequired: { filter: 'severity:critical', severity: 'Critical' },
      installation: { maintenance: { mode: 'any-time' } },
    }),
  });
  t.equal(p.status, 201, JSON.stringify(p.body));
  t.type(p.body.id, 'string');
  t.same(p.body.updates, ['test-1', 'test-3'], 'every critical update some computer requires');
  t.same(p.body.targets, { filters: ['severity:critical'] }, 'targets the filter');
  await settle(node);
  await filesVerified(node, ['test-1', 'test-3']);

  const ra = await assignments(node, a);
  t.equal(ra.status, 200);
  t.same(ids(ra), ['test-1'], 'A gets the critical update it needs, not the important one');
  const item = ra.body.items[0];
  t.match(item, { policyId: p.body.id, kb: '5000001', successCodes: [0], rebootCodes: [3010] });
  t.same(item.files, [
    { url: `/agent/v1/files/${vf[0]!.sha256}`, sha256: vf[0]!.sha256, size: 2000, name: 'kb1.msu', language: 'neutral', installer: { type: 'wusa' } },
  ]);
  t.same(ids(await assignments(node, c)), ['test-3'], 'C gets the W10 critical update');
  t.same(ids(await assignments(node, b)), [], 'B has the critical update: nothing');
  t.same(ids(await assignments(node, d)), [], 'D needs nothing');
  // The file URL works with the agent's own secret.
  const file = await fetch(`${node.url}${item.files[0].url}`, { headers: { authorization: `Bearer ${a.secret}` } });
  t.equal(file.status, 200);
  t.equal(Buffer.from(await file.arrayBuffer()).length, 2000);

  const del = await api(node.url, node.token, `/api/v1/policies/${p.body.id}/delivery`);
  t.equal(del.status, 200);
  t.match(del.body.totals, { computers: 2, targeted: 2 });
  t.same(
    del.body.items.map((i: any) => [i.computerId, i.updateId, i.state]),
    [
      [a.computerId, 'test-1', 'targeted'],
      [c.computerId, 'test-3', 'targeted'],
    ],
  );

  // A new computer needing test-1 joins the filter: it is targeted at once.
  const e = await enrolAgent(node, enrollmentToken, 'PC-E', W11, []);
  await settle(node);
  t.same(ids(await assignments(node, e)), ['test-1'], 'a newly assessed computer is targeted');

  // A installs test-1: its next scan reports the KB, the row says installed, the report keeps it.
  t.equal((await send(node, a, [ev('test-1', 'install-succeeded', { exitCode: 0 })])).status, 200);
  const r2 = await api(node.url, a.secret, '/agent/v1/inventory', {
    method: 'POST',
    body: JSON.stringify({
      agentKey: a.agentId,
      name: 'PC-A',
      full: { os: { family: 'windows', name: W11, version: '10.0.22631.2861', arch: 'x64', language: 'en-us' }, products: [{ name: W11 }], kbs: ['5000001'] },
    }),
  });
  t.equal(r2.status, 200);
  await settle(node);
  const after = await api(node.url, node.token, `/api/v1/policies/${p.body.id}/delivery?computer=${a.computerId}`);
  t.same(
    after.body.items.map((i: any) => i.state),
    ['installed'],
    'installed (confirmed by the scan), still in the report though A left the filter',
  );
  t.same(ids(await assignments(node, a)), []);

  // Disabled: nobody gets it; enabled again: back.
  t.equal((await api(node.url, node.token, `/api/v1/policies/${p.body.id}`, { method: 'PATCH', body: JSON.stringify({ enabled: false }) })).status, 200);
  await settle(node);
  t.same(ids(await assignments(node, c)), [], 'disabled');
  t.equal((await api(node.url, node.token, `/api/v1/policies/${p.body.id}`, { method: 'PATCH', body: JSON.stringify({ enabled: true }) })).status, 200);
  await settle(node);
  t.same(ids(await assignments(node, c)), ['test-3'], 'enabled again');

  // Not before its start.
  const later = await api(node.url, node.token, '/api/v1/policies', {
    method: 'POST',
    body: JSON.stringify({ name: 'Later', updates: ['test-2'], targets: { all: true }, startAt: new Date(Date.now() + 3_600_000).toISOString() }),
  });
  t.equal(later.status, 201);
  await settle(node);
  t.same(ids(await assignments(node, b)), [], 'a policy that has not started delivers nothing yet');

  const h = await api(node.url, node.token, `/api/v1/policies/${p.body.id}/history`);
  t.same(
    h.body.items.map((x: any) => x.action),
    ['created', 'updated', 'updated'],
  );
  t.same(h.body.items[1].detail, { enabled: { from: true, to: false } });
});

t.test('ETag and 304; duplicate event batches counted once; retry ceilings and clearing them', async (t) => {
  const { node, enrollmentToken } = await setup(t);
  const a = await enrolAgent(node, enrollmentToken, 'PC-A', W11, ['5000002']); // needs test-1
  const p = await api(node.url, node.token, '/api/v1/policies', {
    method: 'POST',
    body: JSON.stringify({ name: 'P', updates: ['test-1'], targets: { computers: [a.computerId] } }),
  });
  t.equal(p.status, 201);
  await settle(node);
  await filesVerified(node, ['test-1']);

  const r1 = await assignments(node, a);
  const etag = r1.headers.get('etag')!;
  t.match(etag, /^"[A-Za-z0-9_-]+"$/);
  t.same(ids(r1), ['test-1']);
  const r304 = await assignments(node, a, etag);
  t.equal(r304.status, 304, 'unchanged: 304');
  t.equal(r304.body, null, 'with no body');
  t.equal(r304.headers.get('etag'), etag);
  t.equal((await assignments(node, a, `W/${etag}`)).status, 304, 'a weak validator matches too');
  t.equal((await assignments(node, a, '"other"')).status, 200, 'another tag: the answer');

  // A batch sent twice (the agent never saw the first answer) counts once.
  const batch = [ev('test-1', 'download-started'), ev('test-1', 'download-failed', { message: 'connection reset' })];
  const s1 = await send(node, a, batch);
  t.same(s1.body, { accepted: 2, duplicates: 0 });
  const s2 = await send(node, a, batch);
  t.equal(s2.status, 200);
  t.same(s2.body, { accepted: 0, duplicates: 2 });
  t.equal(await count(node, 'agent_events'), 2);
  let row = (await api(node.url, node.token, `/api/v1/policies/${p.body.id}/delivery`)).body.items[0];
  t.match(row, { state: 'failed', attempts: { download: 1, install: 0 }, lastError: 'connection reset' });
  const r2 = await assignments(node, a, etag);
  t.equal(r2.status, 200, 'the counts changed: a new answer');
  t.not(r2.headers.get('etag'), etag);
  t.same(r2.body.items[0].attempts, { download: 1, install: 0 });

  // Downloads: 10 failures in all still deliver; the 11th stops it.
  for (let i = 2; i <= 10; i++) await send(node, a, [ev('test-1', 'download-failed', { attempt: i })]);
  t.same(ids(await assignments(node, a)), ['test-1'], '10 failed downloads: still offered');
  await send(node, a, [ev('test-1', 'download-failed', { attempt: 11 })]);
  t.same(ids(await assignments(node, a)), [], 'the 11th failed download stops delivery');
  row = (await api(node.url, node.token, `/api/v1/policies/${p.body.id}/delivery`)).body.items[0];
  t.match(row, { state: 'ceiling-reached', attempts: { download: 11 } });

  // Cleared from the server: offered again, with the clear's time for the agent.
  const cl = await api(node.url, node.token, `/api/v1/computers/${a.computerId}/retries/clear`, {
    method: 'POST',
    body: JSON.stringify({ updates: ['test-1'] }),
  });
  t.same(cl.body, { cleared: 1 });
  const back = await assignments(node, a);
  t.same(ids(back), ['test-1']);
  t.same(back.body.items[0].attempts, { download: 0, install: 0 });
  t.type(back.body.items[0].retriesClearedAt, 'string');

  // Installs: the 4th failure stops it.
  for (let i = 1; i <= 3; i++)
    await send(node, a, [ev('test-1', 'install-failed', { attempt: i, exitCode: 1603, message: 'fatal error during installation' })]);
  t.same(ids(await assignments(node, a)), ['test-1'], '3 failed installs: still offered');
  await send(node, a, [ev('test-1', 'install-failed', { attempt: 4, exitCode: 1603 })]);
  t.same(ids(await assignments(node, a)), [], 'the 4th failed install stops delivery');
  row = (await api(node.url, node.token, `/api/v1/policies/${p.body.id}/delivery`)).body.items[0];
  t.match(row, { state: 'ceiling-reached', attempts: { install: 4 }, lastExitCode: 1603 });

  // A policy's own ceilings rule: raised to 6 installs, it is offered again.
  await api(node.url, node.token, `/api/v1/policies/${p.body.id}`, {
    method: 'PATCH',
    body: JSON.stringify({ installation: { retries: { download: 11, install: 6 } } }),
  });
  await settle(node);
  const raised = await assignments(node, a);
  t.same(ids(raised), ['test-1'], "under the policy's higher ceiling");
  t.same(raised.body.policies[0].installation.retries, { download: 11, install: 6 });

  // Clearing all of a computer's counts.
  t.same((await api(node.url, node.token, `/api/v1/computers/${a.computerId}/retries/clear`, { method: 'POST' })).body, { cleared: 1 });
  t.equal((await api(node.url, node.token, '/api/v1/computers/999999/retries/clear', { method: 'POST' })).status, 404);

  // Installs over time, per UTC day of when the agent says they happened: the four failed
  // installs above today, and a success reported late, two days ago by the agent's clock.
  const twoDaysAgo = new Date(Date.now() - 2 * 86_400_000);
  await send(node, a, [ev('test-1', 'install-succeeded', { attempt: 5, at: twoDaysAgo.toISOString() })]);
  const perDay = (await api(node.url, node.token, `/api/v1/policies/${p.body.id}/installs?days=7`)).body.days;
  t.same(
    perDay,
    [
      { day: twoDaysAgo.toISOString().slice(0, 10), installed: 1, failed: 0 },
      { day: new Date().toISOString().slice(0, 10), installed: 0, failed: 4 },
    ],
    'installs per day: one two days ago, four failed today',
  );
  t.same((await api(node.url, node.token, `/api/v1/policies/${p.body.id}/installs?days=1`)).body.days, [perDay[1]], 'days=1: today only');
  t.equal((await api(node.url, node.token, '/api/v1/policies/nope/installs')).status, 404);
  t.equal((await api(node.url, node.token, `/api/v1/policies/${p.body.id}/installs?days=401`)).status, 400);
});

t.test("supersedence: an import that supersedes a policy's update adds the new one, in the history", async (t) => {
  const { node, enrollmentToken, vf, vendor, dir, keys } = await setup(t);
  const a = await enrolAgent(node, enrollmentToken, 'PC-A', W11, []);
  await settle(node);
  const follow = await api(node.url, node.token, '/api/v1/policies', {
    method: 'POST',
    body: JSON.stringify({ name: 'Follows', updates: ['test-1'], targets: { all: true }, followSupersedence: true }),
  });
  const fixed = await api(node.url, node.token, '/api/v1/policies', {
    method: 'POST',
    body: JSON.stringify({ name: 'Fixed', updates: ['test-1'], targets: { all: true } }),
  });
  t.equal(follow.status, 201);
  t.equal(fixed.status, 201);

  await importV2(t, node, dir, keys, vendor, vf);
  await waitFor(async () => (await api(node.url, node.token, `/api/v1/policies/${follow.body.id}`)).body.updates.includes('test-4'), 'the policy revised');
  t.same((await api(node.url, node.token, `/api/v1/policies/${follow.body.id}`)).body.updates, ['test-1', 'test-4']);
  t.same(
    (await api(node.url, node.token, `/api/v1/policies/${fixed.body.id}`)).body.updates,
    ['test-1'],
    'a policy that does not follow supersedence is left alone',
  );
  const h = await api(node.url, node.token, `/api/v1/policies/${follow.body.id}/history`);
  const last = h.body.items[h.body.items.length - 1];
  t.match(last, { action: 'update-superseded', by: 'supersedence', detail: { added: 'test-4', supersedes: 'test-1' } });
  await settle(node);
  await filesVerified(node, ['test-4']);
  t.same(ids(await assignments(node, a)), ['test-4'], 'the computer now gets the superseding update (test-1 is superseded on it)');
});

async function importV2(t: Test, node: RunningNode, dir: string, keys: Keys, vendor: Vendor, vf: VendorFile[]) {
  const updates = [
    upd(1, vf[0]!, vendor, { severity: 'Critical' }),
    upd(2, vf[1]!, vendor, { severity: 'Important' }),
    upd(3, vf[2]!, vendor, { severity: 'Critical', product: W10, applicability: { product: W10 } }),
    upd(4, vf[3]!, vendor, { severity: 'Critical', supersedes: ['5000001'] }),
  ];
  const cat = await writeSignedCatalog(dir, keys, 'c2.gz', header('v2', updates.length), updates);
  t.equal((await uploadCatalog(node.url, node.token, cat.file, cat.sig)).status, 201);
}

t.test("agent credentials: revoked secrets, enrolment limits, one agent cannot touch another's data", async (t) => {
  const { node } = await setup(t);
  const et = await api(node.url, node.token, '/api/v1/agents/enrollment-tokens', { method: 'POST', body: JSON.stringify({ name: 'two', maxUses: 2 }) });
  const a = await enrolAgent(node, et.body.token, 'PC-A', W11, []);
  const b = await enrolAgent(node, et.body.token, 'PC-B', W11, []);
  const third = await api(node.url, null, '/agent/v1/enroll', { method: 'POST', body: JSON.stringify({ enrollmentToken: et.body.token, name: 'PC-C' }) });
  t.equal(third.status, 403, 'past the use limit');
  t.equal(await count(node, 'agents'), 2, 'nothing stored for it');
  t.equal((await api(node.url, null, '/agent/v1/enroll', { method: 'POST', body: JSON.stringify({ enrollmentToken: 'pte_nope', name: 'X' }) })).status, 401);
  const stored = await node.node.db.client.execute('SELECT secret_hash FROM agents');
  t.notOk(
    stored.rows.some((r) => r.secret_hash === a.secret || r.secret_hash === b.secret),
    'secrets are stored hashed',
  );

  await api(node.url, node.token, '/api/v1/policies', {
    method: 'POST',
    body: JSON.stringify({ name: 'P', updates: ['test-1', 'test-2'], targets: { computers: [a.computerId] } }),
  });
  await settle(node);

  // B cannot report as A, and its events change only its own status.
  const spoof = await api(node.url, b.secret, '/agent/v1/inventory', {
    method: 'POST',
    body: JSON.stringify({ agentKey: a.agentId, name: 'PC-A', full: { os: { family: 'windows', name: W11 } } }),
  });
  t.equal(spoof.status, 403);
  t.equal((await api(node.url, node.token, `/api/v1/computers/${a.computerId}`)).body.scanId, 1, "A's inventory untouched");
  t.equal((await send(node, b, [ev('test-1', 'install-failed', { exitCode: 5 })])).status, 200);
  const rows = (await node.node.db.client.execute('SELECT computer_id FROM delivery_status')).rows.map((r) => Number(r.computer_id));
  t.same(rows, [b.computerId], "B's event is recorded against B only");
  const pa = (await api(node.url, node.token, `/api/v1/policies?limit=10`)).body.items[0];
  t.equal(pa.delivery.failed, 0, "A's delivery is untouched");
  t.same(ids(await assignments(node, b)), [], "B does not see A's assignments");
  t.equal((await assignments(node, a)).status, 200);

  // Revoked: every agent call is a 401, enrolment gives new credentials.
  const rv = await api(node.url, node.token, `/api/v1/computers/${a.computerId}/agent`, { method: 'DELETE' });
  t.same(rv.body, { agentId: a.agentId });
  t.equal((await assignments(node, a)).status, 401);
  t.equal((await send(node, a, [ev('test-1', 'download-started')])).status, 401);
  t.equal((await api(node.url, a.secret, '/agent/v1/config')).status, 401);
  t.equal((await fetch(`${node.url}/agent/v1/files/${'a'.repeat(64)}`, { headers: { authorization: `Bearer ${a.secret}` } })).status, 401);
  t.equal((await assignments(node, b)).status, 200, 'the other agent is unaffected');
  const list = await api(node.url, node.token, '/api/v1/agents');
  t.same(list.body.items.map((x: any) => [x.agentId === a.agentId, x.revokedAt !== null]).sort(), [
    [false, false],
    [true, true],
  ]);
  t.equal((await api(node.url, node.token, `/api/v1/agents/${b.agentId}`, { method: 'DELETE' })).status, 204);
  t.equal((await assignments(node, b)).status, 401);
  t.equal((await api(node.url, null, '/agent/v1/assignments')).status, 401, 'no credentials');
});

t.test('malformed and oversized agent requests: 4xx and nothing stored', async (t) => {
  const { node, enrollmentToken } = await setup(t);
  const a = await enrolAgent(node, enrollmentToken, 'PC-A', W11, []);
  const bad = async (body: unknown, status: number, what: string) => {
    const r = await api(node.url, a.secret, '/agent/v1/events', { method: 'POST', body: typeof body === 'string' ? body : JSON.stringify(body) });
    t.equal(r.status, status, what);
    t.match(r.headers.get('content-type'), /application\/problem\+json/, `${what}: a problem document`);
  };
  await bad('{"events": [', 400, 'truncated JSON');
  await bad({ events: [] }, 400, 'an empty batch');
  await bad({ events: [{ ...ev('test-1', 'download-started'), type: 'exploded' }] }, 400, 'an unknown event type');
  await bad({ events: [ev('test-1', 'download-started'), { id: 'x', updateId: 'test-1', type: 'install-failed' }] }, 400, 'a batch with one incomplete event');
  await bad({ events: [{ ...ev('test-1', 'download-started'), at: 'yesterday' }] }, 400, 'a bad time');
  await bad({ events: [{ ...ev('test-1', 'download-started'), at: new Date(Date.now() + 7 * 86_400_000).toISOString() }] }, 400, 'a time a week ahead');
  await bad({ events: [ev('test-1', 'download-started'), ev('no-such-update', 'download-started')] }, 400, 'an update the node does not know');
  await bad({ events: Array.from({ length: 501 }, () => ev('test-1', 'download-started')) }, 400, 'more than 500 events');
  await bad({ events: [{ ...ev('test-1', 'download-failed'), message: 'x'.repeat(3000) }] }, 400, 'a message over 2000 characters');
  await bad({ events: [ev('test-1', 'download-started')], extra: 1 }, 400, 'an unknown field');
  await bad({ events: Array.from({ length: 400 }, () => ({ ...ev('test-1', 'download-failed'), message: 'x'.repeat(1900) })) }, 413, 'a body over 512 KiB');
  t.equal(await count(node, 'agent_events'), 0, 'no event stored');
  t.equal(await count(node, 'delivery_status'), 0, 'no status changed');

  // Each event the node can never accept is named, by its index in the batch and why; a refusal of the batch as a whole names none.
  const refused = async (events: unknown[]) =>
    (await api(node.url, a.secret, '/agent/v1/events', { method: 'POST', body: JSON.stringify({ events }) })).body.refused;
  const typo = { ...ev('test-1', 'download-started'), type: 'exploded' };
  t.match(
    await refused([ev('test-1', 'download-started'), typo, ev('test-1', 'download-completed')]),
    [{ index: 1, id: typo.id, reason: /^type: / }],
    'a bad shape',
  );
  const gone = ev('no-such-update', 'download-started');
  t.same(
    await refused([ev('test-1', 'download-started'), gone]),
    [{ index: 1, id: gone.id, reason: 'updateId: no-such-update is not an update this node knows' }],
    'an unknown update',
  );
  t.same(await refused(Array.from({ length: 501 }, () => ev('test-1', 'download-started'))), [], 'too many events: the batch as a whole');
  t.equal(await count(node, 'agent_events'), 0, 'still nothing stored');

  const big = await api(node.url, null, '/agent/v1/enroll', { method: 'POST', body: JSON.stringify({ enrollmentToken, name: 'x'.repeat(20_000) }) });
  t.equal(big.status, 413);
  t.equal((await api(node.url, null, '/agent/v1/enroll', { method: 'POST', body: JSON.stringify({ name: 'no token' }) })).status, 400);
  t.equal(await count(node, 'agents'), 1, 'no agent stored');

  // An agent that has not reported an inventory has nothing to report on yet.
  const e = await api(node.url, null, '/agent/v1/enroll', { method: 'POST', body: JSON.stringify({ enrollmentToken, name: 'fresh' }) });
  t.equal(
    (await api(node.url, e.body.secret, '/agent/v1/events', { method: 'POST', body: JSON.stringify({ events: [ev('test-1', 'download-started')] }) })).status,
    409,
  );
  const empty = await api(node.url, e.body.secret, '/agent/v1/assignments');
  t.same(empty.body, { items: [], policies: [], waitingForFiles: 0, waiting: [] });
  const cfg = await api(node.url, e.body.secret, '/agent/v1/config');
  t.match(cfg.body, { scanIntervalMinutes: 1440, installation: { retries: { download: 11, install: 4 } } });
  t.ok(Math.abs(Date.parse(cfg.body.nodeTime) - Date.now()) < 60_000, 'node time');
});

t.test('installation settings and policy validation', async (t) => {
  const { node, enrollmentToken } = await setup(t);
  const a = await enrolAgent(node, enrollmentToken, 'PC-A', W11, []);
  const s = await api(node.url, node.token, '/api/v1/settings/installation');
  t.match(s.body, { maintenance: { mode: 'windows', zone: 'local' }, restart: { mode: 'in-window' }, retries: { download: 11, install: 4 } });
  const next = {
    ...s.body,
    maintenance: { mode: 'windows', zone: 'Europe/Berlin', windows: [{ days: ['sat', 'sun'], start: '01:00', end: '05:00' }] },
    retries: { download: 5, install: 2 },
  };
  t.equal((await api(node.url, node.token, '/api/v1/settings/installation', { method: 'PUT', body: JSON.stringify(next) })).status, 200);
  t.same((await api(node.url, a.secret, '/agent/v1/config')).body.installation, next, 'agents get the new settings');
  t.equal(
    (
      await api(node.url, node.token, '/api/v1/settings/installation', {
        method: 'PUT',
        body: JSON.stringify({ ...next, maintenance: { mode: 'windows', zone: 'Mars/Olympus', windows: [] } }),
      })
    ).status,
    400,
  );
  t.equal(
    (
      await api(node.url, node.token, '/api/v1/settings/installation', {
        method: 'PUT',
        body: JSON.stringify({ ...next, restart: { mode: 'sometimes', warningMinutes: 5 } }),
      })
    ).status,
    400,
  );

  const post = (body: unknown) => api(node.url, node.token, '/api/v1/policies', { method: 'POST', body: JSON.stringify(body) });
  t.equal((await post({ name: 'x', updates: ['nope'], targets: { all: true } })).status, 400, 'an unknown update');
  t.equal((await post({ name: 'x', updates: ['test-1'], targets: {} })).status, 400, 'no targets');
  t.equal((await post({ name: 'x', updates: ['test-1'], targets: { filters: ['custom:999'] } })).status, 400, 'an unknown filter');
  t.equal((await post({ name: 'x', updates: ['test-1'], targets: { computers: [999] } })).status, 400, 'an unknown computer');
  t.equal(
    (await post({ name: 'x', updates: ['test-1'], targets: { all: true }, startAt: '2030-01-02T00:00:00Z', deadline: '2030-01-01T00:00:00Z' })).status,
    400,
    'a deadline before the start',
  );
  t.equal((await post({ name: 'x', fromRequired: { severity: 'Low' } })).status, 400, 'nothing required of that severity');
  t.equal(await count(node, 'policies'), 0, 'nothing stored');
  t.equal((await post({ name: 'x', updates: ['test-1'], targets: { all: true } })).status, 201);
  t.equal((await post({ name: 'x', updates: ['test-2'], targets: { all: true } })).status, 409, 'names are unique');
  const viewer = await api(node.url, node.token, '/api/v1/tokens', { method: 'POST', body: JSON.stringify({ name: 'v', role: 'viewer' }) });
  t.equal(
    (
      await api(node.url, viewer.body.token, '/api/v1/policies', {
        method: 'POST',
        body: JSON.stringify({ name: 'y', updates: ['test-1'], targets: { all: true } }),
      })
    ).status,
    403,
    'viewers cannot create policies',
  );
  t.equal((await api(node.url, viewer.body.token, '/api/v1/policies')).status, 200, 'but can read them');
  // A filter a policy targets cannot be deleted from under it.
  const f = await api(node.url, node.token, '/api/v1/filters', { method: 'POST', body: JSON.stringify({ name: 'Lab', condition: { name: 'PC-' } }) });
  t.equal((await post({ name: 'lab', updates: ['test-1'], targets: { filters: [f.body.id] } })).status, 201);
  const del = await api(node.url, node.token, `/api/v1/filters/${encodeURIComponent(f.body.id)}`, { method: 'DELETE' });
  t.equal(del.status, 409);
  t.match(del.body.detail, /"lab"/);
  const lab = (await api(node.url, node.token, '/api/v1/policies')).body.items.find((p: any) => p.name === 'lab');
  t.equal((await api(node.url, node.token, `/api/v1/policies/${lab.id}`, { method: 'PATCH', body: JSON.stringify({ targets: { all: true } }) })).status, 200);
  t.equal(
    (await api(node.url, node.token, `/api/v1/filters/${encodeURIComponent(f.body.id)}`, { method: 'DELETE' })).status,
    204,
    'deletable once no policy targets it',
  );

  const id = (await api(node.url, node.token, '/api/v1/policies')).body.items.find((p: any) => p.name === 'x').id;
  t.equal((await api(node.url, node.token, `/api/v1/policies/${id}`, { method: 'DELETE' })).status, 204);
  t.equal((await api(node.url, node.token, `/api/v1/policies/${id}`)).status, 404);
  t.same(
    (await api(node.url, node.token, `/api/v1/policies/${id}/history`)).body.items.map((h: any) => h.action),
    ['created', 'deleted'],
    'the history outlives the policy',
  );
});
