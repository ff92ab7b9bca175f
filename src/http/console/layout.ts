import type { Context } from 'hono';
import type { OpenAPIHono } from '@hono/zod-openapi';
import { html, raw } from 'hono/html';
import type { HtmlEscapedString } from 'hono/utils/html';
import type { AppEnv } from '../auth.js';
import type { Session } from './sessions.js';
import type { SeverityBucket } from '../../catalog/format.js';

/*
 * What every console page shares: the frame (style sheet, navigation, sign-out form),
 * the CSRF field of the request's session, number formatting, and what consoleRoutes
 * (pages.ts) gives each page's renderer.
 */

/** The session of a request, once `page` has found it. */
export const sessionOf = new WeakMap<object, Session>(); // by context: a body limit replaces c.req.raw
export const csrfField = (c: Context) => raw(`<input type="hidden" name="csrf" value="${sessionOf.get(c)?.csrf ?? ''}">`);
type H = HtmlEscapedString | Promise<HtmlEscapedString>;

export const SEVERITY_COLORS: Record<string, string> = {
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
.scroll{overflow-x:auto}
dl.facts{display:grid;grid-template-columns:max-content 1fr;gap:.2rem 1rem}dl.facts dt{font-weight:600}dl.facts dd{margin:0}
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

export function layout(c: Context, title: string, nodeName: string, body: H, signedIn = true) {
  const path = c.req.path;
  return c.html(html`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>${title} · patchtree ${nodeName}</title><link rel="icon" href="${FAVICON}"><style>${raw(CSS)}</style><script src="/console.js" defer></script></head>
<body><header><strong>patchtree · ${nodeName}</strong>
${
  signedIn
    ? html`<nav aria-label="Main">${PAGES.map(([href, name]) => html`<a href="${href}"${(href === '/' ? path === '/' : path.startsWith(href)) ? raw(' aria-current="page"') : ''}>${name}</a> `)}</nav>
<form method="post" action="/sign-out" style="margin-left:auto">${csrfField(c)}<button type="submit">Sign out</button></form>`
    : ''
}
</header><main id="main"><h1>${title}</h1>${body}</main></body></html>`);
}

/** The favicon: three nodes of a tree, inline (no request). */
const FAVICON = `data:image/svg+xml,${encodeURIComponent(
  '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 32 32"><path d="M16 9v7M16 16H7v7M16 16h9v7" stroke="#24292f" stroke-width="2.5" fill="none"/><circle cx="16" cy="7" r="5" fill="#0969da"/><circle cx="7" cy="25" r="5" fill="#1a7f37"/><circle cx="25" cy="25" r="5" fill="#1a7f37"/></svg>',
)}`;

/** "3 min ago", "in 2 h": how far `iso` is from `now`, in the largest whole unit. */
export function relativeTime(iso: string, now = Date.now()): string {
  const ms = Date.parse(iso) - now;
  const abs = Math.abs(ms);
  const units: [number, string][] = [
    [86_400_000, 'd'],
    [3_600_000, 'h'],
    [60_000, 'min'],
    [1000, 's'],
  ];
  if (abs < 10_000) return 'just now';
  const [size, unit] = units.find(([u]) => abs >= u)!;
  const n = Math.floor(abs / size);
  return ms < 0 ? `${n} ${unit} ago` : `in ${n} ${unit}`;
}

/**
 * A time as the console shows it: relative ("3 min ago"), the ISO time on hover; the
 * browser's script (/console.js) puts it in the browser's time zone and keeps it current.
 */
export const when = (iso: string | null | undefined) =>
  iso ? html`<time datetime="${iso}" title="${iso}">${relativeTime(iso)}</time>` : html`<span class="muted">never</span>`;

/** What /console.js does: every <time> relative and current, its title the local time and the ISO time. */
export const CONSOLE_JS = `(() => {
  const units = [[86400000, 'd'], [3600000, 'h'], [60000, 'min'], [1000, 's']];
  const rel = (ms) => {
    const abs = Math.abs(ms);
    if (abs < 10000) return 'just now';
    const [size, unit] = units.find(([u]) => abs >= u);
    const n = Math.floor(abs / size);
    return ms < 0 ? n + ' ' + unit + ' ago' : 'in ' + n + ' ' + unit;
  };
  const update = () => {
    for (const t of document.querySelectorAll('time[datetime]')) {
      const d = new Date(t.dateTime);
      if (isNaN(d)) continue;
      t.textContent = rel(d.getTime() - Date.now());
      t.title = d.toLocaleString() + ' (' + t.dateTime + ')';
    }
  };
  update();
  setInterval(update, 30000);
})();
`;

export const fmt = (n: number | null | undefined) => (n === null || n === undefined ? '–' : n.toLocaleString('en-US'));

/** What consoleRoutes gives each page's renderer. */
export interface ConsolePages {
  app: OpenAPIHono<AppEnv>;
  nodeName: string;
  /** The API, in-process, as the signed-in user. */
  api<T>(c: Context, path: string, init?: RequestInit): Promise<{ status: number; body: T }>;
  /** A page: it needs a session (else to the sign-in page). */
  page(handler: (c: Context) => Promise<Response>): (c: Context) => Promise<Response>;
  /** A form post: a session and its CSRF token (checked before the handler reads anything else). */
  form(handler: (c: Context, f: Record<string, string | File>) => Promise<Response>): (c: Context) => Promise<Response>;
}
