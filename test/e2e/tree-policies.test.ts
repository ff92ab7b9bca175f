import t from 'tap';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import {
  ADMIN_TOKEN as T,
  api,
  consoleCookie,
  startAgent,
  header,
  makeKeys,
  runCli,
  sampleUpdate,
  tempDir,
  treeNode,
  uploadCatalog,
  writeSignedCatalog,
  type NodeProcess,
} from '../helpers.js';
import { startVendor, waitFor } from '../vendor.js';

/**
 * The whole tree at work, every part a real process: a root (en) with two sites,
 * berlin (de, with hamburg below it) and paris (fr). Policies go down filtered by
 * language and are installed by real agents; compliance comes back up.
 */

const W11 = 'Windows 11 Version 23H2 for x64-based Systems';
const SEV = ['Critical', 'Important', 'Moderate', 'Low', 'Unrated'];

/** A node's own (scope=node) compliance summary. */
const own = async (n: NodeProcess) => (await api(n.url, T, '/api/v1/reports/compliance')).body.summary;
const tree = async (n: NodeProcess) => (await api(n.url, T, '/api/v1/reports/compliance?scope=tree')).body;
const policyAt = async (n: NodeProcess, id: string) => api(n.url, T, `/api/v1/policies/${id}`);
const policyNames = async (n: NodeProcess) => ((await api(n.url, T, '/api/v1/policies')).body.items as { name: string }[]).map((p) => p.name).sort();

/** Adds summaries field by field (the test's own arithmetic, not the node's). */
function add(list: any[]) {
  const out: any = { computers: 0, compliant: 0, required: 0, urgentComputers: 0, stale: 0, requiredBySeverity: Object.fromEntries(SEV.map((s) => [s, 0])) };
  for (const s of list) {
    for (const k of ['computers', 'compliant', 'required', 'urgentComputers', 'stale']) out[k] += s[k];
    for (const k of SEV) out.requiredBySeverity[k] += s.requiredBySeverity[k] ?? 0;
  }
  return out;
}
const counts = (s: any) => ({
  computers: s.computers,
  compliant: s.compliant,
  required: s.required,
  urgentComputers: s.urgentComputers,
  stale: s.stale,
  requiredBySeverity: s.requiredBySeverity,
});

t.test('policies down, compliance up: a root policy installed by agents at the right sites, local policies, disable, silence', async (t) => {
  t.setTimeout(300_000);
  const dir = await tempDir(t, 'patchtree-treepol-');
  const keys = await makeKeys(dir);
  const vendor = await startVendor(t);

  // test-1 neutral (every site), test-2 German only, test-3 French only, test-4 neutral (for the held policy).
  const langs = { 1: 'neutral', 2: 'de-de', 3: 'fr-fr', 4: 'neutral' } as const;
  const updates = ([1, 2, 3, 4] as const).map((n) => {
    const f = vendor.add(`/kb${n}.msu`, 4000 + n);
    return sampleUpdate(n, {
      files: [
        {
          name: `kb${n}.msu`,
          url: vendor.url(f.path),
          size: f.data.length,
          sha256: f.sha256,
          language: langs[n],
          installer: { type: 'command', command: `sh ${join(dir, 'install.sh')} "{file}" ${5000000 + n}` },
        },
      ],
      install: { successCodes: [0], rebootCodes: [3] },
    });
  });
  // The installer adds the KB to the inventory of the agent that runs it: <home>/inventory.json beside <home>/state/downloads/<sha256>/<file>.
  writeFileSync(
    join(dir, 'install.sh'),
    `#!/bin/sh\ninv="$(dirname "$(dirname "$(dirname "$(dirname "$1")")")")/inventory.json"\nsed -i "s/\\"kbs\\":\\[/\\"kbs\\":[\\"$2\\",/" "$inv"\necho "installed $2"\nexit 0\n`,
  );
  const cat = await writeSignedCatalog(dir, keys, 'c.gz', header('v1', updates.length), updates);

  const extra = ['--report-interval', '1'];
  const root = await treeNode(t, dir, keys, 'hq', 'en', undefined, extra);
  const berlin = await treeNode(t, dir, keys, 'berlin', 'de', root, extra);
  const hamburg = await treeNode(t, dir, keys, 'hamburg', 'de', berlin, extra);
  const paris = await treeNode(t, dir, keys, 'paris', 'fr', root, extra);
  const sites = { berlin, hamburg, paris };
  for (const n of [root, berlin, hamburg, paris])
    await api(n.url, T, '/api/v1/settings/content', {
      method: 'PUT',
      body: JSON.stringify({ need: 'marked', reserveBytes: 0, retryBaseMs: 100, retryMaxMs: 1000 }),
    });
  t.equal((await uploadCatalog(root.url, T, cat.file, cat.sig)).status, 201);
  await waitFor(
    async () => (await api(hamburg.url, T, '/api/v1/updates/test-2')).status === 200 && (await api(paris.url, T, '/api/v1/updates/test-3')).status === 200,
    'the catalog at every site',
  );

  // One computer with a real agent at berlin and at paris. The agent's state directory
  // sits beside its inventory, so the installer finds the inventory from the file path.
  const agents: Record<string, string> = {};
  for (const [name, node, language] of [
    ['berlin', berlin, 'de-de'],
    ['paris', paris, 'fr-fr'],
  ] as const) {
    const home = join(dir, `pc-${name}`);
    const state = join(home, 'state');
    mkdirSync(home, { recursive: true });
    writeFileSync(
      join(home, 'inventory.json'),
      JSON.stringify({ os: { family: 'windows', name: W11, version: '10.0.22631.2861', arch: 'x64', language }, products: [{ name: W11 }], kbs: ['1000'] }),
    );
    const et = await api(node.url, T, '/api/v1/agents/enrollment-tokens', { method: 'POST', body: JSON.stringify({ name: 'lab' }) });
    startAgent(t, node.url, state, et.body.token, join(home, 'inventory.json'), { name: `PC-${name}`, stdout: 'ignore' });
    agents[name] = state;
  }
  await waitFor(async () => (await own(berlin)).computers === 1 && (await own(paris)).computers === 1, 'both computers assessed');
  t.equal((await own(berlin)).required, 3, "berlin's computer needs test-1, test-2 and test-4 (test-3 is French only)");
  t.equal((await own(paris)).required, 3, "paris's computer needs test-1, test-3 and test-4");

  // A root policy for three updates, to every computer, any time.
  const created = await api(root.url, T, '/api/v1/policies', {
    method: 'POST',
    body: JSON.stringify({
      name: 'Root rollout',
      updates: ['test-1', 'test-2', 'test-3'],
      targets: { all: true },
      installation: { maintenance: { mode: 'any-time' } },
    }),
  });
  t.equal(created.status, 201, JSON.stringify(created.body));
  const pid = created.body.id as string;

  // Each site receives it with only the updates of its languages, read-only, naming its origin.
  const rootId = (await api(root.url, T, '/api/v1/hierarchy')).body.node.id;
  const want = { berlin: ['test-1', 'test-2'], hamburg: ['test-1', 'test-2'], paris: ['test-1', 'test-3'] };
  for (const [name, n] of Object.entries(sites)) {
    const p = await waitFor(async () => {
      const r = await policyAt(n, pid);
      return r.status === 200 ? r.body : undefined;
    }, `the policy at ${name}`);
    t.same(p.updates, want[name as keyof typeof want], `${name} gets the updates of its languages`);
    t.match(p, { origin: rootId, originName: 'hq', readOnly: true, enabled: true, installation: { maintenance: { mode: 'any-time' } } });
  }
  const edit = await api(berlin.url, T, `/api/v1/policies/${pid}`, { method: 'PATCH', body: JSON.stringify({ enabled: false }) });
  t.equal(edit.status, 409, 'a replicated policy is read-only at the site');
  t.match(edit.body.detail, /replicated from hq/);
  t.equal(edit.body.origin.id, rootId);
  t.equal((await api(paris.url, T, `/api/v1/policies/${pid}`, { method: 'DELETE' })).status, 409, 'nor can the site delete it');

  // Real agents install what their site's policy delivers.
  for (const [name, n] of [
    ['berlin', berlin],
    ['paris', paris],
  ] as const)
    await waitFor(async () => (await policyAt(n, pid)).body.delivery.installed === 2, `both updates installed at ${name}`, 60_000);
  const kbsAt = (name: string) => JSON.parse(readFileSync(join(dir, `pc-${name}`, 'inventory.json'), 'utf8')).kbs.sort();
  t.same(kbsAt('berlin'), ['1000', '5000001', '5000002'], "berlin's computer installed test-1 and the German test-2");
  t.same(kbsAt('paris'), ['1000', '5000001', '5000003'], "paris's computer installed test-1 and the French test-3");

  // The roll-up: the root's tree delivery report and compliance summary add up the sites.
  await waitFor(
    async () => (await api(root.url, T, `/api/v1/reports/delivery?policy=${pid}&scope=tree`)).body.totals?.installed === 4,
    'the tree delivery totals at the root',
  );
  const dt = (await api(root.url, T, `/api/v1/reports/delivery?policy=${pid}&scope=tree`)).body;
  t.same(
    Object.fromEntries(dt.nodes.map((n: any) => [n.name, n.totals.installed])),
    { hq: 0, berlin: 2, hamburg: 0, paris: 2 },
    'per node: installed at berlin and paris',
  );
  let last: any;
  try {
    await waitFor(
      async () => {
        const tr = await tree(root);
        const parts = { hq: await own(root), berlin: await own(berlin), hamburg: await own(hamburg), paris: await own(paris) };
        last = { tr, parts };
        const byName = Object.fromEntries(tr.nodes.map((n: any) => [n.name, counts(n.summary)]));
        return (
          tr.nodes.length === 4 &&
          Object.entries(parts).every(([k, v]) => JSON.stringify(byName[k]) === JSON.stringify(counts(v))) &&
          JSON.stringify(counts(tr.summary)) === JSON.stringify(add(Object.values(parts)))
        );
      },
      "the tree report equal to the sum of the sites' own reports",
      30_000,
    );
    t.pass("the root's tree report is the sum of every node's own report");
  } catch {
    t.same(last?.tr, last?.parts, "tree report vs the sites' own");
  }
  t.equal(last.tr.summary.computers, 2);
  t.equal(last.tr.summary.required, 2, 'only test-4 is left, at each site');
  const hamburgNode = last.tr.nodes.find((n: any) => n.name === 'hamburg');
  const berlinId = (await api(berlin.url, T, '/api/v1/hierarchy')).body.node.id;
  t.equal(hamburgNode.parentId, berlinId, "hamburg's summary came through berlin, which forwards its subtree");
  t.ok(
    last.tr.nodes.every((n: any) => n.stale === false),
    'every node fresh',
  );
  const h = (await api(root.url, T, '/api/v1/hierarchy')).body;
  t.same(h.subtree.map((n: any) => n.name).sort(), ['berlin', 'hamburg', 'paris'], 'the hierarchy lists every node below with its freshness');
  const bad = await api(root.url, T, '/api/v1/reports/compliance?scope=tree&severity=Critical');
  t.equal(bad.status, 400, 'a tree report takes no filters');

  // A local policy at berlin reaches hamburg, and neither the root nor paris.
  const local = await api(berlin.url, T, '/api/v1/policies', {
    method: 'POST',
    body: JSON.stringify({ name: 'Berlin only', updates: ['test-4'], targets: { all: true } }),
  });
  t.equal(local.status, 201);
  const atHamburg = await waitFor(async () => {
    const r = await policyAt(hamburg, local.body.id);
    return r.status === 200 ? r.body : undefined;
  }, 'the local policy at hamburg');
  t.equal(atHamburg.originName, 'berlin');
  t.equal((await policyAt(root, local.body.id)).status, 404, 'not upward');
  t.equal((await policyAt(paris, local.body.id)).status, 404, 'not sideways');
  t.same(await policyNames(root), ['Root rollout']);
  t.same(await policyNames(paris), ['Root rollout']);
  t.same(await policyNames(hamburg), ['Berlin only', 'Root rollout']);
  t.equal((await api(berlin.url, T, `/api/v1/policies/${local.body.id}`, { method: 'DELETE' })).status, 204, 'berlin deletes its own');
  await waitFor(async () => (await policyAt(hamburg, local.body.id)).status === 404, 'gone at hamburg too');

  // A held policy (its window never open during the test) for French computers: the
  // filter travels as its condition, so each site matches its own computers; it is
  // assigned at paris only. Disabled at the root it is assigned nowhere, and deleted
  // it is gone everywhere.
  const at = new Date(Date.now() + 12 * 3_600_000);
  const hhmm = (d: Date) => `${String(d.getUTCHours()).padStart(2, '0')}:${String(d.getUTCMinutes()).padStart(2, '0')}`;
  const held = await api(root.url, T, '/api/v1/policies', {
    method: 'POST',
    body: JSON.stringify({
      name: 'Held',
      updates: ['test-4'],
      targets: { filters: ['language:fr'] },
      installation: {
        maintenance: {
          mode: 'windows',
          zone: 'UTC',
          windows: [{ days: ['sun', 'mon', 'tue', 'wed', 'thu', 'fri', 'sat'], start: hhmm(at), end: hhmm(new Date(at.getTime() + 3_600_000)) }],
        },
      },
    }),
  });
  t.equal(held.status, 201, JSON.stringify(held.body));
  const assigned = async (name: string) => JSON.parse((await runCli(['agent', 'update-data', '--state', agents[name]!])).stdout).assignments as number;
  await waitFor(async () => (await assigned('paris')) === 1, 'the held policy assigned at paris');
  t.same((await policyAt(paris, held.body.id)).body.targets, { conditions: [{ language: 'fr' }] }, 'the filter arrives as its condition');
  await waitFor(async () => (await policyAt(berlin, held.body.id)).status === 200, 'the held policy at berlin');
  t.equal((await policyAt(berlin, held.body.id)).body.delivery.computers, 0, 'no German computer matches');
  t.equal(await assigned('berlin'), 0, 'nothing assigned at berlin');
  t.equal((await api(root.url, T, `/api/v1/policies/${held.body.id}`, { method: 'PATCH', body: JSON.stringify({ enabled: false }) })).status, 200);
  for (const name of ['berlin', 'paris']) await waitFor(async () => (await assigned(name)) === 0, `nothing assigned at ${name} once disabled at the root`);
  t.equal((await policyAt(hamburg, held.body.id)).body.enabled, false, 'disabled at hamburg too');
  t.equal((await api(root.url, T, `/api/v1/policies/${held.body.id}`, { method: 'DELETE' })).status, 204);
  for (const [name, n] of Object.entries(sites)) await waitFor(async () => (await policyAt(n, held.body.id)).status === 404, `deleted at ${name}`);

  // Paris goes silent: the root shows it stale, with its last figures, and keeps it.
  paris.child.kill('SIGKILL');
  await paris.exited;
  const silent = await waitFor(
    async () => {
      const tr = await tree(root);
      const p = tr.nodes.find((n: any) => n.name === 'paris');
      return p?.stale ? { tr, p } : undefined;
    },
    'paris stale at the root',
    30_000,
  );
  t.equal(silent.p.summary.computers, 1, 'its last summary is kept');
  t.equal(silent.tr.nodes.length, 4, 'never dropped');
  t.ok(
    silent.tr.nodes.filter((n: any) => n.name !== 'paris').every((n: any) => !n.stale),
    'the others stay fresh',
  );
  t.match(
    (await api(root.url, T, '/api/v1/hierarchy')).body.subtree.find((n: any) => n.name === 'paris'),
    { stale: true },
  );
  const parisId = silent.p.id as string;
  for (const page of ['/', '/hierarchy']) {
    const html = await (await fetch(`${root.url}${page}`, { headers: { cookie: await consoleCookie(root.url, T) } })).text();
    const row = new RegExp(`<tr data-node="${parisId}" class="stale"><td>paris</td><td>hq</td>`).exec(html);
    t.ok(row, `the console's ${page} shows paris stale, under hq`);
    t.match(html, /<td>hamburg<\/td><td>berlin<\/td>/, `and hamburg under berlin (${page})`);
  }
});
