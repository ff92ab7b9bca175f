import t from 'tap';
import { api, startNode } from '../helpers.js';

/**
 * Every route of /openapi.json, called by each kind of caller: none, a wrong token,
 * an agent secret, an enrolment token, and viewer, operator and admin tokens. What
 * each may do comes from the route table (its security, its `x-patchtree-role`), not
 * from a list written here: a route added without its checks shows up.
 */

const ROLES = ['viewer', 'operator', 'admin'] as const;
type Caller = 'none' | 'wrong' | 'agent' | 'enrolment' | (typeof ROLES)[number];

t.test('the auth matrix over every route of the API document', async (t) => {
  const n = await startNode(t);
  const tokens: Record<Caller, string | null> = {
    none: null,
    wrong: 'pt_this-token-does-not-exist',
    agent: '',
    enrolment: '',
    viewer: '',
    operator: '',
    admin: n.token,
  };
  for (const role of ['viewer', 'operator'] as const)
    tokens[role] = (await api(n.url, n.token, '/api/v1/tokens', { method: 'POST', body: JSON.stringify({ name: role, role }) })).body.token;
  tokens.enrolment = (
    await api(n.url, n.token, '/api/v1/agents/enrollment-tokens', { method: 'POST', body: JSON.stringify({ name: 'matrix', maxUses: 1 }) })
  ).body.token;
  tokens.agent = (
    await api(n.url, null, '/agent/v1/enroll', { method: 'POST', body: JSON.stringify({ enrollmentToken: tokens.enrolment, name: 'PC' }) })
  ).body.secret;
  tokens.enrolment = (await api(n.url, n.token, '/api/v1/agents/enrollment-tokens', { method: 'POST', body: JSON.stringify({ name: 'matrix 2' }) })).body.token;

  const doc = (await (await fetch(`${n.url}/openapi.json`)).json()) as {
    paths: Record<string, Record<string, { security?: Record<string, string[]>[]; 'x-patchtree-role'?: string }>>;
  };
  let routes = 0;
  let calls = 0;
  for (const [path, ops] of Object.entries(doc.paths)) {
    for (const [method, op] of Object.entries(ops)) {
      const schemes = new Set((op.security ?? [{ bearer: [] }]).flatMap((s) => Object.keys(s)));
      if (path === '/agent/v1/enroll') continue; // its token travels in the body (tested in http-audit)
      routes++;
      const url = path.replace(/\{\w+\}/g, '1');
      const role = op['x-patchtree-role'] ?? 'viewer';
      for (const caller of Object.keys(tokens) as Caller[]) {
        const token = tokens[caller];
        const res = await fetch(n.url + url, {
          method: method.toUpperCase(),
          headers: {
            ...(token ? { authorization: `Bearer ${token}` } : {}),
            ...(method === 'get' || method === 'delete' ? {} : { 'content-type': 'application/json' }),
          },
          ...(method === 'get' || method === 'delete' ? {} : { body: '{}' }),
        });
        await res.arrayBuffer();
        calls++;
        const where = `${method.toUpperCase()} ${path} as ${caller}: ${res.status}`;
        const allowed =
          (schemes.has('bearer') &&
            (ROLES as readonly string[]).includes(caller) &&
            ROLES.indexOf(caller as (typeof ROLES)[number]) >= ROLES.indexOf(role as (typeof ROLES)[number])) ||
          (schemes.has('agent') && caller === 'agent') ||
          (schemes.has('enrollment') && caller === 'enrolment');
        if (allowed) t.ok(res.status !== 401 && res.status !== 403, `${where} (allowed)`);
        else if ((ROLES as readonly string[]).includes(caller) && schemes.has('bearer')) t.equal(res.status, 403, `${where} (needs ${role})`);
        else t.equal(res.status, 401, `${where} (refused)`);
      }
    }
  }
  t.ok(routes > 60, `${routes} routes, ${calls} calls`);
  t.equal(doc.paths['/api/v1/tokens']!.post!['x-patchtree-role'], 'admin', "the document says each route's role");
});
