import type { Context } from 'hono';
import type { OpenAPIHono } from '@hono/zod-openapi';
import { getCookie, setCookie, deleteCookie } from 'hono/cookie';
import { html, raw } from 'hono/html';
import type { HtmlEscapedString } from 'hono/utils/html';
import type { AppEnv } from '../auth.js';
import type { AppDeps } from '../app.js';
import { bars, gauge, progress, trendLine } from './svg.js';
import { bodyLimit } from 'hono/body-limit';
import { AppError } from '../../lib/errors.js';
import { Sessions, csrfMatches, safeNext, type Session } from './sessions.js';
import { sourceOf, type AuthGuard } from '../guard.js';
import type { SeverityBucket } from '../../catalog/format.js';

/**
 * The web console at `/`: pages rendered by the server from the node's own JSON API
 * (called in-process with the signed-in token, so a page shows exactly what the
 * API says), readable without JavaScript. Signing in starts a session (sessions.ts):
 * its id goes in an HttpOnly, SameSite=Strict cookie (Secure on HTTPS), and every form
 * carries the session's CSRF token; a form posted from another site (Origin,
 * Sec-Fetch-Site) or without the token is refused. Form bodies are capped at 16 KiB
 * before they are read.
 */

const COOKIE = 'patchtree_session';
/** Console form bodies are tiny: a token, a name, a date. */
export const FORM_LIMIT = 16 * 1024;
/** The session of a request, once `page` has found it. */
const sessionOf = new WeakMap<object, Session>(); // by context: a body limit replaces c.req.raw
const csrfField = (c: Context) => raw(`<input type="hidden" name="csrf" value="${sessionOf.get(c)?.csrf ?? ''}">`);
type H = HtmlEscapedString | Promise<HtmlEscapedString>;

const SEVERITY_COLORS: Record<string, string> = {
  Critical: '#cf222e',
  Important: '#bc4c00',
  Moderate: '#9a6700',
  Low: '#0969da',
  Unrated: '#6e7781',
} satisfies Record<SeverityBucket, string>;

const CSS = `
body{font:15px/1.45 system-ui,sans-serif;margin:0;color:#1f2328;background:#fff}
header{background:#24292f;color:#fff;padding:.6rem 1rem;display:flex;gap:1rem;align-items:center;flex-wrap:wrap}
header a{color:#fff;text-decoration:none;padding:.2rem .4rem;border-radius:4px}
header a:hover,header a:focus{background:#57606a;outline:2px solid #fff}
header a[aria-current=page]{background:#0969da}
main{padding:1rem 1.5rem;max-width:1200px}
h1{font-size:1.5rem;margin:.3rem 0 1rem}
.cards{display:flex;gap:1.5rem;flex-wrap:wrap}.card{border:1px solid #d0d7de;border-radius:6px;padding:1rem;min-width:200px}
.big{font-size:2rem;font-weight:bold}.muted{color:#59636e}
table{border-collapse:collapse;width:100%;margin:.5rem 0}th,td{border-bottom:1px solid #d0d7de;padding:.35rem .5rem;text-align:left;vertical-align:top}
th{background:#f6f8fa}td.n,th.n{text-align:right}
a{color:#0969da}a:focus,button:focus,input:focus,select:focus{outline:3px solid #0969da;outline-offset:1px}
form.inline{display:flex;gap:.5rem;flex-wrap:wrap;align-items:end}label{display:flex;flex-direction:column;font-size:.9rem}
input,select,button{font:inherit;padding:.3rem .5rem}button{background:#1f883d;color:#fff;border:0;border-radius:6px;cursor:pointer}
.error{background:#ffebe9;border:1px solid #cf222e;padding:.5rem;border-radius:6px}
ul.tree,ul.tree ul{list-style:none;padding-left:1.2rem;border-left:2px solid #d0d7de}ul.tree li{margin:.4rem 0}
.state-connected{color:#1a7f37}.state-disconnected{color:#cf222e}
td.fresh-within-goal{background:#dafbe1}td.fresh-late{background:#fff1e5}td.fresh-overdue{background:#ffebe9;font-weight:bold}td.fresh-pending{background:#f6f8fa}
`;

const PAGES = [
  ['/', 'Dashboard'],
  ['/updates', 'Updates'],
  ['/computers', 'Computers'],
  ['/policies', 'Policies'],
  ['/vulnerabilities', 'Vulnerabilities'],
  ['/hierarchy', 'Hierarchy'],
  ['/freshness', 'Freshness'],
] as const;

function layout(c: Context, title: string, nodeName: string, body: H, signedIn = true) {
  const path = c.req.path;
  return c.html(html`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>${title} · patchtree ${nodeName}</title><style>${raw(CSS)}</style></head>
<body><header><strong>patchtree · ${nodeName}</strong>
${
  signedIn
    ? html`<nav aria-label="Main">${PAGES.map(([href, name]) => html`<a href="${href}"${(href === '/' ? path === '/' : path.startsWith(href)) ? raw(' aria-current="page"') : ''}>${name}</a> `)}</nav>
<form method="post" action="/sign-out" style="margin-left:auto">${csrfField(c)}<button type="submit">Sign out</button></form>`
    : ''
}
</header><main id="main"><h1>${title}</h1>${body}</main></body></html>`);
}

const fmt = (n: number | null | undefined) => (n === null || n === undefined ? '–' : n.toLocaleString('en-US'));

interface FreshnessReport {
  goals: { neutralEnglishHours: number; otherLanguagesHours: number; families: Record<string, number> };
  releases: {
    version: string;
    publishedAt: string;
    importedAt: string;
    nodes: {
      id: string;
      name: string;
      self: boolean;
      stale: boolean;
      classes: {
        class: string;
        status: string;
        late: number;
        goalHours: number;
        reachedAt: string | null;
        filesVerifiedAt: string | null;
        missing: { updates: number; files: number };
      }[];
    }[];
  }[];
}

interface TreeReport {
  summary: { computers: number; compliantPercent: number; required: number; urgentComputers: number };
  nodes: {
    id: string;
    name: string;
    parentId: string | null;
    reportedAt: string;
    stale: boolean;
    self: boolean;
    summary: { computers: number; compliantPercent: number; required: number; urgentComputers: number; stale: number };
  }[];
}

/** One row per node of the roll-up, each under its parent's name. */
function treeTable(tree: TreeReport) {
  const names = new Map(tree.nodes.map((n) => [n.id, n.name]));
  return html`<table id="tree-nodes"><thead><tr><th scope="col">Node</th><th scope="col">Reports to</th><th scope="col" class="n">Computers</th><th scope="col" class="n">Compliant</th><th scope="col" class="n">Required</th><th scope="col" class="n">Miss a critical</th><th scope="col" class="n">Stale scans</th><th scope="col">Reported</th></tr></thead><tbody>
${tree.nodes.map(
  (
    n,
  ) => html`<tr data-node="${n.id}"${n.stale ? raw(' class="stale"') : ''}><td>${n.name}${n.self ? ' (this node)' : ''}</td><td>${n.parentId ? (names.get(n.parentId) ?? n.parentId) : ''}</td><td class="n">${fmt(n.summary.computers)}</td><td class="n">${n.summary.compliantPercent}%</td><td class="n">${fmt(n.summary.required)}</td><td class="n">${fmt(n.summary.urgentComputers)}</td><td class="n">${fmt(n.summary.stale)}</td>
<td>${n.self ? 'live' : n.reportedAt}${n.stale ? html` <strong class="error">stale</strong>` : ''}</td></tr>`,
)}
</tbody></table>`;
}

export function consoleRoutes(app: OpenAPIHono<AppEnv>, deps: AppDeps, guard: AuthGuard): void {
  const nodeName = deps.node.name;

  const sessions = new Sessions();

  /** The API, in-process, as the signed-in user. */
  async function api<T>(c: Context, path: string, init: RequestInit = {}): Promise<{ status: number; body: T }> {
    const res = await app.request(path, {
      ...init,
      headers: { authorization: `Bearer ${sessionOf.get(c)?.token ?? ''}`, 'content-type': 'application/json', ...(init.headers as Record<string, string>) },
    });
    return { status: res.status, body: (await res.json()) as T };
  }

  /** The request's live session whose token is still valid (a revoked token ends its sessions). */
  const session = async (c: Context): Promise<Session | null> => {
    const id = getCookie(c, COOKIE);
    const s = sessions.get(id);
    if (!s) return null;
    if (!(await deps.tokens.authenticate(s.token))) {
      sessions.revoke(id);
      return null;
    }
    sessionOf.set(c, s);
    return s;
  };

  // Every console page needs a session; the API keeps its own bearer check.
  const page = (handler: (c: Context) => Promise<Response>) => async (c: Context) =>
    (await session(c)) ? handler(c) : c.redirect(`/sign-in?next=${encodeURIComponent(c.req.path)}`, 303);
  /** A form post: a session and its CSRF token (checked before the handler reads anything else). */
  const form = (handler: (c: Context, f: Record<string, string | File>) => Promise<Response>) =>
    page(async (c) => {
      const f = await c.req.parseBody();
      if (!csrfMatches(sessionOf.get(c)!, f.csrf)) throw new AppError('forbidden', 'this form is out of date or came from another site: load the page again');
      return handler(c, f);
    });

  // Console forms: from this site only, and small; checked before a byte of the body is read.
  app.use('*', async (c, next) => {
    if (c.req.method !== 'POST' || c.req.path.startsWith('/api/') || c.req.path.startsWith('/agent/')) return next();
    const site = c.req.header('sec-fetch-site');
    const origin = c.req.header('origin');
    const sameHost = (o: string) => {
      try {
        return new URL(o).host === new URL(c.req.url).host;
      } catch {
        return false;
      }
    };
    if ((site && site !== 'same-origin' && site !== 'none') || (origin !== undefined && !sameHost(origin)))
      throw new AppError('forbidden', 'a console form must come from this site');
    return bodyLimit({
      maxSize: FORM_LIMIT,
      onError: () => {
        throw new AppError('payload-too-large', `console forms are limited to ${FORM_LIMIT} bytes`);
      },
    })(c, next);
  });

  app.get('/sign-in', (c) =>
    layout(
      c,
      'Sign in',
      nodeName,
      html`${c.req.query('error') ? html`<p class="error" role="alert">That token is unknown or revoked.</p>` : ''}
<form method="post" action="/sign-in" class="inline"><input type="hidden" name="next" value="${safeNext(c.req.query('next'))}">
<label for="token">API token<input id="token" name="token" type="password" autocomplete="current-password" required size="50"></label>
<button type="submit">Sign in</button></form>
<p class="muted">An admin, operator or viewer token (the first admin token is in the data folder's <code>admin-token</code> file).</p>`,
      false,
    ),
  );

  app.post('/sign-in', async (c) => {
    const f = await c.req.parseBody();
    const token = String(f.token ?? '');
    if (!token || !(await deps.tokens.authenticate(token))) {
      guard.failed('console', sourceOf(c), 'sign-in with an unknown or revoked token');
      return c.redirect('/sign-in?error=1', 303);
    }
    const s = sessions.create(token);
    setCookie(c, COOKIE, s.id, { httpOnly: true, sameSite: 'Strict', path: '/', secure: new URL(c.req.url).protocol === 'https:' });
    deleteCookie(c, 'patchtree_token', { path: '/' }); // the raw token an earlier release kept in a cookie
    return c.redirect(safeNext(f.next), 303);
  });

  app.post(
    '/sign-out',
    form(async (c) => {
      sessions.revoke(getCookie(c, COOKIE));
      deleteCookie(c, COOKIE, { path: '/' });
      return c.redirect('/sign-in', 303);
    }),
  );

  app.get(
    '/',
    page(async (c) => {
      const { body: rep } = await api<{
        summary: {
          computers: number;
          compliant: number;
          compliantPercent: number;
          required: number;
          requiredBySeverity: Record<string, number>;
          urgentComputers: number;
          stale: number;
        };
      }>(c, '/api/v1/reports/compliance');
      const { body: trend } = await api<{ days: { day: string; summary: { compliantPercent: number } }[] }>(c, '/api/v1/reports/compliance/trend?days=90');
      const { body: tree } = await api<TreeReport>(c, '/api/v1/reports/compliance?scope=tree');
      const s = rep.summary;
      return layout(
        c,
        'Dashboard',
        nodeName,
        html`<div class="cards">
<section class="card" aria-labelledby="c1"><h2 id="c1">Compliance</h2>${gauge(s.compliantPercent, 'compliant computers')}
<p><span id="compliant">${fmt(s.compliant)}</span> of <span id="computers">${fmt(s.computers)}</span> computers need nothing.</p></section>
<section class="card" aria-labelledby="c2"><h2 id="c2">Required updates by severity</h2>
${bars(
  Object.entries(s.requiredBySeverity).map(([label, value]) => ({ label, value, color: SEVERITY_COLORS[label]! })),
  'required updates by severity',
)}
<p><span id="required">${fmt(s.required)}</span> required in all; <span id="urgent">${fmt(s.urgentComputers)}</span> computers miss a critical update.</p></section>
<section class="card" aria-labelledby="c3"><h2 id="c3">Stale scans</h2><p class="big" id="stale">${fmt(s.stale)}</p><p class="muted">computers whose last scan is older than twice the scan interval</p>
<p><a href="/computers?filter=stale">See them</a></p></section>
</div>
${
  tree.nodes.length > 1
    ? html`<section aria-labelledby="c5"><h2 id="c5">The whole tree</h2>
<p><span id="tree-compliant">${tree.summary.compliantPercent}%</span> of <span id="tree-computers">${fmt(tree.summary.computers)}</span> computers on ${tree.nodes.length} nodes are compliant;
${fmt(tree.summary.required)} required updates, ${fmt(tree.summary.urgentComputers)} computers miss a critical one.${tree.nodes.some((n) => n.stale) ? html` <strong class="error">${tree.nodes.filter((n) => n.stale).length} node(s) stopped reporting</strong>: their last figures are counted.` : ''}</p>
${treeTable(tree)}</section>`
    : ''
}
<section aria-labelledby="c4"><h2 id="c4">Compliance over the last 90 days</h2>${trendLine(
          trend.days.map((d) => ({ day: d.day, value: d.summary.compliantPercent })),
          'compliant computers over time',
        )}</section>
<p><a href="/api/v1/reports/compliance?view=computers&amp;format=csv">Compliance per computer (CSV)</a> · <a href="/api/v1/reports/compliance?view=updates&amp;format=csv">per update (CSV)</a></p>`,
      );
    }),
  );

  app.get(
    '/updates',
    page(async (c) => {
      const q = c.req.query('q') ?? '';
      const { body } = await api<{ items: { id: string; kb: string | null; title: string; product: string; severity: string | null; releaseDate: string }[] }>(
        c,
        `/api/v1/updates?limit=100${q ? `&q=${encodeURIComponent(q)}` : ''}`,
      );
      return layout(
        c,
        'Updates',
        nodeName,
        html`<form method="get" class="inline" role="search"><label for="q">Search<input id="q" name="q" value="${q}"></label><button type="submit">Search</button></form>
<table><caption class="muted">First 100 live updates</caption><thead><tr><th scope="col">KB</th><th scope="col">Title</th><th scope="col">Product</th><th scope="col">Severity</th><th scope="col">Released</th></tr></thead><tbody>
${(body.items ?? []).map((u) => html`<tr><td>${u.kb ?? ''}</td><td>${u.title}</td><td>${u.product}</td><td>${u.severity ?? ''}</td><td>${u.releaseDate}</td></tr>`)}
</tbody></table>`,
      );
    }),
  );

  app.get(
    '/computers',
    page(async (c) => {
      const filter = c.req.query('filter');
      const { body } = await api<{
        items: { id: number; name: string; os: string | null; required: number; urgent: number; lastScanAt: string | null; stale: boolean }[];
      }>(c, `/api/v1/reports/compliance?view=computers&limit=200${filter ? `&filter=${encodeURIComponent(filter)}` : ''}`);
      return layout(
        c,
        filter ? `Computers (${filter})` : 'Computers',
        nodeName,
        html`<table><caption class="muted">Most required updates first (200 at most)</caption><thead><tr><th scope="col">Name</th><th scope="col">OS</th><th scope="col" class="n">Required</th><th scope="col" class="n">Critical</th><th scope="col">Last scan</th></tr></thead><tbody>
${(body.items ?? []).map((m) => html`<tr><td><a href="/computers/${m.id}">${m.name}</a></td><td>${m.os ?? ''}</td><td class="n">${m.required}</td><td class="n">${m.urgent}</td><td>${m.lastScanAt ?? ''}${m.stale ? ' (stale)' : ''}</td></tr>`)}
</tbody></table>`,
      );
    }),
  );

  app.get(
    '/computers/:id',
    page(async (c) => {
      const id = Number(c.req.param('id'));
      const r = await api<{ name?: string; detail?: string }>(c, `/api/v1/computers/${id}`);
      if (r.status !== 200) return layout(c, 'Computer', nodeName, html`<p class="error" role="alert">${r.body.detail ?? 'not found'}</p>`);
      const { body: u } = await api<{ items: { id: string; kb: string | null; title: string; severity: string | null }[] }>(
        c,
        `/api/v1/computers/${id}/updates?state=required`,
      );
      return layout(
        c,
        `Computer ${r.body.name}`,
        nodeName,
        html`<h2>Required updates</h2><table><thead><tr><th scope="col">KB</th><th scope="col">Title</th><th scope="col">Severity</th></tr></thead><tbody>
${u.items.map((x) => html`<tr><td>${x.kb ?? ''}</td><td>${x.title}</td><td>${x.severity ?? ''}</td></tr>`)}</tbody></table>`,
      );
    }),
  );

  app.get(
    '/policies',
    page(async (c) => {
      const { body } = await api<{
        items: { id: string; name: string; enabled: boolean; updateCount: number; deadline: string | null; delivery: Record<string, number> }[];
      }>(c, '/api/v1/policies?limit=200');
      const { body: filters } = await api<{ items: { id: string; name: string; count: number }[] }>(c, '/api/v1/filters?limit=200');
      const err = c.req.query('error');
      return layout(
        c,
        'Policies',
        nodeName,
        html`${err ? html`<p class="error" role="alert">${err}</p>` : ''}
<table><thead><tr><th scope="col">Name</th><th scope="col">State</th><th scope="col" class="n">Updates</th><th scope="col" class="n">Computers</th><th scope="col">Delivery</th><th scope="col">Deadline</th></tr></thead><tbody>
${body.items.map((p) => {
  const d = p.delivery;
  const total = Object.entries(d)
    .filter(([k]) => k !== 'computers')
    .reduce((a, [, v]) => a + v, 0);
  return html`<tr><td><a href="/policies/${p.id}">${p.name}</a></td><td>${p.enabled ? 'enabled' : 'disabled'}</td><td class="n">${p.updateCount}</td><td class="n">${fmt(d.computers)}</td>
<td>${progress(d.installed ?? 0, (d.failed ?? 0) + (d['ceiling-reached'] ?? 0), total)} ${fmt(d.installed)} / ${fmt(total)} installed</td><td>${p.deadline ?? ''}</td></tr>`;
})}</tbody></table>
<h2>New policy: every required update of a severity, to the computers that need it</h2>
<form method="post" action="/policies" class="inline">${csrfField(c)}
<label for="pname">Name<input id="pname" name="name" required maxlength="200"></label>
<label for="pfilter">Computers<select id="pfilter" name="filter"><option value="">All computers</option>${filters.items.filter((f) => !f.id.startsWith('requires:')).map((f) => html`<option value="${f.id}">${f.name} (${f.count})</option>`)}</select></label>
<label for="psev">Severity<select id="psev" name="severity"><option value="">Any</option><option>Critical</option><option>Important</option><option>Moderate</option><option>Low</option></select></label>
<label for="pdeadline">Deadline (UTC, optional)<input id="pdeadline" name="deadline" type="datetime-local"></label>
<button type="submit">Create</button></form>`,
      );
    }),
  );

  app.post(
    '/policies',
    form(async (c, f) => {
      const filter = String(f.filter ?? '');
      const severity = String(f.severity ?? '');
      const deadline = String(f.deadline ?? '');
      const body = {
        name: String(f.name ?? ''),
        fromRequired: { ...(filter ? { filter } : {}), ...(severity ? { severity } : {}) },
        ...(deadline ? { deadline: new Date(`${deadline}Z`).toISOString() } : {}),
      };
      const r = await api<{ id?: string; detail?: string }>(c, '/api/v1/policies', { method: 'POST', body: JSON.stringify(body) });
      if (r.status !== 201) return c.redirect(`/policies?error=${encodeURIComponent(r.body.detail ?? `HTTP ${r.status}`)}`, 303);
      return c.redirect(`/policies/${r.body.id}`, 303);
    }),
  );

  app.get(
    '/policies/:id',
    page(async (c) => {
      const id = c.req.param('id') ?? '';
      const r = await api<{
        policy?: { name: string };
        totals: Record<string, number>;
        items: {
          computerId: number;
          computer: string;
          kb: string | null;
          updateId: string;
          state: string;
          attempts: { download: number; install: number };
          lastExitCode: number | null;
          lastError: string | null;
        }[];
        nextCursor: string | null;
        detail?: string;
      }>(
        c,
        `/api/v1/reports/delivery?policy=${encodeURIComponent(id)}&limit=200${c.req.query('cursor') ? `&cursor=${encodeURIComponent(c.req.query('cursor')!)}` : ''}`,
      );
      if (r.status !== 200) return layout(c, 'Policy', nodeName, html`<p class="error" role="alert">${r.body.detail ?? 'not found'}</p>`);
      const t = r.body.totals;
      const { body: pol } = await api<{ name: string; enabled: boolean; deadline: string | null; origin: string | null }>(
        c,
        `/api/v1/policies/${encodeURIComponent(id)}`,
      );
      const err = c.req.query('error');
      return layout(
        c,
        `Delivery: ${r.body.policy!.name}`,
        nodeName,
        html`${err ? html`<p class="error" role="alert">${err}</p>` : ''}
<form method="post" action="/policies/${id}" class="inline" aria-label="Edit the policy">${csrfField(c)}
<label for="ename">Name<input id="ename" name="name" value="${pol.name}" required maxlength="200"></label>
<label for="edeadline">Deadline (UTC)<input id="edeadline" name="deadline" type="datetime-local" value="${pol.deadline ? pol.deadline.slice(0, 16) : ''}"></label>
<label for="eenabled">Enabled<select id="eenabled" name="enabled"><option value="true"${pol.enabled ? raw(' selected') : ''}>yes</option><option value="false"${pol.enabled ? '' : raw(' selected')}>no</option></select></label>
<button type="submit">Save</button></form>
<table class="totals"><caption>Totals</caption><tbody>${Object.entries(t).map(([k, v]) => html`<tr><th scope="row">${k}</th><td class="n" data-total="${k}">${fmt(v)}</td></tr>`)}</tbody></table>
<p><a href="/api/v1/reports/delivery?policy=${id}&amp;format=csv">All rows (CSV)</a></p>
<table><caption>Per computer and update</caption><thead><tr><th scope="col">Computer</th><th scope="col">Update</th><th scope="col">State</th><th scope="col" class="n">Failed downloads</th><th scope="col" class="n">Failed installs</th><th scope="col">Last error</th></tr></thead><tbody>
${r.body.items.map((i) => html`<tr><td><a href="/computers/${i.computerId}">${i.computer}</a></td><td>${i.kb ? `KB${i.kb}` : i.updateId}</td><td>${i.state}</td><td class="n">${i.attempts.download}</td><td class="n">${i.attempts.install}</td><td>${i.lastExitCode !== null ? `exit ${i.lastExitCode}: ` : ''}${i.lastError ?? ''}</td></tr>`)}
</tbody></table>${r.body.nextCursor ? html`<p><a href="/policies/${id}?cursor=${encodeURIComponent(r.body.nextCursor)}">Next page</a></p>` : ''}`,
      );
    }),
  );

  app.post(
    '/policies/:id',
    form(async (c, f) => {
      const id = c.req.param('id') ?? '';
      const deadline = String(f.deadline ?? '');
      const body = { name: String(f.name ?? ''), enabled: f.enabled !== 'false', deadline: deadline ? new Date(`${deadline}Z`).toISOString() : null };
      const r = await api<{ detail?: string }>(c, `/api/v1/policies/${encodeURIComponent(id)}`, { method: 'PATCH', body: JSON.stringify(body) });
      const to = `/policies/${encodeURIComponent(id)}`;
      return c.redirect(r.status === 200 ? to : `${to}?error=${encodeURIComponent(r.body.detail ?? `HTTP ${r.status}`)}`, 303);
    }),
  );

  app.get(
    '/vulnerabilities',
    page(async (c) => {
      const { body } = await api<{
        items: {
          cve: string;
          severity: string | null;
          exploited: boolean;
          affectedComputers: number;
          fixes: { kb: string | null; updateId: string; policies: number }[];
        }[];
      }>(c, '/api/v1/reports/vulnerabilities?limit=200');
      return layout(
        c,
        'Vulnerabilities',
        nodeName,
        html`<table><caption class="muted">Most affected computers first</caption><thead><tr><th scope="col">CVE</th><th scope="col">Severity</th><th scope="col">Exploited</th><th scope="col" class="n">Computers</th><th scope="col">Fixed by</th></tr></thead><tbody>
${body.items.map((v) => html`<tr><td>${v.cve}</td><td>${v.severity ?? ''}</td><td>${v.exploited ? 'yes' : 'no'}</td><td class="n">${v.affectedComputers}</td><td>${v.fixes.map((f) => `${f.kb ? `KB${f.kb}` : f.updateId}${f.policies ? ' (in a policy)' : ''}`).join(', ')}</td></tr>`)}
</tbody></table>`,
      );
    }),
  );

  app.get(
    '/freshness',
    page(async (c) => {
      const { body: rep } = await api<FreshnessReport>(c, '/api/v1/reports/freshness?scope=tree');
      const { body: h } = await api<{ problems: { release: string; node: { name: string }; classes: string[]; lateHours: number; detectedAt: string }[] }>(
        c,
        '/api/v1/hierarchy',
      );
      const label: Record<string, string> = { 'within-goal': 'in time', late: 'late', overdue: 'overdue', pending: 'pending' };
      const goals = rep.goals;
      return layout(
        c,
        'Catalog freshness',
        nodeName,
        html`<p class="muted">How long each catalog release took to reach ${rep.releases[0] && rep.releases[0].nodes.length > 1 ? 'every node of this subtree' : 'this node'}, per language class, against the goals
(neutral + English ${goals.neutralEnglishHours} h, other languages ${goals.otherLanguagesHours} h${Object.entries(goals.families)
          .map(([f, hrs]) => `, ${f} ${hrs} h`)
          .join('')} from publication). A class with files is judged by when its files were verified.</p>
${rep.releases.length ? '' : html`<p>No catalog release yet.</p>`}
${rep.releases.slice(0, 5).map((r) => {
  const classes = [...new Set(r.nodes.flatMap((n) => n.classes.map((k) => k.class)))].sort();
  return html`<section aria-label="Release ${r.version}"><h2>Release ${r.version}</h2><p class="muted">published ${r.publishedAt}, imported at the root ${r.importedAt}</p>
<table class="freshness" data-release="${r.version}"><thead><tr><th scope="col">Node</th>${classes.map((k) => html`<th scope="col">${k}</th>`)}</tr></thead><tbody>
${r.nodes.map(
  (n) =>
    html`<tr data-node="${n.id}"><td>${n.name}${n.self ? ' (this node)' : ''}${n.stale ? html` <strong class="error">stale</strong>` : ''}</td>${classes.map(
      (k) => {
        const x = n.classes.find((y) => y.class === k);
        if (!x) return html`<td>–</td>`;
        return html`<td class="fresh-${x.status}" title="goal ${x.goalHours} h; reached ${x.reachedAt ?? 'not yet'}; files ${x.filesVerifiedAt ?? (x.missing.files ? 'not yet' : 'none needed')}">${label[x.status]}${x.late ? ` by ${x.late} h` : ''}${x.missing.updates || x.missing.files ? ` (missing ${x.missing.updates} updates, ${x.missing.files} files)` : ''}</td>`;
      },
    )}</tr>`,
)}</tbody></table></section>`;
})}
<section aria-labelledby="fp"><h2 id="fp">Missed goals</h2>
${h.problems.length ? html`<ul>${h.problems.map((p) => html`<li>release ${p.release} at <strong>${p.node.name}</strong> (${p.classes.join(', ')}): ${p.lateHours} h late when found, ${p.detectedAt}</li>`)}</ul>` : html`<p>None.</p>`}</section>
<p><a href="/api/v1/reports/freshness?scope=tree&amp;format=csv">Per release, node and class (CSV)</a></p>`,
      );
    }),
  );

  app.get(
    '/hierarchy',
    page(async (c) => {
      const { body: h } = await api<{
        node: { name: string; role: string; languages: string[] };
        upstream: { connected: boolean; lag?: { entries: number; seconds: number }; address?: string } | null;
        children: { id: string; name: string; connected: boolean; languages: string[]; lag: { entries: number; seconds: number }; removed?: boolean }[];
      }>(c, '/api/v1/hierarchy');
      const { body: tree } = await api<TreeReport>(c, '/api/v1/reports/compliance?scope=tree');
      const state = (up: boolean) => html`<span class="${up ? 'state-connected' : 'state-disconnected'}">${up ? 'connected' : 'disconnected'}</span>`;
      return layout(
        c,
        'Hierarchy',
        nodeName,
        html`${h.upstream ? html`<p>Upstream ${h.upstream.address ?? ''}: ${state(h.upstream.connected)}${h.upstream.lag ? `, ${h.upstream.lag.entries} changes (${h.upstream.lag.seconds} s) behind` : ''}</p>` : ''}
<ul class="tree" aria-label="This node and its children"><li><strong>${h.node.name}</strong> (${h.node.role}; ${h.node.languages.join(', ')})
<ul>${h.children.filter((ch) => !ch.removed).map((ch) => html`<li data-child="${ch.id}"><strong>${ch.name}</strong>: ${state(ch.connected)}, lag ${ch.lag.entries} changes / ${ch.lag.seconds} s; languages ${ch.languages.join(', ') || '–'}</li>`)}</ul></li></ul>
<section aria-labelledby="h2"><h2 id="h2">Compliance of every node (the roll-up)</h2>
<p class="muted">Each node reports its summary up the tree; one that misses three of its intervals is shown stale with its last figures.</p>
${treeTable(tree)}
<p><a href="/api/v1/reports/compliance?scope=tree&amp;format=csv">Per node (CSV)</a></p></section>`,
      );
    }),
  );
}
