import t from 'tap';
import { sql } from 'drizzle-orm';
import { api, buildRealCatalog, header, makeKeys, sampleUpdate, startNode, tempDir, uploadCatalog, writeSignedCatalog, type RunningNode } from '../helpers.js';
import { waitFor } from '../vendor.js';

const W11 = 'Windows 11 Version 23H2 for x64-based Systems';
const W10 = 'Windows 10 Version 22H2 for x64-based Systems';

async function enrol(n: RunningNode, body: unknown = {}) {
  const r = await api(n.url, n.token, '/api/v1/agents/enrollment-tokens', { method: 'POST', body: JSON.stringify(body) });
  if (r.status !== 201) throw new Error(`enrolment token: ${r.status} ${JSON.stringify(r.body)}`);
  return r.body.token as string;
}

function report(n: RunningNode, token: string, body: unknown) {
  return api(n.url, token, '/agent/v1/inventory', { method: 'POST', body: JSON.stringify(body) });
}

const win11 = (key: string, build: string, kbs: string[] = [], extra: Record<string, unknown> = {}) => ({
  agentKey: key,
  name: key.toUpperCase(),
  agentVersion: '1.0.0',
  full: { os: { family: 'windows', name: W11, version: build, arch: 'x64', language: 'en-us' }, products: [{ name: W11, version: build }], kbs, ...extra },
});

async function required(n: RunningNode, id: number): Promise<string[]> {
  const r = await api(n.url, n.token, `/api/v1/computers/${id}/updates?state=required`);
  return (r.body.items as { kb: string }[]).map((u) => u.kb).sort();
}

async function filterCount(n: RunningNode, id: string): Promise<number | undefined> {
  const r = await api(n.url, n.token, `/api/v1/filters?limit=1000`);
  return (r.body.items as { id: string; count: number }[]).find((f) => f.id === id)?.count;
}

t.test('assessment on the real catalog: required, installed, deltas, filters, supersedence', async (t) => {
  const dir = await tempDir(t);
  const keys = await makeKeys(dir);
  const n = await startNode(t, { trustedKeys: [keys.pubFile] });
  const cat = await buildRealCatalog(dir, keys);
  t.equal((await uploadCatalog(n.url, n.token, cat.file, cat.sig)).status, 201);
  const kbRow = (await api(n.url, n.token, `/api/v1/updates?kb=5034123&product=${encodeURIComponent(W11)}`)).body.items[0];
  t.ok(kbRow, 'KB5034123 for Windows 11 23H2 x64 is in the catalog');
  const token = await enrol(n);

  // A Windows 11 23H2 computer at build 22631.2861 requires the January 2024 cumulative update.
  const r1 = await report(n, token, win11('pc-0000001', '10.0.22631.2861'));
  t.equal(r1.status, 200);
  t.equal(r1.body.created, true);
  t.equal(r1.body.scanId, 1);
  t.equal(r1.body.scanIntervalMinutes, 1440);
  const id = r1.body.computerId as number;
  const req = await api(n.url, n.token, `/api/v1/computers/${id}/updates?state=required`);
  const item = (req.body.items as { id: string; kb: string; severity: string }[]).find((u) => u.kb === '5034123');
  t.ok(item, 'KB5034123 required');
  t.equal(item!.id, kbRow.id);
  t.equal(item!.severity, kbRow.severity);
  t.equal(r1.body.required, req.body.items.length, 'the report answers with the same count');
  t.equal(await filterCount(n, `requires:${kbRow.id}`), 1, 'the "requiring KB5034123" filter counts it');
  t.equal((await api(n.url, n.token, `/api/v1/filters/${encodeURIComponent(`requires:${kbRow.id}`)}/computers`)).body.items[0].id, id);

  // At 22631.3007 it has it: a delta moves the build; the filter follows.
  const d = await report(n, token, {
    agentKey: 'pc-0000001',
    name: 'PC-0000001',
    delta: {
      baseScanId: 1,
      os: { family: 'windows', name: W11, version: '10.0.22631.3007', arch: 'x64', language: 'en-us' },
      products: { add: [{ name: W11, version: '10.0.22631.3007' }] },
    },
  });
  t.equal(d.status, 200);
  t.equal(d.body.scanId, 2);
  t.notOk((await required(n, id)).includes('5034123'), 'no longer required at 22631.3007');
  const installed = await api(n.url, n.token, `/api/v1/computers/${id}/updates?state=installed`);
  t.ok(
    (installed.body.items as { kb: string }[]).some((u) => u.kb === '5034123'),
    'reported installed',
  );
  t.equal(await filterCount(n, `requires:${kbRow.id}`), undefined, 'the filter no longer lists it (no computer requires it)');

  // A delta against an old scan is refused: nothing changes.
  const stale = await report(n, token, { agentKey: 'pc-0000001', name: 'PC-0000001', delta: { baseScanId: 1, kbs: { add: ['5034123'] } } });
  t.equal(stale.status, 409);
  t.equal(stale.body.currentScanId, 2);
  t.equal((await api(n.url, n.token, `/api/v1/computers/${id}`)).body.scanId, 2);

  // Unknown facts: without KBs and below the build, the update is unknown, not required.
  const u = await report(n, token, {
    agentKey: 'pc-unknown-1',
    name: 'PC-U',
    full: { os: { family: 'windows', name: W11, version: '10.0.22631.2861' }, products: [{ name: W11, version: '10.0.22631.2861' }] },
  });
  t.equal(u.status, 200);
  const unk = await api(n.url, n.token, `/api/v1/computers/${u.body.computerId}/updates?state=unknown`);
  t.ok(
    (unk.body.items as { kb: string }[]).some((x) => x.kb === '5034123'),
    'reported unknown',
  );
  t.notOk((await required(n, u.body.computerId)).includes('5034123'));

  // Filters: OS, language, severity, stale; a custom one.
  await report(n, token, {
    agentKey: 'pc-win10-01',
    name: 'PC-W10',
    full: {
      os: { family: 'windows', name: W10, version: '10.0.19045.3803', language: 'de-de' },
      products: [{ name: W10, version: '10.0.19045.3803' }],
      kbs: [],
    },
  });
  t.equal(await filterCount(n, `os:${W11}`), 2);
  t.equal(await filterCount(n, `os:${W10}`), 1);
  t.equal(await filterCount(n, 'language:de-de'), 1);
  const sev = (await api(n.url, n.token, '/api/v1/filters?kind=severity')).body.items as { id: string; count: number }[];
  t.equal(sev.length, 4);
  const computersAll = (await api(n.url, n.token, '/api/v1/computers')).body.items as { requiredBySeverity: Record<string, number> }[];
  t.equal(
    sev.find((f) => f.id === 'severity:important')!.count,
    computersAll.filter((c) => c.requiredBySeverity.important! > 0).length,
    'severity counts agree with the computers',
  );
  const custom = await api(n.url, n.token, '/api/v1/filters', {
    method: 'POST',
    body: JSON.stringify({ name: 'German Windows 10', condition: { os: W10, language: 'de' } }),
  });
  t.equal(custom.status, 201);
  t.equal(custom.body.count, 1);
  t.equal(
    (await api(n.url, n.token, '/api/v1/filters', { method: 'POST', body: JSON.stringify({ name: 'bad', condition: { os: W10, colour: 'red' } }) })).status,
    400,
  );
  t.equal((await api(n.url, n.token, `/api/v1/filters/${custom.body.id}`, { method: 'DELETE' })).status, 204);
  t.equal((await api(n.url, n.token, '/api/v1/filters/stale', { method: 'DELETE' })).status, 409);

  // Stale: a short interval and an old scan.
  t.equal(await filterCount(n, 'stale'), 0);
  t.equal((await api(n.url, n.token, '/api/v1/settings/assessment', { method: 'PUT', body: JSON.stringify({ scanIntervalMinutes: 5 }) })).status, 200);
  t.equal(await filterCount(n, 'stale'), 0, 'all scanned just now');
  const old = await n.node.assessment!.assessor.report(
    { agentKey: 'pc-old-scan1', name: 'OLD', full: { os: { family: 'windows' } } },
    Date.now() - 11 * 60_000,
  );
  t.equal(await filterCount(n, 'stale'), 1, 'a scan older than twice the interval is stale');
  const staleList = (await api(n.url, n.token, '/api/v1/computers?filter=stale')).body.items as { id: number; stale: boolean }[];
  t.same(
    staleList.map((c) => [c.id, c.stale]),
    [[old.computerId, true]],
  );
  t.same((await api(n.url, n.token, '/api/v1/settings/assessment')).body, { scanIntervalMinutes: 5, origin: null });
});

t.test('bad inventories are refused with 4xx and nothing is stored', async (t) => {
  const n = await startNode(t);
  const token = await enrol(n, { maxUses: 2 });
  const bad: [string, unknown][] = [
    ['unknown field', { ...win11('pc-bad-0001', '10.0.22631.2861'), colour: 'red' }],
    ['unknown inventory field', win11('pc-bad-0002', '10.0.22631.2861', [], { services: [] })],
    ['wrong type', { ...win11('pc-bad-0003', '10.0.22631.2861'), name: 42 }],
    ['bad version', win11('pc-bad-0004', 'latest')],
    ['bad KB', win11('pc-bad-0005', '10.0.22631.2861', ['KB-one'])],
    [
      'huge list',
      win11(
        'pc-bad-0006',
        '10.0.22631.2861',
        Array.from({ length: 20_001 }, (_, i) => String(1000000 + i)),
      ),
    ],
    ['both full and delta', { ...win11('pc-bad-0007', '10.0.22631.2861'), delta: { baseScanId: 1 } }],
    ['neither', { agentKey: 'pc-bad-0008', name: 'x' }],
    ['short key', win11('pc', '10.0.22631.2861')],
  ];
  for (const [what, body] of bad) {
    const r = await report(n, token, body);
    t.equal(r.status, 400, what);
    t.equal(r.headers.get('content-type'), 'application/problem+json', what);
  }
  const tooBig = await api(n.url, token, '/agent/v1/inventory', {
    method: 'POST',
    body: JSON.stringify({ ...win11('pc-bad-0009', '10.0.22631.2861'), pad: 'x'.repeat(9 * 1024 * 1024) }),
  });
  t.equal(tooBig.status, 413);
  const delta = await report(n, token, { agentKey: 'pc-new-00001', name: 'N', delta: { baseScanId: 1, kbs: { add: ['5034123'] } } });
  t.equal(delta.status, 409, 'a delta from an unknown computer asks for a full inventory');
  t.equal((await api(n.url, n.token, '/api/v1/computers')).body.items.length, 0, 'nothing stored');
  t.equal((await api(n.url, n.token, '/api/v1/agents/enrollment-tokens')).body.items[0].uses, 0, 'no use counted');

  // Tokens: unknown, revoked, use limit.
  t.equal((await report(n, 'pte_nope', win11('pc-good-0001', '10.0.22631.2861'))).status, 401);
  t.equal((await report(n, token, win11('pc-good-0001', '10.0.22631.2861'))).status, 200);
  t.equal((await report(n, token, win11('pc-good-0001', '10.0.22631.2861'))).status, 200, 'a known computer reports again without a new use');
  t.equal((await report(n, token, win11('pc-good-0002', '10.0.22631.2861'))).status, 200);
  t.equal((await report(n, token, win11('pc-good-0003', '10.0.22631.2861'))).status, 403, 'past its use limit');
  const id = (await api(n.url, n.token, '/api/v1/agents/enrollment-tokens')).body.items[0].id;
  t.equal((await api(n.url, n.token, `/api/v1/agents/enrollment-tokens/${id}`, { method: 'DELETE' })).status, 204);
  t.equal((await report(n, token, win11('pc-good-0001', '10.0.22631.2861'))).status, 401, 'revoked');
});

t.test('catalog imports reassess incrementally: new, changed, expired and superseding updates', async (t) => {
  const dir = await tempDir(t);
  const keys = await makeKeys(dir);
  const n = await startNode(t, { trustedKeys: [keys.pubFile] });
  const token = await enrol(n);
  const P = 'Contoso App';
  const upd = (i: number, over: Record<string, unknown> = {}) =>
    sampleUpdate(i, {
      product: P,
      applicability: { product: P },
      installed: { any: [{ kb: String(5000000 + i) }, { product: P, version: { gte: `1.0.${i}` } }] },
      files: [],
      ...over,
    });
  const c1 = await writeSignedCatalog(dir, keys, 'v1.gz', header('v1', 2), [upd(1), upd(2, { severity: 'Critical' })]);
  t.equal((await uploadCatalog(n.url, n.token, c1.file, c1.sig)).status, 201);
  const computers: number[] = [];
  for (let i = 0; i < 3; i++) {
    const r = await report(n, token, {
      agentKey: `contoso-${i}-pc`,
      name: `C${i}`,
      full: { os: { family: 'windows' }, products: [{ name: P, version: `1.0.${i}` }], kbs: [] },
    });
    computers.push(r.body.computerId);
  }
  const other = (await report(n, token, { agentKey: 'unrelated-pc', name: 'U', full: { os: { family: 'windows' }, products: [{ name: 'Other' }], kbs: [] } }))
    .body.computerId;
  // Versions 1.0.0, 1.0.1, 1.0.2: update 1 needs >= 1.0.1, update 2 needs >= 1.0.2.
  t.same(await required(n, computers[0]!), ['5000001', '5000002']);
  t.same(await required(n, computers[1]!), ['5000002']);
  t.same(await required(n, computers[2]!), []);
  const compliance = async (id: string) =>
    (await n.node.db!.reader.all(sql`SELECT installed, required, unknown, superseded FROM update_compliance WHERE update_id = ${id}`))[0];
  t.match(await compliance('test-2'), { installed: 1, required: 2 });
  t.equal(await filterCount(n, 'severity:critical'), 2);

  // v2: update 3 supersedes 2 (same product) and is required where 2 was; 1 expires; 2 changes severity.
  const c2 = await writeSignedCatalog(dir, keys, 'v2.gz', header('v2', 2), [
    upd(2, { severity: 'Low' }),
    upd(3, { supersedes: ['5000002'], severity: 'Important' }),
  ]);
  t.equal((await uploadCatalog(n.url, n.token, c2.file, c2.sig)).status, 201);
  await n.node.assessment!.assessor.idle();
  t.same(await required(n, computers[0]!), ['5000003'], 'superseded 2 is not reported; expired 1 is gone');
  t.same(await required(n, computers[1]!), ['5000003']);
  t.same(await required(n, computers[2]!), ['5000003'], '1.0.2 is below 1.0.3');
  const sup = await api(n.url, n.token, `/api/v1/computers/${computers[0]}/updates?state=superseded`);
  t.same(
    (sup.body.items as { kb: string }[]).map((x) => x.kb),
    ['5000002'],
  );
  t.match(await compliance('test-2'), { installed: 1, required: 0, superseded: 2 });
  t.match(await compliance('test-3'), { installed: 0, required: 3 });
  t.equal(await compliance('test-1'), undefined, 'the expired update has no counts');
  t.equal(await filterCount(n, 'severity:critical'), 0, 'no critical update required any more');
  t.equal(await filterCount(n, 'severity:important'), 3);
  t.same(await required(n, other), []);
  const status = (await api(n.url, n.token, '/api/v1/assessment')).body;
  t.equal(status.cursor, status.head, 'the assessment caught up with the change log');
  t.equal(status.lastRun.kind, 'catalog');

  // A full reassessment gives the same answers as the incremental one: rows, counters, summaries.
  const snapshot = async () => ({
    rows: (await n.node.db!.reader.all<Record<string, unknown>>(sql`SELECT computer_id, update_id, state FROM computer_updates ORDER BY 1, 2`)).map((r) => [
      ...Object.values(r),
    ]),
    counts: (
      await n.node.db!.reader.all<Record<string, unknown>>(
        sql`SELECT * FROM update_compliance WHERE installed + required + unknown + superseded > 0 ORDER BY update_id`,
      )
    ).map((r) => [...Object.values(r)]),
    summaries: (
      (await api(n.url, n.token, '/api/v1/computers')).body.items as { id: number; required: number; unknown: number; requiredBySeverity: unknown }[]
    ).map((c) => [c.id, c.required, c.unknown, c.requiredBySeverity]),
  });
  const incremental = await snapshot();
  const full = await api(n.url, n.token, '/api/v1/assessment/run', { method: 'POST' });
  t.equal(full.status, 200);
  t.equal(full.body.computers, 4);
  t.same(await snapshot(), incremental, 'full and incremental assessment agree');
  t.match(await compliance('test-3'), { installed: 0, required: 3 });

  // An inventory delta on top: a computer installs the superseding update by KB.
  const c0 = (await api(n.url, n.token, `/api/v1/computers/${computers[0]}`)).body;
  const d = await report(n, token, { agentKey: 'contoso-0-pc', name: 'C0', delta: { baseScanId: c0.scanId, kbs: { add: ['5000003'] } } });
  t.equal(d.status, 200);
  t.same(await required(n, computers[0]!), [], 'read right after the report: nothing required');
  t.same(
    (await api(n.url, n.token, `/api/v1/computers/${computers[0]}/updates?state=superseded`)).body.items.map((x: { kb: string }) => x.kb),
    ['5000002'],
    'still superseded: its successor is installed',
  );
  const afterDelta = await snapshot();
  await api(n.url, n.token, '/api/v1/assessment/run', { method: 'POST' });
  t.same(await snapshot(), afterDelta, 'the delta left the same state a full run computes');

  // v3: only update 3's installed rule changes (fixed from 1.0.1 on): reassessed though nothing else did.
  const c3 = await writeSignedCatalog(dir, keys, 'v3.gz', header('v3', 2), [
    upd(2, { severity: 'Low' }),
    upd(3, { supersedes: ['5000002'], severity: 'Important', installed: { any: [{ kb: '5000003' }, { product: P, version: { gte: '1.0.1' } }] } }),
  ]);
  t.equal((await uploadCatalog(n.url, n.token, c3.file, c3.sig)).status, 201);
  await n.node.assessment!.assessor.idle();
  t.same(await required(n, computers[1]!), [], '1.0.1 now has the fix of update 3');
  t.match(await compliance('test-3'), { installed: 3, required: 0 });
  const afterRule = await snapshot();
  await api(n.url, n.token, '/api/v1/assessment/run', { method: 'POST' });
  t.same(await snapshot(), afterRule, 'the rule change left the same state a full run computes');
});

t.test('a node without computers keeps no catalog index; the first report loads it, and catalog changes are assessed from then on', async (t) => {
  const dir = await tempDir(t);
  const keys = await makeKeys(dir);
  const n = await startNode(t, { trustedKeys: [keys.pubFile] });
  const P = 'Contoso App';
  const upd = (i: number, over: Record<string, unknown> = {}) =>
    sampleUpdate(i, { product: P, applicability: { product: P }, installed: { product: P, version: { gte: `1.0.${i}` } }, files: [], ...over });
  const status = async () => (await api(n.url, n.token, '/api/v1/assessment')).body as { updates: number; indexed: boolean; cursor: number; head: number };
  const caughtUp = () => waitFor(async () => ((s) => (s.cursor === s.head ? s : null))(await status()), 'the assessment caught up');

  // Two releases with no computer: the change log is followed, the index is not kept.
  const c1 = await writeSignedCatalog(dir, keys, 'v1.gz', header('v1', 2, new Date(Date.UTC(2024, 0, 1))), [upd(1), upd(2)]);
  t.equal((await uploadCatalog(n.url, n.token, c1.file, c1.sig)).status, 201);
  t.match(await caughtUp(), { indexed: false, updates: 2 }, 'not indexed; the live catalog counted');
  const c2 = await writeSignedCatalog(dir, keys, 'v2.gz', header('v2', 3, new Date(Date.UTC(2024, 0, 2))), [upd(1), upd(2, { severity: 'Critical' }), upd(3)]);
  t.equal((await uploadCatalog(n.url, n.token, c2.file, c2.sig)).status, 201);
  t.match(await caughtUp(), { indexed: false, updates: 3 });

  // The first report loads the index whole: the computer is assessed against v2.
  const token = await enrol(n);
  const r = await report(n, token, {
    agentKey: 'contoso-pc',
    name: 'C',
    full: { os: { family: 'windows' }, products: [{ name: P, version: '1.0.1' }], kbs: [] },
  });
  t.equal(r.status, 200);
  const id = r.body.computerId as number;
  t.same(await required(n, id), ['5000002', '5000003'], 'required against the newest catalog');
  t.equal(await filterCount(n, 'severity:critical'), 1, "v2's severity is in the index");
  t.match(await status(), { indexed: true, updates: 3 });

  // From then on catalog changes are assessed incrementally, as on a node that always had computers.
  const c3 = await writeSignedCatalog(dir, keys, 'v3.gz', header('v3', 3, new Date(Date.UTC(2024, 0, 3))), [
    upd(1),
    upd(2, { severity: 'Critical', installed: { product: P, version: { gte: '1.0.0' } } }),
    upd(3),
  ]);
  t.equal((await uploadCatalog(n.url, n.token, c3.file, c3.sig)).status, 201);
  await caughtUp();
  t.same(await required(n, id), ['5000003'], "v3's rule for update 2 says it is installed");
  t.equal((await api(n.url, n.token, '/api/v1/assessment/run', { method: 'POST' })).status, 200);
  t.same(await required(n, id), ['5000003'], 'a full reassessment agrees');
});
