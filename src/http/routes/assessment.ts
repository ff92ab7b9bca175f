import { createRoute, z, type OpenAPIHono } from '@hono/zod-openapi';
import { bodyLimit } from 'hono/body-limit';
import { AppError } from '../../lib/errors.js';
import { reportResultSchema, reportSchema } from '../../agent-api/inventory.js';
import type { RuleLine } from '../../agent-api/checkin.js';
import { ASSESSMENT_SETTING, assessmentSettingsSchema } from '../../assessment/settings.js';
import { bearerToken } from '../../auth/tokens.js';
import { requireRole, type AppEnv } from '../auth.js';
import type { AppDeps } from '../app.js';
import { errors, problem } from './common.js';
import { AGENT_SECRET_PREFIX } from '../../delivery/agents.js';
import { enrollmentTokenRoutes } from './enrollment-tokens.js';
import { computerRoutes } from './computers.js';

/** Either credential: an enrolled agent's secret, or an enrolment token (simulations, older agents). */
const AGENT_OR_ENROLLMENT: Record<string, string[]>[] = [{ agent: [] }, { enrollment: [] }];

/** Full inventories with many files or registry values are larger than admin JSON. */
export const INVENTORY_BODY_LIMIT = 8 * 1024 * 1024;

const bearer = (header: string | undefined): string => {
  const token = bearerToken(header);
  if (!token) throw new AppError('unauthenticated', 'send Authorization: Bearer <agent secret> (or <enrolment token>)');
  return token;
};

export function assessmentRoutes(app: OpenAPIHono<AppEnv>, deps: AppDeps): void {
  const a = deps.assessment;

  /* ---- agents ---- */

  // Who is reporting is known before a byte of the body is read: an unauthenticated request costs nothing.
  const reporter = new WeakMap<object, { agentId: string } | { tokenId: string }>(); // by context: a body limit replaces c.req.raw
  app.use('/agent/v1/inventory', async (c, next) => {
    if (c.req.method !== 'POST') return next();
    const secret = bearer(c.req.header('authorization'));
    reporter.set(
      c,
      secret.startsWith(AGENT_SECRET_PREFIX)
        ? { agentId: (await deps.delivery.agents.authenticate(secret)).agentId }
        : { tokenId: (await a.enrollment.verify(secret)).id },
    );
    return next();
  });
  app.use(
    '/agent/v1/inventory',
    bodyLimit({
      maxSize: INVENTORY_BODY_LIMIT,
      onError: () => {
        throw new AppError('payload-too-large', `inventories are limited to ${INVENTORY_BODY_LIMIT} bytes`);
      },
    }),
  );
  app.openapi(
    createRoute({
      method: 'post',
      path: '/agent/v1/inventory',
      tags: ['agents'],
      summary: "Report a computer's inventory, full or as a delta against its last report; answered once it is assessed",
      description:
        'Authorization: Bearer <agent secret> (agentKey must be the agent id) or <enrolment token>. A delta names the scanId it applies to; if that is not the last report, 409 asks for a full inventory.',
      security: AGENT_OR_ENROLLMENT,
      request: { body: { content: { 'application/json': { schema: reportSchema } }, required: true } },
      responses: {
        200: {
          description: 'Stored and assessed',
          content: {
            'application/json': { schema: reportResultSchema },
          },
        },
        409: problem,
        413: problem,
        ...errors,
      },
    }),
    async (c) => {
      const who = reporter.get(c);
      if (!who) throw new AppError('unauthenticated', 'send Authorization: Bearer <agent secret or enrolment token>');
      const body = c.req.valid('json');
      let tokenId: string | undefined;
      if ('agentId' in who) {
        // An enrolled agent reports as itself only.
        if (body.agentKey !== who.agentId) throw new AppError('forbidden', `an agent reports with agentKey = its agentId (${who.agentId})`);
      } else {
        // An enrolment token reports for computers without an agent of their own (labs, the simulator), never for an enrolled agent's.
        if (await deps.delivery.agents.isAgent(body.agentKey))
          throw new AppError('forbidden', `computer ${body.agentKey} belongs to an enrolled agent, which reports with its own secret; nothing was changed`);
        tokenId = who.tokenId;
      }
      const r = await a.assessor.report(body, Date.now(), tokenId);
      const s = await a.settings();
      return c.json({ ...r, scanIntervalMinutes: s.scanIntervalMinutes, nextScanAt: new Date(Date.now() + s.scanIntervalMinutes * 60_000).toISOString() }, 200);
    },
  );

  app.openAPIRegistry.registerPath({
    method: 'get',
    path: '/agent/v1/rules',
    tags: ['agents'],
    summary:
      "The live catalog's applicability rules as NDJSON (id, kb, product, severity, applicability, installed, supersedes), streamed; ETag, If-None-Match → 304",
    security: AGENT_OR_ENROLLMENT,
    responses: { 200: { description: 'One update per line', content: { 'application/x-ndjson': { schema: z.string() } } }, ...errors },
  });
  app.get('/agent/v1/rules', async (c) => {
    const secret = bearer(c.req.header('authorization'));
    if (secret.startsWith(AGENT_SECRET_PREFIX)) await deps.delivery.agents.authenticate(secret);
    else await a.enrollment.verify(secret);
    // Any change-log entry may change the rules: its head is the validator.
    const etag = `"rules-${await a.assessor.head()}"`;
    if (c.req.header('if-none-match') === etag) return new Response(null, { status: 304, headers: { etag } });
    let after = '';
    const enc = new TextEncoder();
    const body = new ReadableStream<Uint8Array>({
      async pull(ctl) {
        const rows = await a.rulesPage(after, 1000);
        if (!rows.length) return ctl.close();
        after = rows[rows.length - 1]!.id;
        const text = rows
          .map((r) => {
            const line: RuleLine = {
              id: r.id,
              kb: r.kb,
              product: r.product,
              severity: r.severity,
              applicability: JSON.parse(r.applicability),
              installed: JSON.parse(r.installed),
              supersedes: JSON.parse(r.supersedes),
            };
            return JSON.stringify(line);
          })
          .join('\n');
        ctl.enqueue(enc.encode(`${text}\n`));
      },
    });
    return new Response(body, { headers: { 'content-type': 'application/x-ndjson', etag } });
  });

  enrollmentTokenRoutes(app, deps);

  /* ---- settings and status ---- */

  app.openapi(
    createRoute({
      method: 'get',
      path: '/api/v1/settings/assessment',
      tags: ['settings'],
      summary: 'The system assessment scan interval, and where it is set',
      responses: {
        200: { description: 'Settings', content: { 'application/json': { schema: assessmentSettingsSchema.extend({ origin: z.string().nullable() }) } } },
        ...errors,
      },
    }),
    async (c) => c.json({ ...(await a.settings()), origin: await deps.settings.origin(ASSESSMENT_SETTING) }, 200),
  );

  app.openapi(
    createRoute({
      method: 'put',
      path: '/api/v1/settings/assessment',
      tags: ['settings'],
      summary: 'Set the scan interval (admin); replicated to the subtree, read-only (409) on a node that receives it',
      middleware: [requireRole('admin')] as const,
      request: { body: { content: { 'application/json': { schema: assessmentSettingsSchema } }, required: true } },
      responses: { 200: { description: 'Settings', content: { 'application/json': { schema: assessmentSettingsSchema } } }, 409: problem, ...errors },
    }),
    async (c) => {
      const b = c.req.valid('json');
      await deps.settings.put(ASSESSMENT_SETTING, b, c.get('principal').name);
      return c.json(await a.settings(), 200);
    },
  );

  app.openapi(
    createRoute({
      method: 'get',
      path: '/api/v1/assessment',
      tags: ['assessment'],
      summary: 'Assessment status: catalog indexed, change-log cursor and lag, running work, last run',
      responses: {
        200: {
          description: 'Status',
          content: {
            'application/json': {
              schema: z.looseObject({ updates: z.number(), indexed: z.boolean(), cursor: z.number(), head: z.number(), busy: z.string().nullable() }),
            },
          },
        },
        ...errors,
      },
    }),
    async (c) => c.json(await a.status(), 200),
  );

  app.openapi(
    createRoute({
      method: 'post',
      path: '/api/v1/assessment/run',
      tags: ['assessment'],
      summary: 'Reassess every computer against the catalog now (admin); answered when done',
      middleware: [requireRole('admin')] as const,
      responses: {
        200: {
          description: 'Done',
          content: {
            'application/json': {
              schema: z.object({ kind: z.string(), updates: z.number(), computers: z.number(), durationMs: z.number(), finishedAt: z.string() }),
            },
          },
        },
        ...errors,
      },
    }),
    async (c) => c.json(await a.assessor.full(), 200),
  );

  computerRoutes(app, deps);
}
