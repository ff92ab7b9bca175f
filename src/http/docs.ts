import { html, raw } from 'hono/html';

type Doc = {
  info: { title: string; version: string; description?: string };
  paths?: Record<
    string,
    Record<
      string,
      {
        summary?: string;
        description?: string;
        tags?: string[];
        parameters?: { name: string; in: string; required?: boolean; description?: string; schema?: unknown }[];
        requestBody?: { content?: Record<string, { schema?: unknown }> };
        responses?: Record<string, { description?: string }>;
      }
    >
  >;
};

/**
 * `/docs`: the OpenAPI document as a self-contained HTML page, rendered by the
 * server (no CDN, no script), so it works on a site with no internet access.
 */
export function renderDocs(doc: Doc): ReturnType<typeof html> {
  const ops: { method: string; path: string; op: NonNullable<Doc['paths']>[string][string] }[] = [];
  for (const [path, methods] of Object.entries(doc.paths ?? {})) {
    for (const [method, op] of Object.entries(methods)) ops.push({ method: method.toUpperCase(), path, op });
  }
  const byTag = new Map<string, typeof ops>();
  for (const o of ops) {
    const tag = o.op.tags?.[0] ?? 'other';
    byTag.set(tag, [...(byTag.get(tag) ?? []), o]);
  }
  return html`<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>${doc.info.title} ${doc.info.version}</title>
<style>
body{font:15px/1.5 system-ui,sans-serif;margin:0 auto;max-width:60rem;padding:1rem 2rem;color:#1b1b1b}
h1{font-size:1.6rem} h2{border-bottom:1px solid #ccc;margin-top:2rem}
details{border:1px solid #ddd;border-radius:6px;margin:.4rem 0;padding:.3rem .7rem}
summary{cursor:pointer} code,pre{font-family:ui-monospace,monospace;font-size:13px}
pre{background:#f5f5f5;padding:.6rem;overflow:auto}
.m{display:inline-block;min-width:4.5rem;font-weight:700}
.GET{color:#0b5394}.POST{color:#38761d}.PUT{color:#7f6000}.PATCH{color:#7f6000}.DELETE{color:#990000}
table{border-collapse:collapse} td,th{border:1px solid #ddd;padding:.2rem .5rem;text-align:left}
</style>
</head>
<body>
<h1>${doc.info.title} <small>${doc.info.version}</small></h1>
<p>${doc.info.description ?? ''}</p>
<p>Machine-readable: <a href="/openapi.json">/openapi.json</a> (OpenAPI 3).</p>
${[...byTag].map(
  ([tag, list]) => html`<h2>${tag}</h2>
  ${list.map(
    ({ method, path, op }) => html`<details>
      <summary><span class="m ${method}">${method}</span><code>${path}</code> ${op.summary ?? ''}</summary>
      ${op.description ? html`<p>${op.description}</p>` : ''}
      ${
        op.parameters?.length
          ? html`<table><tr><th>parameter</th><th>in</th><th>required</th><th>description</th></tr>
          ${op.parameters.map((p) => html`<tr><td><code>${p.name}</code></td><td>${p.in}</td><td>${p.required ? 'yes' : ''}</td><td>${p.description ?? ''}</td></tr>`)}</table>`
          : ''
      }
      ${Object.entries(op.requestBody?.content ?? {}).map(
        ([type, c]) => html`<p>Body (<code>${type}</code>):</p><pre>${JSON.stringify(c.schema, null, 2)}</pre>`,
      )}
      <p>Responses: ${raw(
        Object.entries(op.responses ?? {})
          .map(([s, r]) => `<code>${s}</code> ${escapeHtml(r.description ?? '')}`)
          .join('; '),
      )}</p>
    </details>`,
  )}`,
)}
</body>
</html>`;
}

function escapeHtml(s: string): string {
  return s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}
