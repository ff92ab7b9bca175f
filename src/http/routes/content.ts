import { createReadStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { ServerResponse } from 'node:http';
import { RESPONSE_ALREADY_SENT } from '@hono/node-server/utils/response';
import { createRoute, z, type OpenAPIHono } from '@hono/zod-openapi';
import type { Context, MiddlewareHandler } from 'hono';
import { AppError } from '../../lib/errors.js';
import { contentSettingsSchema } from '../../content/settings.js';
import { bearerAuth, requireRole, type AppEnv } from '../auth.js';
import type { AppDeps } from '../app.js';
import { bearerToken } from '../../auth/tokens.js';
import { AGENT_SECRET_PREFIX } from '../../delivery/agents.js';
import { sha256Schema } from '../../agent-api/checkin.js';
import { agentOf } from './agent-v1.js';
import { errors, problem } from './common.js';

const STATES = ['pending', 'downloading', 'verified', 'failed'] as const;

const fileItem = z
  .looseObject({ sha256: z.string(), size: z.number(), state: z.enum(STATES), bytesDone: z.number(), attempts: z.number(), lastError: z.string().nullable() })
  .openapi('ContentFile');

/** Parses a single `bytes=` range against a size; null = whole file, 'unsatisfiable' = 416. */
export function parseRange(header: string | undefined, size: number): { start: number; end: number } | null | 'unsatisfiable' {
  if (!header) return null;
  const m = /^bytes=(\d*)-(\d*)$/.exec(header.trim());
  if (!m || (m[1] === '' && m[2] === '')) return null; // malformed or multi-range: serve the whole file
  let start: number;
  let end: number;
  if (m[1] === '') {
    const suffix = Number(m[2]);
    if (suffix === 0) return 'unsatisfiable';
    start = Math.max(0, size - suffix);
    end = size - 1;
  } else {
    start = Number(m[1]);
    end = m[2] === '' ? size - 1 : Math.min(Number(m[2]), size - 1);
  }
  if (start >= size || start > end) return 'unsatisfiable';
  return { start, end };
}

/**
 * Streams a verified file with Range (one range), ETag (its sha256) and
 * Content-Length. Read from disk as the client reads: memory does not grow with the
 * file or with the number of readers.
 */
async function serveFile(c: Context<AppEnv>, deps: AppDeps): Promise<Response> {
  const sha256 = c.req.param('sha256') ?? '';
  if (!/^[0-9a-f]{64}$/.test(sha256)) throw new AppError('bad-request', 'expected a lowercase hex sha256');
  const file = await deps.content.service.verifiedFile(sha256);
  if (!file) throw new AppError('not-found', `file ${sha256} is not available on this node`);
  const { path } = file;
  let size: number;
  try {
    size = (await stat(path)).size;
  } catch {
    throw new AppError('not-found', `file ${sha256} is missing from the store; run a verification`);
  }
  const etag = `"${sha256}"`;
  const headers: Record<string, string> = {
    'accept-ranges': 'bytes',
    etag,
    'content-type': 'application/octet-stream',
    'cache-control': 'private, max-age=31536000, immutable',
  };
  if (c.req.header('if-none-match') === etag) return new Response(null, { status: 304, headers });
  const ifRange = c.req.header('if-range');
  const range = ifRange && ifRange !== etag ? null : parseRange(c.req.header('range'), size);
  if (range === 'unsatisfiable') return new Response(null, { status: 416, headers: { ...headers, 'content-range': `bytes */${size}` } });
  const start = range?.start ?? 0;
  const end = range?.end ?? size - 1;
  const length = size === 0 ? 0 : end - start + 1;
  const status = range ? 206 : 200;
  if (range) headers['content-range'] = `bytes ${start}-${end}/${size}`;
  headers['content-length'] = String(length);
  if (c.req.method === 'HEAD' || length === 0) return new Response(null, { status, headers });
  const stream = createReadStream(path, { start, end, highWaterMark: 64 * 1024 });
  const outgoing = (c.env as { outgoing?: ServerResponse } | undefined)?.outgoing;
  if (outgoing) {
    // On Node, pipe the file straight into the socket: backpressure end to end and
    // no web-stream copy in between, the cheapest path per concurrent reader.
    outgoing.writeHead(status, headers);
    pipeline(stream, outgoing).catch(() => stream.destroy());
    return RESPONSE_ALREADY_SENT;
  }
  return new Response(Readable.toWeb(stream) as unknown as ReadableStream, { status, headers });
}

export function contentRoutes(app: OpenAPIHono<AppEnv>, deps: AppDeps): void {
  const { content } = deps;

  // Agents download with their secret; an admin token works too (tools, tests).
  const admin = [bearerAuth(deps.tokens), requireRole('admin')] as const;
  const filesAuth: MiddlewareHandler<AppEnv> = async (c, next) => {
    if (bearerToken(c.req.header('authorization'))?.startsWith(AGENT_SECRET_PREFIX)) {
      await agentOf(c, deps.delivery);
      return next();
    }
    await admin[0](c, async () => void (await admin[1](c, next)));
  };
  app.use('/agent/v1/files/*', Object.assign(filesAuth, { role: admin[1].role }));
  app.openAPIRegistry.registerPath({
    method: 'get',
    path: '/agent/v1/files/{sha256}',
    tags: ['content'],
    security: [{ agent: [] }, { bearer: [] }],
    summary: 'Download a verified update file (Range, ETag, Content-Length)',
    request: { params: z.object({ sha256: sha256Schema }) },
    responses: {
      200: { description: 'The file' },
      206: { description: 'A byte range of it' },
      304: { description: 'Not modified' },
      416: { description: 'Range not satisfiable' },
      ...errors,
    },
  });
  app.on(['GET', 'HEAD'], '/agent/v1/files/:sha256', (c) => serveFile(c, deps));

  app.openapi(
    createRoute({
      method: 'get',
      path: '/api/v1/content',
      tags: ['content'],
      summary: 'Content store totals: files, bytes, per-state counts, progress, free space, downloader state',
      responses: {
        200: {
          description: 'Totals',
          content: {
            'application/json': {
              schema: z.looseObject({
                files: z.number(),
                bytes: z.number(),
                verified: z.number(),
                failed: z.number(),
                pending: z.number(),
                freeBytes: z.number(),
              }),
            },
          },
        },
        ...errors,
      },
    }),
    async (c) => c.json(await content.service.summary(), 200),
  );

  app.openapi(
    createRoute({
      method: 'get',
      path: '/api/v1/content/files',
      tags: ['content'],
      summary: 'Files the node tracks, by state, or the files of one update',
      request: {
        query: z.object({
          state: z.enum(STATES).optional(),
          update: z.string().min(1).max(100).optional(),
          limit: z.coerce.number().int().min(1).max(1000).default(100),
          cursor: z
            .string()
            .regex(/^[0-9a-f]{64}$/)
            .optional(),
        }),
      },
      responses: {
        200: { description: 'Files', content: { 'application/json': { schema: z.object({ items: z.array(fileItem), nextCursor: z.string().nullable() }) } } },
        ...errors,
      },
    }),
    async (c) => c.json(await content.service.listFiles(c.req.valid('query')), 200),
  );

  app.openapi(
    createRoute({
      method: 'post',
      path: '/api/v1/content/downloads',
      tags: ['content'],
      summary: 'Mark updates for download and/or retry failed files (operator)',
      middleware: [requireRole('operator')] as const,
      request: {
        body: {
          content: {
            'application/json': {
              schema: z
                .strictObject({ updates: z.array(z.string().min(1).max(100)).max(10000).default([]), retryFailed: z.boolean().default(false) })
                .refine((b) => b.updates.length > 0 || b.retryFailed, { message: 'give updates, or retryFailed: true' }),
            },
          },
          required: true,
        },
      },
      responses: {
        202: {
          description: 'Accepted: the downloader works in the background',
          content: { 'application/json': { schema: z.object({ marked: z.number(), retried: z.number(), added: z.number() }) } },
        },
        ...errors,
      },
    }),
    async (c) => {
      const b = c.req.valid('json');
      return c.json(await content.service.requestDownloads([...new Set(b.updates)], b.retryFailed, c.get('principal').name), 202);
    },
  );

  app.openapi(
    createRoute({
      method: 'delete',
      path: '/api/v1/content/downloads/{updateId}',
      tags: ['content'],
      summary: 'Unmark an update for download (operator); its files become garbage once nothing else needs them',
      middleware: [requireRole('operator')] as const,
      request: { params: z.object({ updateId: z.string().min(1).max(100) }) },
      responses: { 204: { description: 'Unmarked' }, ...errors },
    }),
    async (c) => {
      await content.service.unmark(c.req.valid('param').updateId);
      return c.body(null, 204);
    },
  );

  app.openapi(
    createRoute({
      method: 'post',
      path: '/api/v1/content/verify',
      tags: ['content'],
      summary: 'Re-hash every stored file in the background; corrupt or missing ones are downloaded again (operator)',
      middleware: [requireRole('operator')] as const,
      responses: {
        202: {
          description: 'Started; progress in GET /api/v1/content (verify)',
          content: { 'application/json': { schema: z.looseObject({ id: z.number(), state: z.string() }) } },
        },
        409: problem,
        ...errors,
      },
    }),
    async (c) => c.json(content.service.startVerify(), 202),
  );

  app.openapi(
    createRoute({
      method: 'post',
      path: '/api/v1/content/gc',
      tags: ['content'],
      summary: 'Garbage-collect files no longer needed (admin); a dry run (the default) shows what and how much',
      middleware: [requireRole('admin')] as const,
      request: { body: { content: { 'application/json': { schema: z.strictObject({ dryRun: z.boolean().default(true) }) } }, required: false } },
      responses: {
        200: {
          description: 'What was (or would be) removed',
          content: { 'application/json': { schema: z.looseObject({ dryRun: z.boolean(), count: z.number(), bytes: z.number() }) } },
        },
        ...errors,
      },
    }),
    async (c) => {
      return c.json(await content.service.gc(c.req.valid('json').dryRun ?? true), 200);
    },
  );

  app.openapi(
    createRoute({
      method: 'get',
      path: '/api/v1/settings/content',
      tags: ['settings'],
      summary: 'Download settings: what is needed, concurrency, bytes/s limits, free-space reserve, retries, timeouts',
      responses: { 200: { description: 'Settings', content: { 'application/json': { schema: contentSettingsSchema } } }, ...errors },
    }),
    async (c) => c.json(await content.settings(), 200),
  );

  app.openapi(
    createRoute({
      method: 'put',
      path: '/api/v1/settings/content',
      tags: ['settings'],
      summary: 'Change download settings (admin); fields left out keep their value',
      middleware: [requireRole('admin')] as const,
      request: { body: { content: { 'application/json': { schema: contentSettingsSchema.partial() } }, required: true } },
      responses: { 200: { description: 'Settings', content: { 'application/json': { schema: contentSettingsSchema } } }, ...errors },
    }),
    async (c) => c.json(await content.updateSettings(c.req.valid('json'), c.get('principal').name), 200),
  );
}
