import { html, raw } from 'hono/html';
import { bars, gauge, trendLine, treeDiagram, type TreeNode } from './svg.js';
import { SEVERITY_COLORS, fmt, layout, when, type ConsolePages } from './layout.js';
import { cursorOf, pager } from './fleet-pages.js';

/* The console's report pages: the dashboard, vulnerabilities, catalog freshness and the hierarchy (with the tree's roll-up). */

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

/** The tree picture's nodes: the roll-up's, with the direct children's link state and lag, and the newest release's freshness. */
function treeNodes(
  tree: TreeReport,
  children: { id: string; connected: boolean; lag: { entries: number; seconds: number }; removed?: boolean }[],
  fresh: FreshnessReport,
): TreeNode[] {
  const direct = new Map(children.filter((c) => !c.removed).map((c) => [c.id, c]));
  const release = fresh.releases[0];
  const rank = { ok: 0, warn: 1, bad: 2 } as const;
  return tree.nodes.map((n) => {
    let level: TreeNode['level'] = 'ok';
    const worse = (l: TreeNode['level']) => {
      if (rank[l] > rank[level]) level = l;
    };
    const lines: string[] = [];
    const d = direct.get(n.id);
    if (n.self) lines.push('this node');
    else if (d) {
      if (!d.connected) worse('bad');
      else if (d.lag.entries > 0 && d.lag.seconds > 60) worse('warn');
      lines.push(d.connected ? `connected, lag ${d.lag.entries ? `${fmt(d.lag.entries)} (${d.lag.seconds} s)` : '0'}` : 'disconnected');
    } else lines.push('reports via its parent');
    if (n.stale) {
      worse('bad');
      lines.push('report stale');
    } else lines.push(`${fmt(n.summary.computers)} computers, ${n.summary.compliantPercent}%`);
    const classes = release?.nodes.find((x) => x.id === n.id)?.classes ?? [];
    if (release && classes.length) {
      const status = classes.some((k) => k.status === 'overdue')
        ? 'overdue'
        : classes.some((k) => k.status === 'late')
          ? 'late'
          : classes.some((k) => k.status === 'pending')
            ? 'pending'
            : 'in time';
      if (status === 'overdue') worse('bad');
      if (status === 'late') worse('warn');
      lines.push(`${release.version}: ${status}`);
    }
    return { id: n.id, name: n.name, parentId: n.parentId, level, lines };
  });
}

/** The updates that fix a CVE, each KB once: how many updates (products) carry it, and whether a policy delivers one. */
function fixedBy(fixes: { kb: string | null; updateId: string; policies: number }[]) {
  const byKb = new Map<string, { label: string; href: string; updates: number; inPolicy: boolean }>();
  for (const f of fixes) {
    const key = f.kb ? `KB${f.kb}` : f.updateId;
    const e = byKb.get(key) ?? { label: key, href: f.kb ? `/updates?q=${f.kb}` : `/updates/${encodeURIComponent(f.updateId)}`, updates: 0, inPolicy: false };
    e.updates++;
    e.inPolicy ||= f.policies > 0;
    byKb.set(key, e);
  }
  return html`${[...byKb.values()].map(
    (e, i) =>
      html`${i ? ', ' : ''}<a href="${e.href}" data-kb="${e.label}">${e.label}</a>${e.updates > 1 ? ` (${e.updates} updates)` : ''}${e.inPolicy ? ' (in a policy)' : ''}`,
  )}`;
}

/** One row per node of the roll-up, each under its parent's name. */
function treeTable(tree: TreeReport) {
  const names = new Map(tree.nodes.map((n) => [n.id, n.name]));
  return html`<table id="tree-nodes"><thead><tr><th scope="col">Node</th><th scope="col">Reports to</th><th scope="col" class="n">Computers</th><th scope="col" class="n">Compliant</th><th scope="col" class="n">Required</th><th scope="col" class="n">Miss a critical</th><th scope="col" class="n">Stale scans</th><th scope="col">Reported</th></tr></thead><tbody>
${tree.nodes.map(
  (
    n,
  ) => html`<tr data-node="${n.id}"${n.stale ? raw(' class="stale"') : ''}><td>${n.name}${n.self ? ' (this node)' : ''}</td><td>${n.parentId ? (names.get(n.parentId) ?? n.parentId) : ''}</td><td class="n">${fmt(n.summary.computers)}</td><td class="n">${n.summary.compliantPercent}%</td><td class="n">${fmt(n.summary.required)}</td><td class="n">${fmt(n.summary.urgentComputers)}</td><td class="n">${fmt(n.summary.stale)}</td>
<td>${n.self ? 'live' : when(n.reportedAt)}${n.stale ? html` <strong class="error">stale</strong>` : ''}</td></tr>`,
)}
</tbody></table>`;
}

/** The dashboard at `/`. */
export function dashboardPage({ app, nodeName, api, page }: ConsolePages): void {
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
}

/** Vulnerabilities, catalog freshness and the hierarchy. */
export function reportPages({ app, nodeName, api, page }: ConsolePages): void {
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
        nextCursor: string | null;
      }>(c, `/api/v1/reports/vulnerabilities?limit=100${cursorOf(c)}`);
      return layout(
        c,
        'Vulnerabilities',
        nodeName,
        html`<table id="vulnerabilities"><caption class="muted">Most affected computers first, 100 a page; each fixing KB once (with how many of its updates, one per product, there are)</caption><thead><tr><th scope="col">CVE</th><th scope="col">Severity</th><th scope="col">Exploited</th><th scope="col" class="n">Computers</th><th scope="col">Fixed by</th></tr></thead><tbody>
${(body.items ?? []).map((v) => html`<tr><td>${v.cve}</td><td>${v.severity ?? ''}</td><td>${v.exploited ? 'yes' : 'no'}</td><td class="n">${v.affectedComputers}</td><td>${fixedBy(v.fixes)}</td></tr>`)}
</tbody></table>${pager(c, body.nextCursor)}`,
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
  return html`<section aria-label="Release ${r.version}"><h2>Release ${r.version}</h2><p class="muted">published ${when(r.publishedAt)}, imported at the root ${when(r.importedAt)}</p>
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
${h.problems.length ? html`<ul>${h.problems.map((p) => html`<li>release ${p.release} at <strong>${p.node.name}</strong> (${p.classes.join(', ')}): ${p.lateHours} h late when found, ${when(p.detectedAt)}</li>`)}</ul>` : html`<p>None.</p>`}</section>
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
      const { body: fresh } = await api<FreshnessReport>(c, '/api/v1/reports/freshness?scope=tree');
      const picture = treeDiagram(treeNodes(tree, h.children, fresh), 'The tree below this node');
      const state = (up: boolean) => html`<span class="${up ? 'state-connected' : 'state-disconnected'}">${up ? 'connected' : 'disconnected'}</span>`;
      return layout(
        c,
        'Hierarchy',
        nodeName,
        html`<section aria-labelledby="tp"><h2 id="tp">The tree</h2>
<p class="muted">Every node below this one, from the reports they send up (green: connected and reporting; amber: lagging or a release late; red: disconnected, its report stale or a release overdue). Lag is known for this node's own children.</p>
<div class="scroll">${picture}</div></section>
${h.upstream ? html`<p>Upstream ${h.upstream.address ?? ''}: ${state(h.upstream.connected)}${h.upstream.lag ? `, ${h.upstream.lag.entries} changes (${h.upstream.lag.seconds} s) behind` : ''}</p>` : ''}
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
