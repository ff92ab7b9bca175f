import t from 'tap';
import { existsSync, mkdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { chromium } from 'playwright-core';
import { simulate } from '../../src/assessment/simulate.js';
import { ADMIN_TOKEN, ROOT, api, header, makeKeys, sampleUpdate, spawnNode, tempDir, uploadCatalog, writeSignedCatalog } from '../helpers.js';

/** Debian's chromium, installed by .ci/run (apt-get install chromium). */
const CHROMIUM = process.env.PATCHTREE_CHROMIUM ?? '/usr/bin/chromium';
const ARTIFACTS = join(ROOT, 'test-artifacts');

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
    const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });

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
    await page.screenshot({ path: join(ARTIFACTS, 'console-delivery.png'), fullPage: true });

    await page.getByRole('link', { name: 'Hierarchy' }).click();
    await page.waitForURL(`${node.url}/hierarchy`);
    t.match(await page.locator('ul.tree').innerText(), /site-a \(standalone; en\)/);
    await page.screenshot({ path: join(ARTIFACTS, 'console-hierarchy.png'), fullPage: true });
    for (const f of ['console-dashboard.png', 'console-delivery.png', 'console-hierarchy.png']) t.ok(statSync(join(ARTIFACTS, f)).size > 5000, `${f} saved`);
  },
);
