import type { Context } from 'hono';
import type { OpenAPIHono } from '@hono/zod-openapi';
import { getCookie, setCookie, deleteCookie } from 'hono/cookie';
import { html } from 'hono/html';
import type { AppEnv } from '../auth.js';
import type { AppDeps } from '../app.js';
import { bodyLimit } from 'hono/body-limit';
import { AppError } from '../../lib/errors.js';
import { Sessions, csrfMatches, safeNext, type Session } from './sessions.js';
import { sourceOf, type AuthGuard } from '../guard.js';
import { CONSOLE_JS, layout, sessionOf, type ConsolePages } from './layout.js';
import { dashboardPage, reportPages } from './report-pages.js';
import { fleetPages } from './fleet-pages.js';
import { policyPages } from './policy-pages.js';

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

  app.get('/console.js', (c) => c.body(CONSOLE_JS, 200, { 'content-type': 'text/javascript; charset=utf-8', 'cache-control': 'max-age=3600' }));

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

  const pages: ConsolePages = { app, nodeName, api, page, form };
  dashboardPage(pages);
  fleetPages(pages);
  policyPages(pages);
  reportPages(pages);
}
