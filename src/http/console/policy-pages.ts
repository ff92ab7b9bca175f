import { html, raw } from 'hono/html';
import { progress, installsChart } from './svg.js';
import { csrfField, fmt, layout, type ConsolePages, when } from './layout.js';
import { cursorOf, pager } from './fleet-pages.js';

/** Policies: the list and a new policy's form, and one policy's delivery with its edit form. */
export function policyPages({ app, nodeName, api, page, form }: ConsolePages): void {
  app.get(
    '/policies',
    page(async (c) => {
      const { body } = await api<{
        items: { id: string; name: string; enabled: boolean; updateCount: number; deadline: string | null; delivery: Record<string, number> }[];
        nextCursor: string | null;
      }>(c, `/api/v1/policies?limit=100${cursorOf(c)}`);
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
<td>${progress(d.installed ?? 0, (d.failed ?? 0) + (d['ceiling-reached'] ?? 0), total)} ${fmt(d.installed)} / ${fmt(total)} installed</td><td>${p.deadline ? when(p.deadline) : ''}</td></tr>`;
})}</tbody></table>${pager(c, body.nextCursor)}
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
      }>(c, `/api/v1/reports/delivery?policy=${encodeURIComponent(id)}&limit=200${cursorOf(c)}`);
      if (r.status !== 200) return layout(c, 'Policy', nodeName, html`<p class="error" role="alert">${r.body.detail ?? 'not found'}</p>`);
      const t = r.body.totals;
      const { body: pol } = await api<{ name: string; enabled: boolean; deadline: string | null; origin: string | null }>(
        c,
        `/api/v1/policies/${encodeURIComponent(id)}`,
      );
      const { body: installs } = await api<{ days: { day: string; installed: number; failed: number }[] }>(
        c,
        `/api/v1/policies/${encodeURIComponent(id)}/installs?days=30`,
      );
      const err = c.req.query('error');
      const done = t.installed ?? 0;
      const broken = (t.failed ?? 0) + (t['ceiling-reached'] ?? 0);
      const all = Object.entries(t)
        .filter(([k]) => k !== 'computers')
        .reduce((a, [, v]) => a + v, 0);
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
<section aria-labelledby="dp" class="cards"><div class="card"><h2 id="dp">Progress</h2><p>${progress(done, broken, all)}</p><p>${fmt(done)} of ${fmt(all)} installed, ${fmt(broken)} failed or at their retry ceiling</p></div>
<div class="card"><h2>Installs per day (30 days)</h2>${installsChart(installs.days ?? [], 'installs per day')}</div></section>
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
}
