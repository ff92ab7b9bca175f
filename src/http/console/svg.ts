import { html, raw } from 'hono/html';

/**
 * Charts drawn by the server as inline SVG: no script, readable without one.
 * Each has role="img" and a label that says the figures in words.
 */

const esc = (s: string) => s.replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]!);

/** A half-circle gauge of a percentage. */
export function gauge(percent: number, label: string) {
  const p = Math.max(0, Math.min(100, percent));
  const a = Math.PI * (1 - p / 100);
  const x = 100 + 80 * Math.cos(a);
  const y = 100 - 80 * Math.sin(a);
  const color = p >= 90 ? '#1a7f37' : p >= 70 ? '#9a6700' : '#cf222e';
  return html`<svg class="gauge" viewBox="0 0 200 120" width="240" height="144" role="img" aria-label="${label}: ${p}%">
  <path d="M20 100 A80 80 0 0 1 180 100" fill="none" stroke="#d0d7de" stroke-width="18"/>
  ${p > 0 ? raw(`<path d="M20 100 A80 80 0 0 1 ${x.toFixed(2)} ${y.toFixed(2)}" fill="none" stroke="${color}" stroke-width="18"/>`) : ''}
  <text x="100" y="95" text-anchor="middle" font-size="28" font-weight="bold" fill="#1f2328">${p}%</text>
  <text x="100" y="115" text-anchor="middle" font-size="11" fill="#59636e">${label}</text>
</svg>`;
}

/** Horizontal bars, one per item, scaled to the largest. */
export function bars(items: { label: string; value: number; color: string }[], label: string) {
  const max = Math.max(1, ...items.map((i) => i.value));
  const rows = items
    .map((it, i) => {
      const w = Math.round((240 * it.value) / max);
      const y = i * 28;
      return `<text x="0" y="${y + 17}" font-size="13" fill="#1f2328">${esc(it.label)}</text><rect x="90" y="${y + 4}" width="${w}" height="18" fill="${it.color}"/><text x="${96 + w}" y="${y + 17}" font-size="13" fill="#1f2328">${it.value}</text>`;
    })
    .join('');
  const words = items.map((i) => `${i.label} ${i.value}`).join(', ');
  return html`<svg class="bars" viewBox="0 0 400 ${items.length * 28 + 4}" width="400" height="${items.length * 28 + 4}" role="img" aria-label="${label}: ${words}">${raw(rows)}</svg>`;
}

/** A line of percentages over days (0 to 100 on the vertical axis). */
export function trendLine(points: { day: string; value: number }[], label: string) {
  if (!points.length) return html`<p class="muted">No trend yet: one point is recorded each day.</p>`;
  const w = 480;
  const h = 140;
  const step = points.length > 1 ? (w - 40) / (points.length - 1) : 0;
  const xy = points.map((p, i) => [30 + i * step, 10 + ((100 - p.value) / 100) * (h - 30)] as const);
  const poly = xy.map(([x, y]) => `${x.toFixed(1)},${y.toFixed(1)}`).join(' ');
  const dots = xy
    .map(
      ([x, y], i) =>
        `<circle cx="${x.toFixed(1)}" cy="${y.toFixed(1)}" r="2.5" fill="#0969da"><title>${esc(points[i]!.day)}: ${points[i]!.value}%</title></circle>`,
    )
    .join('');
  const first = points[0]!;
  const last = points[points.length - 1]!;
  return html`<svg class="trend" viewBox="0 0 ${w} ${h}" width="${w}" height="${h}" role="img" aria-label="${label}: ${first.day} ${first.value}% to ${last.day} ${last.value}%">
  <line x1="30" y1="10" x2="30" y2="${h - 20}" stroke="#d0d7de"/><line x1="30" y1="${h - 20}" x2="${w - 10}" y2="${h - 20}" stroke="#d0d7de"/>
  <text x="0" y="14" font-size="10" fill="#59636e">100%</text><text x="8" y="${h - 20}" font-size="10" fill="#59636e">0%</text>
  <text x="30" y="${h - 5}" font-size="10" fill="#59636e">${first.day}</text><text x="${w - 10}" y="${h - 5}" font-size="10" text-anchor="end" fill="#59636e">${last.day}</text>
  ${raw(`<polyline points="${poly}" fill="none" stroke="#0969da" stroke-width="2"/>${dots}`)}
</svg>`;
}

/** A progress bar: done of total, with the figures as text. */
export function progress(done: number, failed: number, total: number) {
  const pd = total ? (100 * done) / total : 0;
  const pf = total ? (100 * failed) / total : 0;
  return html`<svg class="progress" viewBox="0 0 200 14" width="200" height="14" role="img" aria-label="${done} of ${total} installed, ${failed} failed">
  <rect width="200" height="14" fill="#eaeef2"/>${raw(`<rect width="${(2 * pd).toFixed(1)}" height="14" fill="#1a7f37"/><rect x="${(2 * pd).toFixed(1)}" width="${(2 * pf).toFixed(1)}" height="14" fill="#cf222e"/>`)}
</svg>`;
}

/** A node of the tree picture: its state decides its colour. */
export interface TreeNode {
  id: string;
  name: string;
  parentId: string | null;
  /** ok: connected (or this node) and reporting; warn: lagging or a release late; bad: disconnected, stale or a release overdue. */
  level: 'ok' | 'warn' | 'bad';
  /** Short words under the name: its state, lag, freshness. */
  lines: string[];
}

const TREE_FILL = { ok: '#dafbe1', warn: '#fff1e5', bad: '#ffebe9' } as const;
const TREE_STROKE = { ok: '#1a7f37', warn: '#bc4c00', bad: '#cf222e' } as const;

/**
 * The whole tree as a picture, top down: each node a box (its name, then its state,
 * lag and freshness), coloured by how it is doing, under its parent. Leaves take one
 * column each, a parent stands over the middle of its children. Nodes whose parent is
 * not in the list hang under the first node (the one this page is on).
 */
export function treeDiagram(nodes: TreeNode[], label: string) {
  if (!nodes.length) return html``;
  const W = 168;
  const H = 18 + 14 * Math.max(...nodes.map((n) => n.lines.length));
  const GX = 16;
  const GY = 34;
  const root = nodes[0]!;
  const ids = new Set(nodes.map((n) => n.id));
  const kids = new Map<string, TreeNode[]>();
  for (const n of nodes.slice(1)) {
    const p = n.parentId && ids.has(n.parentId) && n.parentId !== n.id ? n.parentId : root.id;
    kids.set(p, [...(kids.get(p) ?? []), n]);
  }
  const pos = new Map<string, { x: number; y: number }>();
  let column = 0;
  let depth = 0;
  const place = (n: TreeNode, d: number, seen: Set<string>): number => {
    seen.add(n.id);
    depth = Math.max(depth, d);
    const children = (kids.get(n.id) ?? []).filter((k) => !seen.has(k.id));
    const xs = children.map((k) => place(k, d + 1, seen));
    const x = xs.length ? (xs[0]! + xs[xs.length - 1]!) / 2 : column++ * (W + GX);
    pos.set(n.id, { x, y: d * (H + GY) });
    return x;
  };
  place(root, 0, new Set());
  const width = Math.max(W, column * (W + GX) - GX) + 2;
  const height = (depth + 1) * (H + GY) - GY + 2;
  const parts: string[] = [];
  for (const [parent, children] of kids) {
    const p = pos.get(parent);
    if (!p) continue;
    for (const k of children) {
      const c = pos.get(k.id);
      if (!c) continue;
      const midY = p.y + H + GY / 2;
      parts.push(`<path d="M${p.x + W / 2 + 1} ${p.y + H + 1} V${midY} H${c.x + W / 2 + 1} V${c.y + 1}" fill="none" stroke="#8c959f"/>`);
    }
  }
  for (const n of nodes) {
    const p = pos.get(n.id);
    if (!p) continue;
    const text = n.lines.map((l, i) => `<text x="${p.x + 9}" y="${p.y + 33 + 14 * i}" font-size="11" fill="#1f2328">${esc(l)}</text>`).join('');
    parts.push(
      `<g data-node="${esc(n.id)}" data-state="${n.level}"><title>${esc(`${n.name}: ${n.lines.join('; ')}`)}</title><rect x="${p.x + 1}" y="${p.y + 1}" width="${W}" height="${H}" rx="6" fill="${TREE_FILL[n.level]}" stroke="${TREE_STROKE[n.level]}" stroke-width="1.5"/><text x="${p.x + 9}" y="${p.y + 18}" font-size="13" font-weight="bold" fill="#1f2328">${esc(n.name)}</text>${text}</g>`,
    );
  }
  const words = nodes.map((n) => `${n.name} (${n.lines.join(', ')})`).join('; ');
  return html`<svg class="tree-picture" viewBox="0 0 ${width} ${height}" width="${width}" height="${height}" role="img" aria-label="${label}: ${words}">${raw(parts.join(''))}</svg>`;
}

/** Columns per day: installs that succeeded (green) with those that failed stacked on top (red). */
export function installsChart(days: { day: string; installed: number; failed: number }[], label: string) {
  if (!days.length) return html`<p class="muted" id="installs-none">No install reported yet.</p>`;
  const w = 480;
  const h = 140;
  const max = Math.max(1, ...days.map((d) => d.installed + d.failed));
  const step = (w - 40) / days.length;
  const bw = Math.max(2, Math.min(24, step - 2));
  const scale = (n: number) => ((h - 30) * n) / max;
  const cols = days
    .map((d, i) => {
      const x = 30 + i * step;
      const hi = scale(d.installed);
      const hf = scale(d.failed);
      return `<g><title>${esc(d.day)}: ${d.installed} installed, ${d.failed} failed</title><rect x="${x.toFixed(1)}" y="${(h - 20 - hi).toFixed(1)}" width="${bw.toFixed(1)}" height="${hi.toFixed(1)}" fill="#1a7f37"/><rect x="${x.toFixed(1)}" y="${(h - 20 - hi - hf).toFixed(1)}" width="${bw.toFixed(1)}" height="${hf.toFixed(1)}" fill="#cf222e"/></g>`;
    })
    .join('');
  const total = days.reduce((n, d) => n + d.installed, 0);
  const failed = days.reduce((n, d) => n + d.failed, 0);
  const first = days[0]!;
  const last = days[days.length - 1]!;
  return html`<svg class="installs" viewBox="0 0 ${w} ${h}" width="${w}" height="${h}" role="img" aria-label="${label}: ${total} installed, ${failed} failed, ${first.day} to ${last.day}">
  <line x1="30" y1="10" x2="30" y2="${h - 20}" stroke="#d0d7de"/><line x1="30" y1="${h - 20}" x2="${w - 10}" y2="${h - 20}" stroke="#d0d7de"/>
  <text x="0" y="14" font-size="10" fill="#59636e">${max}</text><text x="18" y="${h - 20}" font-size="10" fill="#59636e">0</text>
  <text x="30" y="${h - 5}" font-size="10" fill="#59636e">${first.day}</text><text x="${w - 10}" y="${h - 5}" font-size="10" text-anchor="end" fill="#59636e">${last.day}</text>
  ${raw(cols)}
</svg>`;
}
