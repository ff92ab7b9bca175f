import t from 'tap';
import { existsSync, mkdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { chromium } from 'playwright-core';
import { simulate } from '../../src/assessment/simulate.js';
import { ADMIN_TOKEN, ROOT, api, header, makeKeys, sampleUpdate, spawnNode, tempDir, treeNode, uploadCatalog, writeSignedCatalog } from '../helpers.js';
import { waitFor } from '../vendor.js';

/** Debian's chromium, installed by .ci/run (apt-get install chromium). */
const CHROMIUM = process.env.PATCHTREE_CHROMIUM ?? '/usr/bin/chromium';
const ARTIFACTS = join(ROOT, 'test-artifacts');

/** A page of a headless Chromium, closed with the test. */
async function openPage(t: { teardown(fn: () => unknown): void }) {
  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
  });
  t.teardown(() => browser.close());
  return browser.newPage({ viewport: { width: 1280, height: 900 } });
}

t.test(
  "the console in a real browser: sign in, dashboard, a policy's delivery, the hierarchy",
  { skip: existsSync(CHROMIUM) ? false : `no browser at ${CHROMIUM}: apt-get install chromium (.ci/run does)` },
  async (t) => {
    const dir = await tempDir(t);
    const keys = await makeKeys(dir);
    const node = await spawnNode(t, ['--data', join(dir, 'node'), '--admin-token', ADMIN_TOKEN, '--trusted-key', keys.pubFile, '--name', 'site-a']);
    const products = ['Windows 11 Version 23H2 for x64-based Systems', 'Windows 10 Version 22H2 for x64-based Systems'];
    const updates = Array.from({ length: 12 }, (_, i) =>
      sampleUpdate(i + 1, {
        severity: (['Critical', 'Important', 'Moderate', 'Low'] as const)[i % 4]!,
        product: products[i % 2]!,
        applicability: { product: products[i % 2]! },
        installed: {
          any: [{ kb: String(5000001 + i) }, { product: products[i % 2]!, version: { gte: `10.0.${19045 + (i % 2 ? 0 : 3586)}.${3000 + i * 10}` } }],
        },
      } as never),
    );
    const cat = await writeSignedCatalog(dir, keys, 'c.gz', header('v1', updates.length), updates);
    t.equal((await uploadCatalog(node.url, ADMIN_TOKEN, cat.file, cat.sig)).status, 201);
    const et = await api(node.url, ADMIN_TOKEN, '/api/v1/agents/enrollment-tokens', { method: 'POST', body: '{}' });
    const sim = await simulate({ server: node.url, token: et.body.token, computers: 60, seed: 7 });
    t.equal(sim.failed, 0, sim.firstError ?? '');
    const p = await api(node.url, ADMIN_TOKEN, '/api/v1/policies', {
      method: 'POST',
      body: JSON.stringify({ name: 'Critical now', fromRequired: { severity: 'Critical' } }),
    });
    t.equal(p.status, 201, JSON.stringify(p.body));

    mkdirSync(ARTIFACTS, { recursive: true });
    const page = await openPage(t);

    // Sign in: the dashboard opens.
    await page.goto(`${node.url}/`);
    t.match(page.url(), /\/sign-in\?next=%2F$/);
    await page.getByLabel('API token').fill(ADMIN_TOKEN);
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.waitForURL(`${node.url}/`);
    const summary = (await api(node.url, ADMIN_TOKEN, '/api/v1/reports/compliance')).body.summary;
    const number = async (sel: string) => Number((await page.locator(sel).innerText()).replace(/,/g, ''));
    t.equal(await number('#computers'), summary.computers);
    t.equal(summary.computers, 60);
    t.equal(await number('#compliant'), summary.compliant);
    t.equal(await number('#required'), summary.required);
    t.equal(
      await page
        .getByRole('img', { name: /compliant computers: / })
        .first()
        .getAttribute('aria-label'),
      `compliant computers: ${summary.compliantPercent}%`,
    );
    await page.screenshot({ path: join(ARTIFACTS, 'console-dashboard.png'), fullPage: true });

    // Keyboard: the first Tab reaches the navigation.
    await page.keyboard.press('Tab');
    t.equal(await page.evaluate('document.activeElement?.textContent'), 'Dashboard');

    // A policy's delivery page, reached through the policies page.
    await page.getByRole('link', { name: 'Policies' }).click();
    await page.getByRole('link', { name: 'Critical now' }).click();
    await page.waitForURL(`${node.url}/policies/${p.body.id}`);
    const totals = (await api(node.url, ADMIN_TOKEN, `/api/v1/reports/delivery?policy=${p.body.id}`)).body.totals;
    t.ok(totals.targeted > 0, `targeted ${totals.targeted}`);
    for (const k of ['computers', 'targeted', 'installed', 'failed']) t.equal(await number(`[data-total="${k}"]`), totals[k], `total ${k}`);
    t.match(
      await page
        .getByRole('img', { name: /installed, \d+ failed$/ })
        .first()
        .getAttribute('aria-label'),
      new RegExp(`^${totals.installed} of \\d+ installed, ${totals.failed + totals['ceiling-reached']} failed$`),
      'the progress bar says the totals',
    );
    t.equal(await page.locator('#installs-none').count(), 1, 'no install reported yet: the chart says so');
    await page.screenshot({ path: join(ARTIFACTS, 'console-delivery.png'), fullPage: true });

    // An update's page, from the updates list: its files, the computers requiring it, its policies.
    await page.getByRole('link', { name: 'Updates' }).click();
    await page.waitForURL(`${node.url}/updates`);
    const critical = (await api(node.url, ADMIN_TOKEN, '/api/v1/updates?severity=Critical&limit=1')).body.items[0];
    await page.locator('#updates').getByRole('link', { name: critical.title }).click();
    await page.waitForURL(`${node.url}/updates/${critical.id}`);
    const upd = (await api(node.url, ADMIN_TOKEN, `/api/v1/updates/${critical.id}`)).body;
    t.equal(await number('#file-count'), upd.files.length, 'files: as many as the API gives');
    t.equal(await page.locator('#severity').innerText(), upd.severity);
    const requiring = (await api(node.url, ADMIN_TOKEN, `/api/v1/computers?filter=requires:${critical.id}&limit=50`)).body.items.map((c: any) => c.name);
    t.ok(requiring.length > 0, `${requiring.length} computers require ${critical.id}`);
    t.same((await page.locator('#requiring a').allInnerTexts()).sort(), requiring.sort(), "the computers requiring it: the API's");
    t.same(await page.locator('#policies a').allInnerTexts(), ['Critical now'], 'the policy delivering it');
    await page.screenshot({ path: join(ARTIFACTS, 'console-update.png'), fullPage: true });

    // A computer's page, from the update's: OS, last scan, required updates, delivery, events.
    await page.locator('#requiring a').first().click();
    await page.waitForURL(/\/computers\/\d+$/);
    const cid = Number(page.url().split('/').pop());
    const comp = (await api(node.url, ADMIN_TOKEN, `/api/v1/computers/${cid}`)).body;
    t.equal(await number('#required'), comp.required, "required: the API's");
    t.match(await page.locator('#os').innerText(), comp.os);
    t.equal(await page.locator('#last-scan time').getAttribute('datetime'), comp.lastScanAt, 'the last scan, as a time');
    t.match(await page.locator('#last-scan time').getAttribute('title'), /\(\d{4}-\d\d-\d\dT/, "the browser's script: local time, then the ISO time");
    const req = (await api(node.url, ADMIN_TOKEN, `/api/v1/computers/${cid}/updates?state=required`)).body.items;
    t.equal(await page.locator('#required-updates tbody tr').count(), req.length, 'one row per required update');
    t.ok((await page.locator('#delivery tbody tr').count()) > 0, 'its delivery under the policy');
    await page.screenshot({ path: join(ARTIFACTS, 'console-computer.png'), fullPage: true });

    await page.getByRole('link', { name: 'Hierarchy' }).click();
    await page.waitForURL(`${node.url}/hierarchy`);
    t.match(await page.locator('ul.tree').innerText(), /site-a \(standalone; en\)/);
    await page.screenshot({ path: join(ARTIFACTS, 'console-hierarchy.png'), fullPage: true });
    for (const f of ['console-dashboard.png', 'console-delivery.png', 'console-update.png', 'console-computer.png', 'console-hierarchy.png'])
      t.ok(statSync(join(ARTIFACTS, f)).size > 5000, `${f} saved`);
  },
);

t.test(
  'the tree picture: every node of a three-level tree, with its state',
  { skip: existsSync(CHROMIUM) ? false : `no browser at ${CHROMIUM}: apt-get install chromium (.ci/run does)` },
  async (t) => {
    const dir = await tempDir(t);
    const keys = await makeKeys(dir);
    const fast = ['--report-interval', '1'];
    const root = await treeNode(t, dir, keys, 'hq', 'en', undefined, fast);
    const berlin = await treeNode(t, dir, keys, 'berlin', 'de', root, fast);
    const paris = await treeNode(t, dir, keys, 'paris', 'fr', root, fast);
    const munich = await treeNode(t, dir, keys, 'munich', 'de', berlin, fast);
    const ids = await Promise.all([root, berlin, paris, munich].map(async (n) => (await api(n.url, ADMIN_TOKEN, '/api/v1/hierarchy')).body.node.id as string));
    await waitFor(
      async () => (await api(root.url, ADMIN_TOKEN, '/api/v1/reports/compliance?scope=tree')).body.nodes.length === 4,
      'all four in the roll-up',
      30_000,
    );

    mkdirSync(ARTIFACTS, { recursive: true });
    const page = await openPage(t);
    await page.goto(`${root.url}/sign-in?next=%2Fhierarchy`);
    await page.getByLabel('API token').fill(ADMIN_TOKEN);
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.waitForURL(`${root.url}/hierarchy`);
    const picture = page.locator('svg.tree-picture');
    for (const [i, name] of ['hq', 'berlin', 'paris', 'munich'].entries()) {
      const g = picture.locator(`g[data-node="${ids[i]}"]`);
      t.equal(await g.count(), 1, `${name} is in the picture`);
      t.match(await g.locator('title').textContent(), new RegExp(`^${name}: `), `${name}: named`);
      t.equal(await g.getAttribute('data-state'), 'ok', `${name}: connected and reporting`);
    }
    t.match(await picture.locator(`g[data-node="${ids[1]}"] title`).textContent(), /connected, lag 0/, "a child's link and lag");
    t.match(await picture.locator(`g[data-node="${ids[3]}"] title`).textContent(), /reports via its parent/, 'a grandchild: from the roll-up');
    // munich sits below berlin: one level further down.
    const y = async (id: string) => Number((await picture.locator(`g[data-node="${id}"] rect`).getAttribute('y')) ?? NaN);
    t.ok((await y(ids[3]!)) > (await y(ids[1]!)) && (await y(ids[1]!)) > (await y(ids[0]!)), 'three levels, top down');
    t.match(await picture.getAttribute('aria-label'), /hq .*berlin .*munich/, 'the picture says its nodes in words');
    await page.screenshot({ path: join(ARTIFACTS, 'console-tree.png'), fullPage: true });

    // A node that goes away turns red on its parent's picture.
    paris.child.kill('SIGKILL');
    await waitFor(
      async () => !(await api(root.url, ADMIN_TOKEN, '/api/v1/hierarchy')).body.children.find((c: any) => c.name === 'paris').connected,
      'paris disconnected',
    );
    await page.reload();
    t.equal(await picture.locator(`g[data-node="${ids[2]}"]`).getAttribute('data-state'), 'bad', 'paris: disconnected, shown so');
    t.match(await picture.locator(`g[data-node="${ids[2]}"] title`).textContent(), /disconnected/);
    t.ok(statSync(join(ARTIFACTS, 'console-tree.png')).size > 5000, 'console-tree.png saved');
  },
);
