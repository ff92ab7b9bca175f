import t from 'tap';
import { request } from 'node:http';
import { statSync } from 'node:fs';
import { join } from 'node:path';
import { ADMIN_TOKEN as T, api, spawnNode, startNode, tempDir } from '../helpers.js';

/**
 * What an audit found on the HTTP side, each refused, each checked to have changed
 * nothing: bodies read before authentication, an enrolment token re-reporting an
 * enrolled agent's computer, NUL characters in names, events from year 1, failed
 * authentication unseen, unlimited enrolment guesses, a world-readable database.
 */

const W11 = 'Windows 11 Version 23H2 for x64-based Systems';
const inventory = (agentKey: string, name: string) => ({
  agentKey,
  name,
  full: { os: { family: 'windows', name: W11, language: 'en-us' }, products: [{ name: W11 }], kbs: [] },
});

t.test('a request is authenticated before its body is read', async (t) => {
  const n = await startNode(t);
  const port = Number(new URL(n.url).port);
  // Headers for 6 MB, a first chunk, then nothing: the answer must come without the rest.
  const res = await new Promise<{ status: number; body: string }>((resolve, reject) => {
    const req = request(
      {
        host: '127.0.0.1',
        port,
        method: 'POST',
        path: '/agent/v1/inventory',
        headers: { 'content-type': 'application/json', 'content-length': String(6 * 1024 * 1024), authorization: 'Bearer pte_wrong' },
      },
      (r) => {
        let body = '';
        r.on('data', (d) => (body += d));
        r.on('end', () => resolve({ status: r.statusCode!, body }));
      },
    );
    req.on('error', reject);
    req.write('{"agentKey": "x", "name": "');
    setTimeout(() => reject(new Error('no answer before the body: it was waiting to read it')), 5000).unref();
  });
  t.equal(res.status, 401, 'refused while the body is still on its way');
  t.match(JSON.parse(res.body), { type: /unauthenticated/ });
});

t.test("an enrolment token cannot re-report an enrolled agent's computer; NUL names and year-1 events are refused", async (t) => {
  const n = await startNode(t);
  const et = (await api(n.url, T, '/api/v1/agents/enrollment-tokens', { method: 'POST', body: JSON.stringify({ name: 'lab' }) })).body.token as string;
  const agent = (await api(n.url, null, '/agent/v1/enroll', { method: 'POST', body: JSON.stringify({ enrollmentToken: et, name: 'PC-1' }) })).body;
  t.equal((await api(n.url, agent.secret, '/agent/v1/inventory', { method: 'POST', body: JSON.stringify(inventory(agent.agentId, 'PC-1')) })).status, 200);
  const before = (await api(n.url, T, '/api/v1/computers')).body.items[0];

  const hijack = await api(n.url, et, '/agent/v1/inventory', {
    method: 'POST',
    body: JSON.stringify({ ...inventory(agent.agentId, 'HIJACKED'), full: { os: { family: 'windows' } } }),
  });
  t.equal(hijack.status, 403, hijack.body.detail);
  t.match(hijack.body.detail, /belongs to an enrolled agent/);
  const after = (await api(n.url, T, '/api/v1/computers')).body.items[0];
  t.same(after, before, 'the computer is unchanged: name, OS, scan');
  t.equal(
    (await api(n.url, et, '/agent/v1/inventory', { method: 'POST', body: JSON.stringify(inventory('lab-computer-1', 'LAB-1')) })).status,
    200,
    'a computer without an agent may report with the token, as labs and the simulator do',
  );

  const nul = await api(n.url, agent.secret, '/agent/v1/inventory', { method: 'POST', body: JSON.stringify(inventory(agent.agentId, 'PC\u0000-evil')) });
  t.equal(nul.status, 400);
  t.match(nul.body.detail, /name: no control characters/);
  t.equal((await api(n.url, T, '/api/v1/computers')).body.items.find((c: any) => c.id === before.id).name, 'PC-1', 'not renamed');
  const policy = await api(n.url, T, '/api/v1/policies', {
    method: 'POST',
    body: JSON.stringify({ name: 'Evil\u0000policy', updates: [], targets: { all: true } }),
  });
  t.equal(policy.status, 400, 'a policy name with NUL');
  t.equal((await api(n.url, T, '/api/v1/policies')).body.items.length, 0);
  t.equal(
    (await api(n.url, T, '/api/v1/tokens', { method: 'POST', body: JSON.stringify({ name: 'line\nbreak', role: 'viewer' }) })).status,
    400,
    'a token name with a line break',
  );

  const old = await api(n.url, agent.secret, '/agent/v1/events', {
    method: 'POST',
    body: JSON.stringify({ events: [{ id: 'e-1', updateId: 'u', type: 'download-started', attempt: 1, at: '0001-01-01T00:00:00Z' }] }),
  });
  t.equal(old.status, 400);
  t.match(old.body.detail, /before 2000/);
  t.equal((await api(n.url, T, `/api/v1/computers/${before.id}/events`)).body.items.length, 0, 'no event stored');
});

t.test('failed authentication is counted and logged, rate-limited; failed enrolments are limited per address; the data folder is private', async (t) => {
  const dir = await tempDir(t);
  const node = await spawnNode(t, ['--data', join(dir, 'node'), '--admin-token', T]);
  for (let i = 0; i < 5; i++) t.equal((await api(node.url, 'wrong-token', '/api/v1/updates')).status, 401);
  t.equal((await api(node.url, 'pta_wrong', '/agent/v1/assignments')).status, 401);
  const metrics = await (await fetch(`${node.url}/metrics`)).text();
  t.match(metrics, /patchtree_auth_failures_total\{surface="api"\} 5/);
  t.match(metrics, /patchtree_auth_failures_total\{surface="agent"\} 1/);
  const lines = () => node.logs.filter((l) => l.msg === 'authentication failed');
  t.equal(lines().filter((l) => l.surface === 'api').length, 1, 'five failures in a moment: one log line');
  t.match(lines()[0], { surface: 'api', source: '127.0.0.1', why: /unknown or revoked/ });

  // A success never counts; twenty failures a minute do, and then even a good token waits.
  const et = (await api(node.url, T, '/api/v1/agents/enrollment-tokens', { method: 'POST', body: JSON.stringify({ name: 'lab' }) })).body.token as string;
  const enrol = (token: string) => api(node.url, null, '/agent/v1/enroll', { method: 'POST', body: JSON.stringify({ enrollmentToken: token, name: 'PC' }) });
  t.equal((await enrol(et)).status, 201);
  for (let i = 0; i < 20; i++) t.equal((await enrol(`pte_guess${i}`)).status, 401, `guess ${i + 1}`);
  const blocked = await enrol(et);
  t.equal(blocked.status, 429);
  t.match(blocked.body.detail, /too many failed enrolments from this address; try again in \d+ s/);
  t.ok(Number(blocked.headers.get('retry-after')) > 0, 'Retry-After');
  t.equal((await api(node.url, T, '/api/v1/agents')).body.items.length, 1, 'only the first agent was enrolled');

  t.equal(statSync(join(dir, 'node')).mode & 0o777, 0o700, 'the data folder: 0700');
  t.equal(statSync(join(dir, 'node', 'patchtree.db')).mode & 0o777, 0o600, 'the database: 0600');
});
