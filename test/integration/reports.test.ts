import t, { type Test } from 'tap';
import { api, header, makeKeys, sampleUpdate, startNode, tempDir, uploadCatalog, writeSignedCatalog, type RunningNode } from '../helpers.js';

const W11 = 'Windows 11 Version 23H2 for x64-based Systems';
const W10 = 'Windows 10 Version 22H2 for x64-based Systems';

/**
 * A catalog and five computers whose report figures are worked out by hand:
 *
 *   test-1 W11 Critical  KB5000001 CVE-2024-10001 (exploited)
 *   test-2 W11 Important KB5000002 CVE-2024-10002
 *   test-3 W11 Critical  KB5000003 CVE-2024-10001, CVE-2024-10003; supersedes KB5000001
 *   test-4 W10 Moderate  KB5000004 CVE-2024-10004
 *
 *   A  W11, no KBs        test-1 superseded (test-3 required), test-2 and test-3 required
 *   B  W11, KB5000003     test-1 superseded (test-3 installed), test-2 required
 *   C  W11, KB5000002, 3  test-1 superseded, nothing required
 *   D  W10, no KBs        test-4 required
 *   E  W10, KB5000004     nothing required; last scan three days ago (stale)
 */
async function setup(t: Test) {
  const dir = await tempDir(t);
  const keys = await makeKeys(dir);
  const n = await startNode(t, { trustedKeys: [keys.pubFile] });
  const updates = [
    sampleUpdate(1, { severity: 'Critical', cveDetails: [{ id: 'CVE-2024-10001', exploited: true }] } as never),
    sampleUpdate(2, { severity: 'Important' }),
    sampleUpdate(3, { severity: 'Critical', cves: ['CVE-2024-10001', 'CVE-2024-10003'], supersedes: ['5000001'] }),
    sampleUpdate(4, { severity: 'Moderate', product: W10, applicability: { product: W10 } }),
  ];
  const cat = await writeSignedCatalog(dir, keys, 'c.gz', header('v1', updates.length), updates);
  t.equal((await uploadCatalog(n.url, n.token, cat.file, cat.sig)).status, 201);
  const report = (key: string, name: string, product: string, kbs: string[], at = Date.now()) =>
    n.node.assessment!.assessor.report(
      { agentKey: key, name, full: { os: { family: 'windows', name: product, arch: 'x64', language: 'en-us' }, products: [{ name: product }], kbs } },
      at,
    );
  const ids: Record<string, number> = {};
  ids.A = (await report('computer-a', 'PC "A", lab', W11, [])).computerId;
  ids.B = (await report('computer-b', 'PC-B', W11, ['5000003'])).computerId;
  ids.C = (await report('computer-c', 'PC-C', W11, ['5000002', '5000003'])).computerId;
  ids.D = (await report('computer-d', '=HYPERLINK(1)', W10, [])).computerId;
  ids.E = (await report('computer-e', 'PC-E', W10, ['5000004'], Date.now() - 3 * 86_400_000)).computerId;
  return { n, ids };
}

/** A CSV parser for the tests (RFC 4180: quoted fields, doubled quotes, CRLF). */
function parseCsv(text: string): string[][] {
  const rows: string[][] = [];
  let row: string[] = [];
  let field = '';
  let quoted = false;
  for (let i = 0; i < text.length; i++) {
    const ch = text[i]!;
    if (quoted) {
      if (ch === '"' && text[i + 1] === '"') {
        field += '"';
        i++;
      } else if (ch === '"') quoted = false;
      else field += ch;
    } else if (ch === '"') quoted = true;
    else if (ch === ',') {
      row.push(field);
      field = '';
    } else if (ch === '\r' && text[i + 1] === '\n') {
      row.push(field);
      rows.push(row);
      row = [];
      field = '';
      i++;
    } else field += ch;
  }
  return rows;
}

async function csv(n: RunningNode, path: string, accept = false) {
  const res = await fetch(n.url + path, { headers: { authorization: `Bearer ${n.token}`, ...(accept ? { accept: 'text/csv' } : {}) } });
  t.match(res.headers.get('content-type'), /^text\/csv/);
  return parseCsv(await res.text());
}

t.test('compliance: summary, by update, by computer, against figures worked out by hand', async (t) => {
  const { n, ids } = await setup(t);
  const s = await api(n.url, n.token, '/api/v1/reports/compliance');
  t.equal(s.status, 200);
  t.same(s.body.summary, {
    computers: 5,
    compliant: 2,
    compliantPercent: 40,
    required: 4,
    requiredBySeverity: { Critical: 1, Important: 2, Moderate: 1, Low: 0, Unrated: 0 },
    urgentComputers: 1,
    stale: 1,
  });
  const crit = await api(n.url, n.token, '/api/v1/reports/compliance?severity=Critical');
  t.same(
    crit.body.summary,
    {
      computers: 5,
      compliant: 4,
      compliantPercent: 80,
      required: 1,
      requiredBySeverity: { Critical: 1, Important: 0, Moderate: 0, Low: 0, Unrated: 0 },
      urgentComputers: 1,
      stale: 1,
    },
    'critical updates only',
  );
  const w10 = await api(n.url, n.token, `/api/v1/reports/compliance?filter=${encodeURIComponent(`os:${W10}`)}`);
  t.same(
    w10.body.summary,
    {
      computers: 2,
      compliant: 1,
      compliantPercent: 50,
      required: 1,
      requiredBySeverity: { Critical: 0, Important: 0, Moderate: 1, Low: 0, Unrated: 0 },
      urgentComputers: 0,
      stale: 1,
    },
    'the W10 computers',
  );

  // By update: most required first; superseded counts as compliant.
  const p1 = await api(n.url, n.token, '/api/v1/reports/compliance?view=updates&limit=2');
  const p2 = await api(n.url, n.token, `/api/v1/reports/compliance?view=updates&limit=2&cursor=${p1.body.nextCursor}`);
  t.equal(p2.body.nextCursor, null);
  const rows = [...p1.body.items, ...p2.body.items].map((u: any) => [u.id, u.applicable, u.installed, u.superseded, u.required, u.unknown, u.compliantPercent]);
  t.same(rows, [
    ['test-2', 3, 1, 0, 2, 0, 33.3],
    ['test-3', 3, 2, 0, 1, 0, 66.7],
    ['test-4', 2, 1, 0, 1, 0, 50],
    ['test-1', 3, 0, 3, 0, 0, 100],
  ]);
  const f = await api(n.url, n.token, `/api/v1/reports/compliance?view=updates&filter=${encodeURIComponent(`os:${W11}`)}`);
  t.same(
    f.body.items.map((u: any) => [u.id, u.required, u.installed]),
    [
      ['test-2', 2, null],
      ['test-3', 1, null],
    ],
    "for a filter's computers: the required counts (installed pairs are not stored)",
  );

  // By computer.
  const c = await api(n.url, n.token, '/api/v1/reports/compliance?view=computers');
  t.same(
    c.body.items.map((m: any) => [m.id, m.required, m.urgent, m.stale]),
    [
      [ids.A, 2, 1, false],
      [ids.B, 1, 0, false],
      [ids.D, 1, 0, false],
      [ids.C, 0, 0, false],
      [ids.E, 0, 0, true],
    ],
  );
  t.same(c.body.items[0].requiredBySeverity, { Critical: 1, Important: 1, Moderate: 0, Low: 0, Unrated: 0 });
  const ci = await api(n.url, n.token, '/api/v1/reports/compliance?view=computers&severity=Important');
  t.same(
    ci.body.items.map((m: any) => [m.id, m.required]),
    [
      [ids.A, 1],
      [ids.B, 1],
      [ids.C, 0],
      [ids.D, 0],
      [ids.E, 0],
    ],
    'required counted within the update filter',
  );

  t.equal((await api(n.url, n.token, '/api/v1/reports/compliance?view=updates&cursor=bogus')).status, 400);
  t.equal((await api(n.url, n.token, '/api/v1/reports/compliance?filter=custom:99')).status, 404);
  t.equal((await api(n.url, n.token, '/api/v1/reports/compliance?releasedSince=yesterday')).status, 400);
});

t.test('CSV: a header row, every row, escaped, equal to the JSON', async (t) => {
  const { n } = await setup(t);
  const sum = await csv(n, '/api/v1/reports/compliance?format=csv');
  t.same(sum, [
    [
      'computers',
      'compliant',
      'compliant_percent',
      'required',
      'required_critical',
      'required_important',
      'required_moderate',
      'required_low',
      'required_unrated',
      'urgent_computers',
      'stale',
    ],
    ['5', '2', '40', '4', '1', '2', '1', '0', '0', '1', '1'],
  ]);
  const upd = await csv(n, '/api/v1/reports/compliance?view=updates', true);
  t.equal(upd[0]![0], 'update');
  const json = await api(n.url, n.token, '/api/v1/reports/compliance?view=updates&limit=1000');
  t.same(
    upd.slice(1).map((r) => [r[0], Number(r[7]), Number(r[10]), Number(r[12])]),
    json.body.items.map((u: any) => [u.id, u.applicable, u.required, u.compliantPercent]),
    'the CSV rows are the JSON items',
  );
  const comp = await csv(n, '/api/v1/reports/compliance?view=computers&format=csv');
  t.equal(comp.length, 6);
  t.equal(comp[1]![1], 'PC "A", lab', 'quotes and commas survive');
  t.equal(comp.find((r) => r[1]!.includes('HYPERLINK'))![1], "'=HYPERLINK(1)", 'a formula is defused');
  const vul = await csv(n, '/api/v1/reports/vulnerabilities?format=csv');
  t.same(
    vul.map((r) => r.slice(0, 4)),
    [
      ['cve', 'severity', 'exploited', 'affected_computers'],
      ['CVE-2024-10002', 'Important', 'false', '2'],
      ['CVE-2024-10001', 'Critical', 'true', '1'],
      ['CVE-2024-10003', 'Critical', 'false', '1'],
      ['CVE-2024-10004', 'Moderate', 'false', '1'],
    ],
  );
});

t.test('vulnerabilities and delivery reports', async (t) => {
  const { n, ids } = await setup(t);
  const v = await api(n.url, n.token, '/api/v1/reports/vulnerabilities');
  t.same(
    v.body.items.map((x: any) => [x.cve, x.severity, x.exploited, x.affectedComputers, x.fixes.map((f: any) => f.updateId)]),
    [
      ['CVE-2024-10002', 'Important', false, 2, ['test-2']],
      ['CVE-2024-10001', 'Critical', true, 1, ['test-1', 'test-3']],
      ['CVE-2024-10003', 'Critical', false, 1, ['test-3']],
      ['CVE-2024-10004', 'Moderate', false, 1, ['test-4']],
    ],
  );
  t.same(
    v.body.items[1].fixes.map((f: any) => [f.kb, f.required]),
    [
      ['5000001', 0],
      ['5000003', 1],
    ],
  );
  const p = await api(n.url, n.token, '/api/v1/policies', {
    method: 'POST',
    body: JSON.stringify({ name: 'Important', updates: ['test-2'], targets: { all: true } }),
  });
  await n.node.delivery!.engine.idle();
  const v2 = await api(n.url, n.token, '/api/v1/reports/vulnerabilities?severity=Important');
  t.same(
    v2.body.items.map((x: any) => [x.cve, x.fixes[0].policies]),
    [['CVE-2024-10002', 1]],
    'the fix is in one policy',
  );

  const d = await api(n.url, n.token, `/api/v1/reports/delivery?policy=${p.body.id}&limit=1`);
  t.equal(d.status, 200);
  t.same(d.body.policy, { id: p.body.id, name: 'Important' });
  t.match(d.body.totals, { computers: 2, targeted: 2, installed: 0, failed: 0 });
  t.same(
    d.body.items.map((i: any) => [i.computerId, i.updateId, i.state]),
    [[ids.A, 'test-2', 'targeted']],
  );
  const d2 = await api(n.url, n.token, `/api/v1/reports/delivery?policy=${p.body.id}&limit=1&cursor=${encodeURIComponent(d.body.nextCursor)}`);
  t.same(
    d2.body.items.map((i: any) => i.computerId),
    [ids.B],
  );
  t.equal(d2.body.nextCursor, null);
  const dc = await csv(n, `/api/v1/reports/delivery?policy=${p.body.id}&format=csv`);
  t.same(
    dc.map((r) => [r[0], r[2], r[4]]),
    [
      ['computer', 'update', 'state'],
      [String(ids.A), 'test-2', 'targeted'],
      [String(ids.B), 'test-2', 'targeted'],
    ],
  );
  t.equal((await api(n.url, n.token, '/api/v1/reports/delivery?policy=nope')).status, 404);
  t.equal((await api(n.url, n.token, '/api/v1/reports/delivery')).status, 400);
});

t.test('the daily trend: one snapshot a day, the last of the day, oldest first, bounded', async (t) => {
  const { n } = await setup(t);
  const trend = n.node.reports!.trend;
  const now = Date.now();
  await trend.snapshot(new Date(now - 500 * 86_400_000));
  await trend.snapshot(new Date(now - 2 * 86_400_000));
  await trend.snapshot(new Date(now));
  const r = await api(n.url, n.token, '/api/v1/reports/compliance/trend?days=3');
  t.same(
    r.body.days.map((d: any) => d.day),
    [new Date(now - 2 * 86_400_000).toISOString().slice(0, 10), new Date(now).toISOString().slice(0, 10)],
  );
  t.match(r.body.days[1].summary, { computers: 5, compliantPercent: 40 });
  const all = await api(n.url, n.token, '/api/v1/reports/compliance/trend?days=400');
  t.equal(all.body.days.length, 2, 'the snapshot of 500 days ago was pruned');
  t.equal((await api(n.url, n.token, '/api/v1/reports/compliance/trend?days=0')).status, 400);
  // Today's point is the live summary (the gauge's figures), not the last hourly snapshot.
  const live = (await api(n.url, n.token, '/api/v1/reports/compliance')).body.summary;
  t.same(all.body.days.at(-1).summary, live, "today's point equals the live summary");
});

t.test('the trend starts with the first assessed computer: none reads as nothing, not as 100%', async (t) => {
  const n = await startNode(t);
  await n.node.reports!.trend.snapshot();
  const r = await api(n.url, n.token, '/api/v1/reports/compliance/trend?days=90');
  t.same(r.body.days, [], 'no computer: no point (the start-up snapshot recorded nothing)');
});
