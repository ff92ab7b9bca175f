import type { Context } from 'hono';
import { html } from 'hono/html';
import { bars } from './svg.js';
import { csrfField, fmt, layout, SEVERITY_COLORS, when, type ConsolePages } from './layout.js';

/** "Next page" for a list paged by the API's cursor; the current query kept. */
export function pager(c: Context, nextCursor: string | number | null | undefined) {
  if (nextCursor === null || nextCursor === undefined) return html``;
  const u = new URL(c.req.url);
  u.searchParams.set('cursor', String(nextCursor));
  return html`<p><a rel="next" href="${u.pathname}${u.search}">Next page</a></p>`;
}

/** The cursor of the page asked for, as `&cursor=` for the API (which checks it), or nothing. */
export const cursorOf = (c: Context) => {
  const v = c.req.query('cursor');
  return v ? `&cursor=${encodeURIComponent(v)}` : '';
};

const size = (n: number) => (n >= 1e6 ? `${(n / 1e6).toFixed(1)} MB` : `${Math.ceil(n / 1000)} KB`);

interface UpdateView {
  id: string;
  kb: string | null;
  title: string;
  description: string | null;
  product: string;
  classification: string;
  severity: string | null;
  customSeverity: { id: number; name: string } | null;
  cves: string[];
  releaseDate: string;
  restart: string;
  languages: string[];
  expired: boolean;
  superseded: boolean;
  releaseVersion: string;
  files: { name: string; size: number; sha256: string; language: string; installer: unknown }[];
}

/** The catalog's updates, an update, the computers and a computer. */
export function fleetPages({ app, nodeName, api, page, form }: ConsolePages): void {
  app.get(
    '/updates',
    page(async (c) => {
      const q = c.req.query('q') ?? '';
      const r = await api<{
        items?: { id: string; kb: string | null; title: string; product: string; severity: string | null; releaseDate: string }[];
        nextCursor?: string | null;
        detail?: string;
      }>(c, `/api/v1/updates?limit=100${q ? `&q=${encodeURIComponent(q)}` : ''}${cursorOf(c)}`);
      if (r.status !== 200) return layout(c, 'Updates', nodeName, html`<p class="error" role="alert">${r.body.detail ?? `error ${r.status}`}</p>`);
      return layout(
        c,
        'Updates',
        nodeName,
        html`<form method="get" class="inline" role="search"><label for="q">Search<input id="q" name="q" value="${q}"></label><button type="submit">Search</button></form>
<table id="updates"><caption class="muted">Live updates, 100 a page</caption><thead><tr><th scope="col">KB</th><th scope="col">Title</th><th scope="col">Product</th><th scope="col">Severity</th><th scope="col">Released</th></tr></thead><tbody>
${(r.body.items ?? []).map((u) => html`<tr><td>${u.kb ?? ''}</td><td><a href="/updates/${encodeURIComponent(u.id)}">${u.title}</a></td><td>${u.product}</td><td>${u.severity ?? ''}</td><td>${u.releaseDate}</td></tr>`)}
</tbody></table>${pager(c, r.body.nextCursor)}`,
      );
    }),
  );

  app.get(
    '/updates/:id',
    page(async (c) => {
      const id = c.req.param('id') ?? '';
      const r = await api<UpdateView & { detail?: string }>(c, `/api/v1/updates/${encodeURIComponent(id)}`);
      if (r.status !== 200) return layout(c, 'Update', nodeName, html`<p class="error" role="alert">${r.body.detail ?? 'not found'}</p>`);
      const u = r.body;
      const filter = encodeURIComponent(`requires:${u.id}`);
      const [needing, policyList] = await Promise.all([
        api<{ items: { id: number; name: string }[]; nextCursor: string | null }>(c, `/api/v1/computers?filter=${filter}&limit=50`),
        api<{ items: { id: string; name: string }[] }>(c, '/api/v1/policies?limit=100'),
      ]);
      const policies = (
        await Promise.all(
          (policyList.body.items ?? []).map((p) => api<{ id: string; name: string; updates: string[] }>(c, `/api/v1/policies/${encodeURIComponent(p.id)}`)),
        )
      )
        .map((p) => p.body)
        .filter((p) => p.updates?.includes(u.id));
      const computers = needing.status === 200 ? needing.body.items : [];
      return layout(
        c,
        u.kb ? `KB${u.kb}: ${u.title}` : u.title,
        nodeName,
        html`<dl class="facts">
<dt>Product</dt><dd>${u.product}</dd><dt>Classification</dt><dd>${u.classification}</dd>
<dt>Severity</dt><dd id="severity">${u.severity ?? 'unrated'}${u.customSeverity ? ` (custom: ${u.customSeverity.name})` : ''}</dd>
<dt>Released</dt><dd>${u.releaseDate}</dd><dt>Restart</dt><dd>${u.restart}</dd>
<dt>State</dt><dd>${u.expired ? 'expired' : u.superseded ? 'superseded' : 'live'}; catalog release ${u.releaseVersion}</dd>
<dt>Languages</dt><dd id="languages">${u.languages.join(', ') || 'none (metadata only)'}</dd>
<dt>CVEs</dt><dd>${u.cves.join(', ') || '–'}</dd></dl>
${u.description ? html`<p>${u.description}</p>` : ''}
<section aria-labelledby="uf"><h2 id="uf">Files (<span id="file-count">${u.files.length}</span>)</h2>
<table id="files"><thead><tr><th scope="col">Name</th><th scope="col">Language</th><th scope="col" class="n">Size</th><th scope="col">SHA-256</th></tr></thead><tbody>
${u.files.map((f) => html`<tr><td>${f.name}</td><td>${f.language}</td><td class="n">${size(f.size)}</td><td><code title="${f.sha256}">${f.sha256.slice(0, 16)}…</code></td></tr>`)}
</tbody></table></section>
<section aria-labelledby="uc"><h2 id="uc">Computers requiring it</h2>
${
  computers.length
    ? html`<ul id="requiring">${computers.map((m) => html`<li><a href="/computers/${m.id}">${m.name}</a></li>`)}</ul>${needing.body.nextCursor ? html`<p><a href="/computers?filter=${filter}">All of them</a></p>` : ''}`
    : html`<p id="requiring-none">None here.</p>`
}</section>
<section aria-labelledby="up"><h2 id="up">Policies delivering it</h2>
${policies.length ? html`<ul id="policies">${policies.map((p) => html`<li><a href="/policies/${encodeURIComponent(p.id)}">${p.name}</a></li>`)}</ul>` : html`<p>None.</p>`}</section>`,
      );
    }),
  );

  app.get(
    '/computers',
    page(async (c) => {
      const filter = c.req.query('filter');
      const r = await api<{
        items?: { id: number; name: string; os: string | null; required: number; urgent: number; lastScanAt: string | null; stale: boolean }[];
        nextCursor?: string | null;
        detail?: string;
      }>(c, `/api/v1/reports/compliance?view=computers&limit=200${filter ? `&filter=${encodeURIComponent(filter)}` : ''}${cursorOf(c)}`);
      if (r.status !== 200) return layout(c, 'Computers', nodeName, html`<p class="error" role="alert">${r.body.detail ?? `error ${r.status}`}</p>`);
      return layout(
        c,
        filter ? `Computers (${filter})` : 'Computers',
        nodeName,
        html`<table id="computers"><caption class="muted">Most required updates first, 200 a page</caption><thead><tr><th scope="col">Name</th><th scope="col">OS</th><th scope="col" class="n">Required</th><th scope="col" class="n">Critical</th><th scope="col">Last scan</th></tr></thead><tbody>
${(r.body.items ?? []).map((m) => html`<tr><td><a href="/computers/${m.id}">${m.name}</a></td><td>${m.os ?? ''}</td><td class="n">${m.required}</td><td class="n">${m.urgent}</td><td>${when(m.lastScanAt)}${m.stale ? ' (stale)' : ''}</td></tr>`)}
</tbody></table>${pager(c, r.body.nextCursor)}`,
      );
    }),
  );

  app.get(
    '/computers/:id',
    page(async (c) => {
      const id = Number(c.req.param('id'));
      const r = await api<{
        name?: string;
        detail?: string;
        os: string | null;
        osVersion: string | null;
        arch: string | null;
        language: string | null;
        lastScanAt: string;
        stale: boolean;
        agentVersion: string | null;
        enrolledAt: string;
        required: number;
        requiredBySeverity: Record<string, number>;
      }>(c, `/api/v1/computers/${id}`);
      if (r.status !== 200) return layout(c, 'Computer', nodeName, html`<p class="error" role="alert">${r.body.detail ?? 'not found'}</p>`);
      const m = r.body;
      const [u, ev, policyList] = await Promise.all([
        api<{ items: { id: string; kb: string | null; title: string; severity: string | null }[] }>(c, `/api/v1/computers/${id}/updates?state=required`),
        api<{ items: { id: string; type: string; updateId: string; attempt: number; at: string; exitCode?: number | null; message?: string | null }[] }>(
          c,
          `/api/v1/computers/${id}/events?limit=50`,
        ),
        api<{ items: { id: string; name: string }[] }>(c, '/api/v1/policies?limit=100'),
      ]);
      // Its delivery under each policy that targets it, with the failed attempts counted (the retries).
      const rows = (
        await Promise.all(
          (policyList.body.items ?? []).map(async (p) => {
            const d = await api<{
              items?: { updateId: string; kb: string | null; state: string; attempts: { download: number; install: number }; lastExitCode: number | null }[];
            }>(c, `/api/v1/reports/delivery?policy=${encodeURIComponent(p.id)}&computer=${id}&limit=100`);
            return (d.body.items ?? []).map((x) => ({ ...x, policy: p }));
          }),
        )
      ).flat();
      const failures = rows.reduce((n, x) => n + x.attempts.download + x.attempts.install, 0);
      const sev = Object.entries(m.requiredBySeverity).map(([k, value]) => {
        const label = k[0]!.toUpperCase() + k.slice(1);
        return { label, value, color: SEVERITY_COLORS[label] ?? '#6e7781' };
      });
      return layout(
        c,
        `Computer ${m.name}`,
        nodeName,
        html`<dl class="facts">
<dt>Operating system</dt><dd id="os">${m.os ?? 'unknown'}${m.osVersion ? ` ${m.osVersion}` : ''}${m.arch ? ` (${m.arch})` : ''}</dd>
<dt>Language</dt><dd>${m.language ?? '–'}</dd>
<dt>Last scan</dt><dd id="last-scan">${when(m.lastScanAt)}${m.stale ? html` <strong class="error">stale</strong>` : ''}</dd>
<dt>Agent</dt><dd>${m.agentVersion ?? '–'}, enrolled ${when(m.enrolledAt)}</dd></dl>
<section aria-labelledby="cr"><h2 id="cr">Required updates: <span id="required">${fmt(m.required)}</span></h2>
${bars(sev, 'required updates by severity')}
<table id="required-updates"><thead><tr><th scope="col">KB</th><th scope="col">Title</th><th scope="col">Severity</th></tr></thead><tbody>
${u.body.items.map((x) => html`<tr><td>${x.kb ?? ''}</td><td><a href="/updates/${encodeURIComponent(x.id)}">${x.title}</a></td><td>${x.severity ?? ''}</td></tr>`)}</tbody></table></section>
<section aria-labelledby="cd"><h2 id="cd">Delivery</h2>
${
  rows.length
    ? html`<table id="delivery"><thead><tr><th scope="col">Policy</th><th scope="col">Update</th><th scope="col">State</th><th scope="col" class="n">Failed downloads</th><th scope="col" class="n">Failed installs</th><th scope="col" class="n">Last exit code</th></tr></thead><tbody>
${rows.map((x) => html`<tr><td><a href="/policies/${encodeURIComponent(x.policy.id)}">${x.policy.name}</a></td><td><a href="/updates/${encodeURIComponent(x.updateId)}">${x.kb ? `KB${x.kb}` : x.updateId}</a></td><td>${x.state}</td><td class="n">${x.attempts.download}</td><td class="n">${x.attempts.install}</td><td class="n">${x.lastExitCode ?? '–'}</td></tr>`)}</tbody></table>
${failures ? html`<form method="post" action="/computers/${id}/retries/clear">${csrfField(c)}<button type="submit">Clear its retry counts (${failures} failed attempts)</button></form>` : ''}`
    : html`<p>No policy delivers anything to it.</p>`
}</section>
<section aria-labelledby="ce"><h2 id="ce">Events (the latest 50)</h2>
${
  ev.body.items?.length
    ? html`<table id="events"><thead><tr><th scope="col">When</th><th scope="col">Update</th><th scope="col">Event</th><th scope="col" class="n">Attempt</th><th scope="col">Exit code</th></tr></thead><tbody>
${ev.body.items.map((e) => html`<tr><td>${when(e.at)}</td><td>${e.updateId}</td><td>${e.type}</td><td class="n">${e.attempt}</td><td>${e.exitCode ?? ''}</td></tr>`)}</tbody></table>`
    : html`<p>None yet.</p>`
}</section>`,
      );
    }),
  );

  app.post(
    '/computers/:id/retries/clear',
    form(async (c) => {
      const id = Number(c.req.param('id'));
      const r = await api<{ cleared?: number; detail?: string }>(c, `/api/v1/computers/${id}/retries/clear`, { method: 'POST', body: '{}' });
      if (r.status !== 200) return layout(c, 'Computer', nodeName, html`<p class="error" role="alert">${r.body.detail ?? `error ${r.status}`}</p>`);
      return c.redirect(`/computers/${id}`, 303);
    }),
  );
}
