import t, { type Test } from 'tap';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import {
  ADMIN_TOKEN as T,
  api,
  consoleCookie,
  header,
  makeKeys,
  sampleUpdate,
  spawnNode,
  tempDir,
  uploadCatalog,
  writeSignedCatalog,
  type Keys,
  type NodeProcess,
} from '../helpers.js';
import { startVendor, waitFor, type Vendor } from '../vendor.js';

/**
 * Catalog freshness goals on a tree of real processes (a root, berlin (de), paris
 * (fr)) whose clock the test sets: every node reads it from one file
 * (--clock-file), so hours pass without sleeping.
 */

const HOUR = 3_600_000;

async function node(t: Test, dir: string, keys: Keys, name: string, languages: string, parent?: NodeProcess, restart = false): Promise<NodeProcess> {
  const args = [
    '--data',
    join(dir, name),
    '--name',
    name,
    '--languages',
    languages,
    '--insecure',
    '--trusted-key',
    keys.pubFile,
    '--admin-token',
    T,
    '--report-interval',
    '1',
    '--clock-file',
    join(dir, 'clock'),
  ];
  if (parent && restart) args.push('--upstream', `127.0.0.1:${parent.grpcPort}`);
  else if (parent) {
    const tok = await api(parent.url, T, '/api/v1/hierarchy/join-tokens', { method: 'POST', body: '{}' });
    args.push('--upstream', `127.0.0.1:${parent.grpcPort}`, '--join-token', tok.body.token);
  }
  const n = await spawnNode(t, args);
  await api(n.url, T, '/api/v1/settings/content', {
    method: 'PUT',
    body: JSON.stringify({ need: 'languages', reserveBytes: 0, retryBaseMs: 100, retryMaxMs: 300, maxAttempts: 1000 }),
  });
  return n;
}

function update(vendor: Vendor, n: number, language: string) {
  const f = vendor.add(`/kb${n}.msu`, 3000 + n);
  return { vf: f, u: sampleUpdate(n, { files: [{ name: `kb${n}.msu`, url: vendor.url(f.path), size: f.data.length, sha256: f.sha256, language }] }) };
}

const freshness = async (n: NodeProcess, scope = 'node') => (await api(n.url, T, `/api/v1/reports/freshness?scope=${scope}`)).body;
/** The classes of one node for one release, as a node's report gives them. */
const rowsOf = (rep: any, version: string, nodeName: string) =>
  rep.releases.find((r: any) => r.version === version)?.nodes.find((n: any) => n.name === nodeName)?.classes;
const brief = (classes: any[] | undefined) =>
  classes?.map((c) => ({ class: c.class, reachedAt: c.reachedAt, filesVerifiedAt: c.filesVerifiedAt, goalHours: c.goalHours, late: c.late, status: c.status }));

t.test('catalog freshness: in time everywhere, a site offline past its goal, files after metadata, the same rows at the root and the site', async (t) => {
  t.setTimeout(300_000);
  const dir = await tempDir(t, 'patchtree-fresh-');
  const keys = await makeKeys(dir);
  const vendor = await startVendor(t);
  const clockFile = join(dir, 'clock');
  const setClock = (ms: number) => writeFileSync(clockFile, String(ms));
  const iso = (ms: number) => new Date(ms).toISOString();

  const P1 = Date.parse('2026-01-10T00:00:00.000Z');
  setClock(P1 + HOUR);
  const root = await node(t, dir, keys, 'hq', 'en');
  const berlin = await node(t, dir, keys, 'berlin', 'de', root);
  let paris = await node(t, dir, keys, 'paris', 'fr', root);
  const sites = { berlin, paris };

  /** Waits until the root's tree rows for each site equal the site's own rows (all releases). */
  async function sameAtRoot(what: string, names: string[] = Object.keys(sites)) {
    let last: any;
    try {
      await waitFor(
        async () => {
          const tree = await freshness(root, 'tree');
          last = { tree: {}, own: {} };
          for (const name of names) {
            const own = await freshness(sites[name as keyof typeof sites]);
            for (const r of own.releases) {
              last.tree[`${r.version}/${name}`] = brief(rowsOf(tree, r.version, name));
              last.own[`${r.version}/${name}`] = brief(rowsOf(own, r.version, name));
            }
          }
          return JSON.stringify(last.tree) === JSON.stringify(last.own);
        },
        what,
        30_000,
      );
      t.pass(what);
    } catch {
      t.same(last?.tree, last?.own, what);
    }
  }

  // Release 1, published at P1, imported an hour later: neutral, German and French files.
  const r1 = [update(vendor, 1, 'neutral'), update(vendor, 2, 'de-de'), update(vendor, 3, 'fr-fr')];
  const c1 = await writeSignedCatalog(
    dir,
    keys,
    'v1.gz',
    header('v1', 3, new Date(P1)),
    r1.map((x) => x.u),
  );
  t.equal((await uploadCatalog(root.url, T, c1.file, c1.sig)).status, 201);
  const inTime = { reachedAt: iso(P1 + HOUR), filesVerifiedAt: iso(P1 + HOUR), late: 0, status: 'within-goal' };
  for (const [name, n, other] of [
    ['berlin', berlin, 'de'],
    ['paris', paris, 'fr'],
  ] as const) {
    const rows = await waitFor(async () => {
      const c = rowsOf(await freshness(n), 'v1', name);
      return c?.every((x: any) => x.status === 'within-goal') && c.length === 2 ? c : undefined;
    }, `release 1 complete at ${name}`);
    t.match(
      rows,
      [
        { class: 'neutral-en', goalHours: 24, ...inTime, missing: { updates: 0, files: 0 } },
        { class: 'other-languages', goalHours: 48, ...inTime },
      ],
      `${name}: both classes in time (its ${other} file counts as other languages)`,
    );
  }
  const atRoot = rowsOf(await freshness(root), 'v1', 'hq');
  t.same(
    atRoot.map((c: any) => c.class),
    ['neutral-en', 'other-languages'],
    'the root holds every language of its subtree',
  );
  await sameAtRoot("release 1: the root's rows for each site equal the site's own");
  const tree1 = await freshness(root, 'tree');
  t.same(
    tree1.releases[0].nodes.map((n: any) => n.name),
    ['hq', 'berlin', 'paris'],
    'the tree report: the root, then every site',
  );

  // Paris goes offline. Release 2 (published P2) brings a neutral update and a French one.
  paris.child.kill('SIGTERM');
  await paris.exited;
  const P2 = P1 + 48 * HOUR;
  setClock(P2 + HOUR);
  const r2 = [update(vendor, 4, 'neutral'), update(vendor, 5, 'fr-fr')];
  const c2 = await writeSignedCatalog(
    dir,
    keys,
    'v2.gz',
    header('v2', 5, new Date(P2)),
    [...r1, ...r2].map((x) => x.u),
  );
  t.equal((await uploadCatalog(root.url, T, c2.file, c2.sig)).status, 201);
  await waitFor(async () => rowsOf(await freshness(berlin), 'v2', 'berlin')?.[0]?.status === 'within-goal', 'release 2 at berlin');
  t.same(
    brief(rowsOf(await freshness(berlin), 'v2', 'berlin')),
    [{ class: 'neutral-en', reachedAt: iso(P2 + HOUR), filesVerifiedAt: iso(P2 + HOUR), goalHours: 24, late: 0, status: 'within-goal' }],
    'berlin gets only the neutral update of release 2',
  );

  // (The root has berlin's report of it before hours pass.)
  await waitFor(async () => rowsOf(await freshness(root, 'tree'), 'v2', 'berlin')?.[0]?.status === 'within-goal', "berlin's release 2 at the root");
  // 30 hours after publication: paris is 6 hours past the 24 h goal, and the 48 h class not yet due.
  setClock(P2 + 30 * HOUR);
  const overdue = await waitFor(async () => {
    const c = rowsOf(await freshness(root, 'tree'), 'v2', 'paris');
    return c?.[0]?.status === 'overdue' ? c : undefined;
  }, 'paris overdue at the root');
  t.match(overdue, [
    { class: 'neutral-en', reachedAt: null, filesVerifiedAt: null, goalHours: 24, late: 6, status: 'overdue', missing: { updates: 1 } },
    { class: 'other-languages', reachedAt: null, goalHours: 48, late: 0, status: 'pending', missing: { updates: 1 } },
  ]);
  const missedLine = (n: NodeProcess) => n.logs.filter((l) => l.msg === 'catalog release v2 missed its freshness goal at paris');
  await waitFor(async () => missedLine(root).length > 0, 'the problem logged at the root');
  const h = (await api(root.url, T, '/api/v1/hierarchy')).body;
  t.match(
    h.problems.find((p: any) => p.release === 'v2'),
    { kind: 'catalog-freshness', node: { name: 'paris' }, classes: ['neutral-en'], lateHours: 6 },
  );
  const metrics = await (await fetch(`${root.url}/metrics`)).text();
  t.match(metrics, /patchtree_freshness_overdue_seconds\{node="paris"\} 21600\b/, 'the gauge: paris is 6 h past the goal of its oldest overdue release');
  t.match(metrics, /patchtree_freshness_overdue_seconds\{node="berlin"\} 0\b/);

  // Back online at the same instant: release 2 reaches paris 30 h after publication.
  paris = await node(t, dir, keys, 'paris', 'fr', root, true);
  sites.paris = paris;
  await waitFor(
    async () => rowsOf(await freshness(paris), 'v2', 'paris')?.every((c: any) => c.status !== 'overdue' && c.status !== 'pending'),
    'release 2 at paris',
  );
  t.same(
    brief(rowsOf(await freshness(paris), 'v2', 'paris')),
    [
      { class: 'neutral-en', reachedAt: iso(P2 + 30 * HOUR), filesVerifiedAt: iso(P2 + 30 * HOUR), goalHours: 24, late: 6, status: 'late' },
      { class: 'other-languages', reachedAt: iso(P2 + 30 * HOUR), filesVerifiedAt: iso(P2 + 30 * HOUR), goalHours: 48, late: 0, status: 'within-goal' },
    ],
    'late by 6 h in one class, within the goal in the other',
  );
  await sameAtRoot("release 2: the root's rows for each site equal the site's own");
  await new Promise((r) => setTimeout(r, 2_500)); // a few more checks at the root (every report interval)
  t.equal(missedLine(root).length, 1, 'the miss was logged once, not on every check');

  // Release 3: a German update whose file the vendor holds back until after the goal.
  const P3 = P2 + 96 * HOUR;
  setClock(P3 + HOUR);
  const r3 = update(vendor, 6, 'de-de');
  vendor.set(r3.vf.path, { kind: 'status', status: 503 });
  const c3 = await writeSignedCatalog(
    dir,
    keys,
    'v3.gz',
    header('v3', 6, new Date(P3)),
    [...r1, ...r2, r3].map((x) => x.u),
  );
  t.equal((await uploadCatalog(root.url, T, c3.file, c3.sig)).status, 201);
  await waitFor(async () => rowsOf(await freshness(berlin), 'v3', 'berlin')?.[0]?.reachedAt === iso(P3 + HOUR), "release 3's metadata at berlin");
  t.match(
    rowsOf(await freshness(berlin), 'v3', 'berlin'),
    [{ class: 'other-languages', reachedAt: iso(P3 + HOUR), filesVerifiedAt: null, status: 'pending', missing: { updates: 0, files: 1 } }],
    'metadata there, the file not yet',
  );
  setClock(P3 + 50 * HOUR);
  vendor.set(r3.vf.path, { kind: 'normal' });
  const late = await waitFor(async () => {
    const c = rowsOf(await freshness(berlin), 'v3', 'berlin');
    return c?.[0]?.filesVerifiedAt ? c : undefined;
  }, "release 3's file at berlin");
  t.same(
    brief(late),
    [{ class: 'other-languages', reachedAt: iso(P3 + HOUR), filesVerifiedAt: iso(P3 + 50 * HOUR), goalHours: 48, late: 2, status: 'late' }],
    'judged by its file: 2 h late, though its metadata came in time',
  );
  await sameAtRoot("release 3: the root's rows for each site equal the site's own");

  // The console's grid: sites x classes, coloured by goal status; each site's page shows its own.
  const grid = await (await fetch(`${root.url}/freshness`, { headers: { cookie: await consoleCookie(root.url, T) } })).text();
  const parisId = (await api(paris.url, T, '/api/v1/hierarchy')).body.node.id;
  const v2 = grid.slice(grid.indexOf('data-release="v2"'), grid.indexOf('</table>', grid.indexOf('data-release="v2"')));
  t.match(
    v2,
    new RegExp(`<tr data-node="${parisId}"><td>paris</td><td class="fresh-late"[^>]*>late by 6 h</td><td class="fresh-within-goal"[^>]*>in time</td></tr>`),
    'paris late by 6 h in the grid',
  );
  t.match(grid, /release v2 at <strong>paris<\/strong> \(neutral-en\)/, 'and listed among the missed goals');
  const own = await (await fetch(`${berlin.url}/freshness`, { headers: { cookie: await consoleCookie(berlin.url, T) } })).text();
  t.match(own, /<td>berlin \(this node\)<\/td><td class="fresh-late"[^>]*>late by 2 h<\/td>/, "berlin's own page: release 3 late by 2 h");
  t.notMatch(own, />paris</, 'a site shows its own rows only');

  // CSV, and goals replicated from the root (read-only below it).
  const csv = await (await fetch(`${root.url}/api/v1/reports/freshness?scope=tree&format=csv`, { headers: { authorization: `Bearer ${T}` } })).text();
  t.match(
    csv.split('\r\n')[0],
    'release,published_at,node,name,stale,class,goal_hours,reached_at,files_verified_at,status,late_hours,missing_updates,missing_files',
  );
  t.match(csv, /\nv2,[^,]+,[0-9a-f-]+,paris,false,neutral-en,24,[^,]+,[^,]+,late,6,0,0\r\n/);
  const goals = { neutralEnglishHours: 12, otherLanguagesHours: 36, families: {} };
  t.equal((await api(root.url, T, '/api/v1/settings/freshness', { method: 'PUT', body: JSON.stringify(goals) })).status, 200);
  await waitFor(async () => (await api(berlin.url, T, '/api/v1/settings/freshness')).body.neutralEnglishHours === 12, 'the goals at berlin');
  t.equal((await api(berlin.url, T, '/api/v1/settings/freshness', { method: 'PUT', body: JSON.stringify(goals) })).status, 409, 'read-only below the root');
  t.equal(rowsOf(await freshness(berlin), 'v3', 'berlin')[0].late, 14, 'judged again with the new goal: 50 h against 36 h');
  // A product family with a goal of its own is a class of its own, whatever the languages.
  t.equal((await api(root.url, T, '/api/v1/settings/freshness', { method: 'PUT', body: JSON.stringify({ ...goals, families: { Windows: 60 } }) })).status, 200);
  await waitFor(async () => rowsOf(await freshness(berlin), 'v3', 'berlin')?.[0]?.class === 'family:Windows', 'the family goal at berlin');
  t.match(rowsOf(await freshness(berlin), 'v3', 'berlin'), [
    { class: 'family:Windows', goalHours: 60, late: 0, status: 'within-goal', filesVerifiedAt: iso(P3 + 50 * HOUR) },
  ]);
});
