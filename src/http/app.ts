import { OpenAPIHono } from '@hono/zod-openapi';
import { bodyLimit } from 'hono/body-limit';
import { routePath } from 'hono/route';
import { HTTPException } from 'hono/http-exception';
import type { ZodError } from 'zod';
import { AppError, formatPath, isDiskFull, toProblem } from '../lib/errors.js';
import type { Logger } from '../lib/log.js';
import type { Database } from '../db/index.js';
import type { TokenService } from '../auth/tokens.js';
import type { SettingsService } from '../settings/service.js';
import type { CatalogImporter } from '../catalog/importer.js';
import type { Content } from '../content/index.js';
import type { Assessment } from '../assessment/index.js';
import { assessmentRoutes } from './routes/assessment.js';
import { deliveryRoutes } from './routes/delivery.js';
import { reportRoutes } from './routes/reports.js';
import { consoleRoutes } from './console/pages.js';
import type { DeliveryService } from '../delivery/index.js';
import type { ReportsService } from '../reports/index.js';
import type { ReplicationParent } from '../replication/parent.js';
import type { ReplicationChild } from '../replication/child.js';
import type { Identity } from '../replication/identity.js';
import { catalogCounts } from '../catalog/queries.js';
import type { Metrics } from '../node/metrics.js';
import { bearerAuth, type AppEnv } from './auth.js';
import { sourceOf, type AuthGuard } from './guard.js';
import { renderDocs } from './docs.js';
import { catalogRoutes } from './routes/catalog.js';
import { adminRoutes } from './routes/admin.js';
import { contentRoutes } from './routes/content.js';
import { hierarchyRoutes } from './routes/hierarchy.js';
import type { Rollup } from '../reports/rollup.js';
import type { Freshness } from '../freshness/freshness.js';

export interface AppDeps {
  db: Database;
  logger: Logger;
  tokens: TokenService;
  settings: SettingsService;
  importer: CatalogImporter;
  content: Content;
  assessment: Assessment;
  delivery: DeliveryService;
  reports: ReportsService;
  rollup: Rollup;
  freshness: Freshness;
  hierarchy: {
    identity: Identity;
    parent: ReplicationParent;
    child: ReplicationChild | null;
    languages: readonly string[];
    subtreeLanguages: () => string[];
  };
  metrics: Metrics;
  /** Failed authentication: counted, logged (rate-limited), failed enrolments limited per address. */
  guard: AuthGuard;
  /** The CA tokens pin (null: given certificates without --tls-ca), and the server certificate's expiry. */
  tls: { caSha256: string | null; pin: string | null; certNotAfter: () => string; hsts: boolean };
  node: { name: string; version: string; languages: readonly string[]; startedAt: number };
  tmpDir: string;
  maxCatalogBytes: number;
}

export const JSON_BODY_LIMIT = 1024 * 1024;

/** Validation failures from any route become one problem document listing each field. */
export function validationError(error: ZodError, target: string): AppError {
  const errors = error.issues.slice(0, 20).map((i) => ({ path: formatPath(i.path), message: i.message }));
  return new AppError('validation-failed', `invalid ${target}: ${errors.map((e) => `${e.path}: ${e.message}`).join('; ')}`, { errors });
}

export function problemResponse(err: AppError, instance: string): Response {
  return new Response(JSON.stringify(toProblem(err, instance)), {
    status: err.status,
    headers: { 'content-type': 'application/problem+json' },
  });
}

export function createApp(deps: AppDeps): OpenAPIHono<AppEnv> {
  const log = deps.logger.child({ module: 'http' });
  const app = new OpenAPIHono<AppEnv>({
    defaultHook: (result) => {
      if (!result.success) throw validationError(result.error, result.target === 'json' ? 'body' : result.target);
    },
  });

  app.use('*', async (c, next) => {
    const start = performance.now();
    await next();
    // Every answer: no type sniffing, no referrer; console pages: no framing, nothing from elsewhere.
    c.res.headers.set('X-Content-Type-Options', 'nosniff');
    c.res.headers.set('Referrer-Policy', 'same-origin'); // not no-referrer: browsers then send "Origin: null" with forms, which the CSRF check must refuse
    if (c.res.headers.get('content-type')?.startsWith('text/html')) {
      c.res.headers.set(
        'Content-Security-Policy',
        "default-src 'none'; script-src 'self'; style-src 'unsafe-inline'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
      );
      c.res.headers.set('X-Frame-Options', 'DENY');
    }
    // HSTS on HTTPS, unless plain HTTP serves everything too (--insecure-http, a lab): it covers the whole host.
    if (deps.tls.hsts && new URL(c.req.url).protocol === 'https:') c.res.headers.set('Strict-Transport-Security', 'max-age=15552000');
    const route = routePath(c) || 'unmatched';
    const status = String(c.res.status);
    deps.metrics.httpRequests.inc({ method: c.req.method, route, status });
    deps.metrics.httpDuration.observe({ method: c.req.method, route }, (performance.now() - start) / 1000);
  });

  // JSON bodies are small; the catalog upload route streams and has its own limit.
  app.use('/api/*', async (c, next) => {
    if (c.req.path === '/api/v1/catalog/imports' && c.req.method === 'POST') return next();
    return bodyLimit({
      maxSize: JSON_BODY_LIMIT,
      onError: () => {
        throw new AppError('payload-too-large', `JSON bodies are limited to ${JSON_BODY_LIMIT} bytes`);
      },
    })(c, next);
  });
  app.use('/api/v1/*', bearerAuth(deps.tokens));
  const guard = deps.guard;

  app.get('/healthz', async (c) => {
    try {
      await deps.db.client.execute('SELECT 1');
      return c.json({ status: 'ok', name: deps.node.name, version: deps.node.version, uptimeSeconds: Math.round((Date.now() - deps.node.startedAt) / 1000) });
    } catch (err) {
      log.error({ err }, 'health check: database unreachable');
      return c.json({ status: 'unavailable', reason: 'database unreachable' }, 503);
    }
  });

  app.get('/metrics', async (c) => {
    const counts = await catalogCounts(deps.db.orm);
    deps.metrics.catalogUpdates.set({ state: 'live' }, counts.live);
    deps.metrics.catalogUpdates.set({ state: 'expired' }, counts.expired);
    const m = deps.metrics;
    m.replicationHead.set(await deps.hierarchy.parent.headSeq());
    const up = deps.hierarchy.child?.status();
    if (up) {
      m.upstreamConnected.set(up.connected ? 1 : 0);
      m.upstreamLag.set(up.lag.entries);
      m.upstreamLagSeconds.set(up.lag.seconds);
    }
    for (const ch of await deps.hierarchy.parent.listChildren()) {
      if (ch.removed) continue;
      const child = `${ch.name} (${ch.id.slice(0, 8)})`;
      m.childConnected.set({ child }, ch.connected ? 1 : 0);
      m.childLag.set({ child }, ch.lag.entries);
      m.childLagSeconds.set({ child }, ch.lag.seconds);
      m.childFilesPending.set({ child }, ch.filesPending);
    }
    return c.text(await deps.metrics.registry.metrics(), 200, { 'content-type': deps.metrics.registry.contentType });
  });

  catalogRoutes(app, deps);
  adminRoutes(app, deps);
  contentRoutes(app, deps);
  hierarchyRoutes(app, deps);
  assessmentRoutes(app, deps);
  deliveryRoutes(app, deps, guard);
  reportRoutes(app, deps);
  consoleRoutes(app, deps, guard);

  app.openAPIRegistry.registerComponent('securitySchemes', 'bearer', {
    type: 'http',
    scheme: 'bearer',
    description: 'An API token (admin, operator or viewer).',
  });
  app.openAPIRegistry.registerComponent('securitySchemes', 'enrollment', {
    type: 'http',
    scheme: 'bearer',
    description: 'An agent enrolment token (POST /api/v1/agents/enrollment-tokens).',
  });
  app.openAPIRegistry.registerComponent('securitySchemes', 'agent', {
    type: 'http',
    scheme: 'bearer',
    description: 'An agent secret (POST /agent/v1/enroll).',
  });
  const docConfig = {
    openapi: '3.0.3',
    info: {
      title: 'patchtree node API',
      version: deps.node.version,
      description: 'Every /api/v1 route takes Authorization: Bearer <token>. Errors are application/problem+json.',
    },
    security: [{ bearer: [] }],
  };
  // Each route's role, from the role middleware it was registered with: the document says it as `x-patchtree-role`.
  const roles = new Map<string, string>();
  for (const r of app.routes) {
    const role = (r.handler as { role?: string }).role;
    if (role) roles.set(`${r.method.toLowerCase()} ${r.path}`, role);
  }
  app.get('/openapi.json', (c) => {
    const doc = app.getOpenAPIDocument(docConfig) as unknown as { paths: Record<string, Record<string, Record<string, unknown>>> };
    for (const [path, ops] of Object.entries(doc.paths))
      for (const [method, op] of Object.entries(ops)) {
        const hono = path.replace(/\{(\w+)\}/g, ':$1');
        const role =
          roles.get(`${method} ${hono}`) ?? [...roles].find(([k]) => k.startsWith('all ') && k.endsWith('/*') && hono.startsWith(k.slice(4, -1)))?.[1];
        if (role) op['x-patchtree-role'] = role;
      }
    return c.json(doc);
  });
  app.get('/docs', (c) => c.html(renderDocs(app.getOpenAPIDocument(docConfig) as unknown as Parameters<typeof renderDocs>[0])));

  app.notFound((c) => problemResponse(new AppError('not-found', `no route ${c.req.method} ${c.req.path}`), c.req.path));
  app.onError((err, c) => {
    if (err instanceof AppError) {
      if (err.code === 'unauthenticated') {
        const p = c.req.path;
        guard.failed(
          p.startsWith('/api/') ? 'api' : p === '/agent/v1/enroll' ? 'enrolment' : p.startsWith('/agent/') ? 'agent' : 'console',
          sourceOf(c),
          err.message,
        );
      }
      if (err.status >= 500) log.error({ code: err.code, detail: err.message }, 'request failed');
      const res = problemResponse(err, c.req.path);
      const www = c.res.headers.get('WWW-Authenticate');
      if (www) res.headers.set('WWW-Authenticate', www);
      if (err.code === 'import-busy') res.headers.set('Retry-After', '30');
      if (typeof err.extra.retryAfterSeconds === 'number') res.headers.set('Retry-After', String(err.extra.retryAfterSeconds));
      // The refused body may be half read: the connection must not be reused.
      if (err.code === 'payload-too-large') res.headers.set('Connection', 'close');
      return res;
    }
    if (err instanceof HTTPException) {
      // Hono's own validators (e.g. malformed JSON) speak HTTPException.
      const code =
        err.status === 413 ? 'payload-too-large' : err.status === 415 ? 'unsupported-media-type' : err.status === 401 ? 'unauthenticated' : 'bad-request';
      if (err.status < 500) return problemResponse(new AppError(code, err.message), c.req.path);
    }
    if (isDiskFull(err)) {
      log.error({ err, path: c.req.path }, "request failed: the node's disk is full");
      return problemResponse(
        new AppError('insufficient-storage', "the node's disk is full: nothing of this request was stored; free some space and send it again"),
        c.req.path,
      );
    }
    log.error({ err, path: c.req.path }, 'unhandled error');
    return problemResponse(new AppError('internal', 'an internal error occurred; see the node log'), c.req.path);
  });
  return app;
}
