import { createRoute, type OpenAPIHono } from '@hono/zod-openapi';
import type { IncomingMessage } from 'node:http';
import type { Context } from 'hono';
import { bodyLimit } from 'hono/body-limit';
import { AppError } from '../../lib/errors.js';
import { bearerToken } from '../../auth/tokens.js';
import type { AppEnv } from '../auth.js';
import { validationError, type AppDeps } from '../app.js';
import { errors, problem } from './common.js';
import { eventRefusals, eventsBodySchema, eventsRefusedSchema, eventsStoredSchema, EVENT_LIMITS } from '../../agent-api/events.js';
import { etagMatches } from '../../delivery/engine.js';
import { assignmentsSchema } from '../../agent-api/assignments.js';
import { configSchema, retriesClearedSchema, type AgentConfig } from '../../agent-api/checkin.js';
import { enrolRequestSchema, enrolResponseSchema } from '../../agent-api/enrolment.js';
import { sourceOf, type AuthGuard } from '../guard.js';
import type { AgentPrincipal } from '../../delivery/agents.js';
import type { DeliveryService } from '../../delivery/index.js';

export const ENROLL_BODY_LIMIT = 16 * 1024;

const limit = (maxSize: number, what: string) =>
  bodyLimit({
    maxSize,
    onError: () => {
      throw new AppError('payload-too-large', `${what} are limited to ${maxSize} bytes`);
    },
  });

/** The calling agent (Authorization: Bearer <agent secret>); 401 otherwise. */
export async function agentOf(
  c: { req: { header(name: string): string | undefined }; header(name: string, value: string): void },
  d: DeliveryService,
): Promise<AgentPrincipal> {
  const secret = bearerToken(c.req.header('authorization'));
  if (!secret) {
    c.header('WWW-Authenticate', 'Bearer realm="patchtree-agent"');
    throw new AppError('unauthenticated', 'send Authorization: Bearer <agent secret> (from POST /agent/v1/enroll)');
  }
  return d.agents.authenticate(secret);
}

/**
 * A JSON body of at most `maxBytes`, read from Node's IncomingMessage when the app
 * runs on @hono/node-server (else through the web Request): 415 unless JSON, 413
 * past the limit, 400 for malformed JSON.
 */
async function readJson(c: Context, maxBytes: number, what: string): Promise<unknown> {
  if (!/^application\/([\w.+-]+\+)?json\b/i.test(c.req.header('content-type') ?? ''))
    throw new AppError('unsupported-media-type', 'send Content-Type: application/json');
  const tooLarge = () => new AppError('payload-too-large', `${what} are limited to ${maxBytes} bytes`);
  if (Number(c.req.header('content-length') ?? 0) > maxBytes) throw tooLarge();
  const incoming = (c.env as { incoming?: IncomingMessage } | undefined)?.incoming;
  let text: string;
  if (incoming) {
    const chunks: Buffer[] = [];
    let size = 0;
    for await (const chunk of incoming as AsyncIterable<Buffer>) {
      size += chunk.length;
      if (size > maxBytes) {
        incoming.resume(); // let the rest drain; the answer is a 413
        throw tooLarge();
      }
      chunks.push(chunk);
    }
    text = Buffer.concat(chunks).toString('utf8');
  } else {
    text = await c.req.text();
    if (Buffer.byteLength(text) > maxBytes) throw tooLarge();
  }
  try {
    return JSON.parse(text) as unknown;
  } catch (err) {
    throw new AppError('bad-request', `the body is not JSON: ${(err as Error).message}`);
  }
}

/** The agent API (/agent/v1): enrolment, configuration, assignments, status events, clearing retries. */
export function agentApiRoutes(app: OpenAPIHono<AppEnv>, deps: AppDeps, guard: AuthGuard): void {
  const d = deps.delivery;

  // An address that keeps guessing enrolment tokens is stopped before its body is read.
  app.use('/agent/v1/enroll', async (c, next) => {
    const wait = guard.enrolBlocked(sourceOf(c));
    if (wait) throw new AppError('too-many-requests', `too many failed enrolments from this address; try again in ${wait} s`, { retryAfterSeconds: wait });
    return next();
  });
  app.use('/agent/v1/enroll', limit(ENROLL_BODY_LIMIT, 'enrolment requests'));
  app.openapi(
    createRoute({
      method: 'post',
      path: '/agent/v1/enroll',
      tags: ['agents'],
      summary: 'Enrol an agent with an enrolment token: returns its id and secret (shown once)',
      description:
        'Counts one use of the enrolment token. Every later agent call sends Authorization: Bearer <secret>; the agent reports its inventory with agentKey = agentId.',
      request: {
        body: {
          content: { 'application/json': { schema: enrolRequestSchema } },
          required: true,
        },
      },
      responses: { 201: { description: 'Enrolled', content: { 'application/json': { schema: enrolResponseSchema } } }, 413: problem, ...errors },
    }),
    async (c) => {
      const b = c.req.valid('json');
      try {
        return c.json(await d.agents.enroll(b.enrollmentToken, b.name), 201);
      } catch (err) {
        if (err instanceof AppError && (err.code === 'unauthenticated' || err.code === 'forbidden')) guard.enrolFailed(sourceOf(c));
        throw err;
      }
    },
  );

  app.openAPIRegistry.registerPath({
    method: 'get',
    path: '/agent/v1/config',
    tags: ['agents'],
    summary: "The agent's configuration: scan interval, installation settings (windows, restart, notification, retry ceilings), node time",
    security: [{ agent: [] }],
    responses: { 200: { description: 'Configuration', content: { 'application/json': { schema: configSchema } } }, ...errors },
  });
  app.get('/agent/v1/config', async (c) => {
    const agent = await agentOf(c, d);
    const s = await deps.assessment.settings();
    const config: AgentConfig = {
      agentId: agent.agentId,
      computerId: agent.computerId,
      scanIntervalMinutes: s.scanIntervalMinutes,
      installation: await d.installation(),
      nodeTime: new Date().toISOString(),
    };
    return c.json(config);
  });

  app.openAPIRegistry.registerPath({
    method: 'get',
    path: '/agent/v1/assignments',
    tags: ['agents'],
    summary: 'What this computer should install now, with an ETag: send If-None-Match, and an unchanged answer is a 304 with no body',
    security: [{ agent: [] }],
    responses: {
      200: {
        description: 'Assignments',
        content: {
          'application/json': {
            schema: assignmentsSchema,
          },
        },
      },
      304: { description: 'Unchanged since the ETag sent in If-None-Match' },
      ...errors,
    },
  });
  app.get('/agent/v1/assignments', async (c) => {
    const agent = await agentOf(c, d);
    const a = await d.engine.assignments(agent.computerId);
    const headers = { etag: a.etag, 'cache-control': 'private, no-cache' };
    if (etagMatches(c.req.header('if-none-match'), a.etag)) return new Response(null, { status: 304, headers });
    return new Response(a.body, { status: 200, headers: { ...headers, 'content-type': 'application/json' } });
  });

  // The busiest POST of the node: the body is read straight from Node's request
  // (no web stream), then parsed and validated like any other route's.
  app.openAPIRegistry.registerPath({
    method: 'post',
    path: '/agent/v1/events',
    tags: ['agents'],
    summary: `Status events, batched (at most ${EVENT_LIMITS.batch}); each id is counted once, so a retried batch is harmless`,
    security: [{ agent: [] }],
    request: { body: { content: { 'application/json': { schema: eventsBodySchema } }, required: true } },
    description:
      'A batch is stored whole or not at all. A 400 lists in `refused` each event that can never be accepted as it is (its index in the batch and why): ' +
      'the agent drops those and sends the others again. A 400 without such a list, a 409 (no inventory reported yet) or a 413 refuse the batch as a whole.',
    responses: {
      200: { description: 'Stored', content: { 'application/json': { schema: eventsStoredSchema } } },
      ...errors,
      400: { description: 'Refused; nothing was stored', content: { 'application/problem+json': { schema: eventsRefusedSchema } } },
      409: problem,
      413: problem,
      415: problem,
    },
  });
  app.post('/agent/v1/events', async (c) => {
    const agent = await agentOf(c, d);
    const raw = await readJson(c, EVENT_LIMITS.bodyBytes, 'event batches');
    const parsed = eventsBodySchema.safeParse(raw);
    if (!parsed.success) {
      const v = validationError(parsed.error, 'body');
      throw new AppError('validation-failed', v.message, { ...v.extra, refused: eventRefusals(raw) });
    }
    if (agent.computerId === null) throw new AppError('conflict', 'report an inventory (POST /agent/v1/inventory) before sending events');
    return c.json(await d.engine.events(agent.computerId, parsed.data.events), 200);
  });

  app.openAPIRegistry.registerPath({
    method: 'post',
    path: '/agent/v1/retries/clear',
    tags: ['agents'],
    summary: "Clear this computer's failed-download and failed-install counts (a user at the computer: `patchtree agent clear-retries`)",
    security: [{ agent: [] }],
    responses: { 200: { description: 'Cleared', content: { 'application/json': { schema: retriesClearedSchema } } }, 409: problem, ...errors },
  });
  app.post('/agent/v1/retries/clear', async (c) => {
    const agent = await agentOf(c, d);
    if (agent.computerId === null) return c.json({ cleared: 0 }, 200);
    return c.json(await d.engine.clearRetries(agent.computerId, null), 200);
  });
}
