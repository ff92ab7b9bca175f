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
  const report = (key: string, name: string, kbs: string[]) =>
    n.node.assessment!.assessor.report({ agentKey: key, name, full: { os: { family: 'windows', name: W11 }, products: [{ name: W11 }], kbs } });
  await report('computer-1', '<script>alert(1)</script>', []);
  await report('computer-2', 'PC-2', ['5000001']);
  await report('computer-3', 'PC-3', ['5000001', '5000002']);

  const get = (path: string, cookie?: string) => fetch(n.url + path, { redirect: 'manual', headers: cookie ? { cookie } : {} });
  const anon = await get('/');
  t.equal(anon.status, 303);
  t.equal(anon.headers.get('location'), '/sign-in?next=%2F');
  const post = (body: Record<string, string>, cookie?: string, path = '/sign-in', headers: Record<string, string> = {}) =>
    fetch(n.url + path, { method: 'POST', redirect: 'manual', body: new URLSearchParams(body), headers: { ...(cookie ? { cookie } : {}), ...headers } });
  // A signed-in form carries the CSRF token of the session, as the page gives it.
  let csrf = '';
  const form = (body: Record<string, string>, cookie?: string, path = '/sign-in') => post(cookie ? { csrf, ...body } : body, cookie, path);
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
  t.match(cookie, /^patchtree_session=[A-Za-z0-9_-]{43}$/, 'the cookie holds a session id');
  t.notOk(cookie.includes(n.token), 'never the API token');
  for (const next of ['//evil.example', '/\\evil.example', 'https://evil.example/', '/\t/evil.example'])
    t.equal((await form({ token: n.token, next })).headers.get('location'), '/', `no open redirect: ${JSON.stringify(next)}`);
  const page0 = await (await get('/policies', cookie)).text();
  csrf = /name="csrf" value="([A-Za-z0-9_-]+)"/.exec(page0)![1]!;
  const res0 = await get('/policies', cookie);
  t.match(res0.headers.get('content-security-policy'), /frame-ancestors 'none'/);
  t.equal(res0.headers.get('x-content-type-options'), 'nosniff');
  t.equal(res0.headers.get('referrer-policy'), 'same-origin');
  t.equal(res0.headers.get('x-frame-options'), 'DENY');

  // Forms: the session's CSRF token, from this site, small; refused otherwise with nothing changed.
  const policies = async () => (await api(n.url, n.token, '/api/v1/policies')).body.items.length;
  const before = await policies();
  const noToken = await post({ name: 'Forged', filter: '', severity: 'Critical', deadline: '' }, cookie, '/policies');
  t.equal(noToken.status, 403, 'no CSRF token: refused');
  t.equal(noToken.headers.get('content-type'), 'application/problem+json');
  t.equal((await post({ csrf: 'x'.repeat(32), name: 'Forged', severity: 'Critical' }, cookie, '/policies')).status, 403, 'a wrong one: refused');
  t.equal(
    (await post({ csrf, name: 'Forged', severity: 'Critical' }, cookie, '/policies', { origin: 'https://evil.example' })).status,
    403,
    "another site's Origin: refused",
  );
  t.equal(
    (await post({ csrf, name: 'Forged', severity: 'Critical' }, cookie, '/policies', { 'sec-fetch-site': 'cross-site' })).status,
    403,
    'Sec-Fetch-Site cross-site: refused',
  );
  t.equal((await post({ token: n.token }, undefined, '/sign-in', { 'sec-fetch-site': 'cross-site' })).status, 403, 'a cross-site sign-in too');
  t.equal(await policies(), before, 'no policy was created');
  const big = await fetch(`${n.url}/sign-in`, {
    method: 'POST',
    body: `token=${'a'.repeat(200_000)}`,
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
  });
  t.equal(big.status, 413, 'a form over 16 KiB is refused before it is read');
  t.equal(
    (
      await fetch(`${n.url}/sign-in`, {
        method: 'POST',
        body: new ReadableStream({
          start(ctl) {
            ctl.enqueue(new TextEncoder().encode(`token=${'a'.repeat(40_000)}`));
            ctl.close();
          },
        }),
        duplex: 'half',
        headers: { 'content-type': 'application/x-www-form-urlencoded' },
      } as RequestInit)
    ).status,
    413,
    'also without a Content-Length (chunked)',
  );

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

  t.equal((await post({}, cookie, '/sign-out')).status, 403, 'sign-out needs the CSRF token too');
  const out = await form({}, cookie, '/sign-out');
  t.match(out.headers.get('set-cookie')!, /patchtree_session=;/);
  t.equal((await get('/', cookie)).status, 303, 'signing out revokes the session: the old cookie no longer works');
  t.equal((await get('/', 'patchtree_session=revoked-or-wrong')).status, 303, 'a wrong cookie is sent to sign in');
  t.equal((await get('/', `patchtree_session=${n.token}`)).status, 303, 'an API token is no session');
});
