import { html } from 'hono/html';
import { layout, type ConsolePages } from './layout.js';

/** The catalog's updates, the computers and one computer's required updates. */
export function fleetPages({ app, nodeName, api, page }: ConsolePages): void {
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
}
