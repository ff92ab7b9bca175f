import t from 'tap';
import { api, header, makeKeys, sampleUpdate, startNode, tempDir, uploadCatalog, writeSignedCatalog } from '../helpers.js';

const W11 = 'Windows 11 Version 23H2 for x64-based Systems';

t.test('the console: sign-in, dashboard, policies, delivery, computers, hierarchy, all showing what the API says', async (t) => {
  const dir = await tempDir(t);
  const keys = await makeKeys(dir);
  const n = await startNode(t, { trustedKeys: [keys.pubFile] });
  const updates = [sampleUpdate(1, { severity: 'Critical' }), sampleUpdate(2, { severity: 'Important' })];
  const cat = await writeSignedCatalog(dir, keys, 'c.gz', header('v1', updates.length), updates);
  t.equal((await uploadCatalog(n.url, n.token, cat.file, cat.sig)).status, 201);
  const report = (key: string, name: string, kbs: string[]) => n.node.assessment!.assessor.report({ agentKey: key, name, full: { os: { family: 'windows', name: W11 }, products: [{ name: W11 }], kbs } });
  await report('computer-1', '<script>alert(1)</script>', []);
  await report('computer-2', 'PC-2', ['5000001']);
  await report('computer-3', 'PC-3', ['5000001', '5000002']);

  const get = (path: string, cookie?: string) => fetch(n.url + path, { redirect: 'manual', headers: cookie ? { cookie } : {} });
  const anon = await get('/');
  t.equal(anon.status, 303);
  t.equal(anon.headers.get('location'), '/sign-in?next=%2F');
  const form = (body: Record<string, string>, cookie?: string, path = '/sign-in') =>
    fetch(n.url + path, { method: 'POST', redirect: 'manual', body: new URLSearchParams(body), headers: cookie ? { cookie } : {} });
  const bad = await form({ token: 'nope', next: '/' });
  t.equal(bad.headers.get('location'), '/sign-in?error=1');
  t.notOk(bad.headers.get('set-cookie'));
  const ok = await form({ token: n.token, next: '/policies' });
  t.equal(ok.status, 303);
  t.equal(ok.headers.get('location'), '/policies');
  const setCookie = ok.headers.get('set-cookie')!;
  t.match(setCookie, /HttpOnly/);
  t.match(setCookie, /SameSite=Strict/);
  const cookie = setCookie.split(';')[0]!;
  t.equal((await form({ token: n.token, next: '//evil.example' })).headers.get('location'), '/', 'no open redirect');

  // Dashboard figures are the API's.
  const dash = await (await get('/', cookie)).text();
  const s = (await api(n.url, n.token, '/api/v1/reports/compliance')).body.summary;
  const num = (html: string, id: string) => Number(new RegExp(`id="${id}">([\\d,]+)<`).exec(html)?.[1]?.replace(/,/g, ''));
  t.equal(num(dash, 'computers'), s.computers);
  t.equal(num(dash, 'compliant'), s.compliant);
  t.equal(num(dash, 'required'), s.required);
  t.equal(num(dash, 'stale'), s.stale);
  t.match(dash, new RegExp(`aria-label="compliant computers: ${s.compliantPercent}%"`), 'the gauge says the percentage');
  t.match(dash, /aria-label="required updates by severity: Critical 1, Important 2, Moderate 0, Low 0, Unrated 0"/);
  t.match(dash, /<svg class="trend"/, 'the trend (the start-up snapshot)');

  // A policy created from the form: every required critical update.
  const created = await form({ name: 'Critical now', filter: '', severity: 'Critical', deadline: '' }, cookie, '/policies');
  t.equal(created.status, 303);
  const id = created.headers.get('location')!.split('/').pop()!;
  t.same((await api(n.url, n.token, `/api/v1/policies/${id}`)).body.updates, ['test-1']);
  await n.node.delivery!.engine.idle();
  const pol = await (await get(`/policies/${id}`, cookie)).text();
  const totals = (await api(n.url, n.token, `/api/v1/reports/delivery?policy=${id}`)).body.totals;
  for (const [k, v] of Object.entries(totals)) t.equal(Number(new RegExp(`data-total="${k}">([\\d,]+)<`).exec(pol)?.[1]), v, `total ${k}`);
  t.match(pol, /&lt;script&gt;alert\(1\)&lt;\/script&gt;/, 'names are escaped');
  t.notMatch(pol, /<script>alert/);
  const list = await (await get('/policies', cookie)).text();
  t.match(list, /aria-label="0 of 1 installed, 0 failed"/, 'the progress bar');
  const dup = await form({ name: 'Critical now', filter: '', severity: 'Critical', deadline: '' }, cookie, '/policies');
  t.match(decodeURIComponent(dup.headers.get('location')!), /\/policies\?error=a policy named "Critical now" exists/);

  // Edited from its page: disabled, with a deadline.
  const edit = await form({ name: 'Critical now', enabled: 'false', deadline: '2030-01-02T03:04' }, cookie, `/policies/${id}`);
  t.equal(edit.headers.get('location'), `/policies/${id}`);
  t.match((await api(n.url, n.token, `/api/v1/policies/${id}`)).body, { enabled: false, deadline: '2030-01-02T03:04:00.000Z' });
  const badEdit = await form({ name: 'Critical now', enabled: 'true', deadline: '2000-01-01T00:00' }, cookie, `/policies/${id}`);
  t.match(decodeURIComponent(badEdit.headers.get('location')!), /\?error=deadline: must be after startAt/);

  const comps = await (await get('/computers', cookie)).text();
  t.equal((comps.match(/<tr><td><a href="\/computers\/\d+">/g) ?? []).length, 3);
  const h = await (await get('/hierarchy', cookie)).text();
  t.match(h, /<strong>test-node<\/strong> \(standalone; /);
  for (const p of ['/updates', '/vulnerabilities', '/computers/1']) t.equal((await get(p, cookie)).status, 200, p);

  const out = await form({}, cookie, '/sign-out');
  t.match(out.headers.get('set-cookie')!, /patchtree_token=;/);
  t.equal((await get('/', 'patchtree_token=revoked-or-wrong')).status, 303, 'a wrong cookie is sent to sign in');
});
