import { createHash, randomUUID } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { mkdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { ReadableStream as WebReadableStream } from 'node:stream/web';
import busboy from 'busboy';
import { createRoute, z, type OpenAPIHono } from '@hono/zod-openapi';
import { AppError, isDiskFull } from '../../lib/errors.js';
import { getUpdate, listImports, listUpdates, refuseReplicated } from '../../catalog/queries.js';
import { Severities } from '../../catalog/severities.js';
import { requireRole, type AppEnv } from '../auth.js';
import type { AppDeps } from '../app.js';
import { errors, problem } from './common.js';

const csv = (name: string) =>
  z
    .string()
    .optional()
    .transform((s) =>
      s
        ? s
            .split(',')
            .map((x) => x.trim())
            .filter(Boolean)
        : undefined,
    )
    .openapi({ description: `${name}, comma separated` });
const bool = z
  .enum(['true', 'false'])
  .optional()
  .transform((v) => (v === undefined ? undefined : v === 'true'));

const updateItem = z
  .looseObject({
    id: z.string(),
    revision: z.number(),
    kb: z.string().nullable(),
    title: z.string(),
    product: z.string(),
    severity: z.string().nullable(),
    cves: z.array(z.string()),
    supersedes: z.array(z.string()),
    languages: z.array(z.string()),
  })
  .openapi('UpdateItem');

const importResult = z
  .looseObject({
    version: z.string(),
    added: z.number(),
    changed: z.number(),
    expired: z.number(),
    unchanged: z.number(),
    updates: z.number(),
    durationMs: z.number(),
  })
  .openapi('ImportResult');

const severityItem = z
  .object({
    id: z.number(),
    name: z.string(),
    rank: z.number(),
    origin: z.string().nullable().optional().describe("Node a replicated level comes from (read-only here); null for this node's own"),
  })
  .openapi('CustomSeverity');

/**
 * Streams a multipart upload: the `catalog` part to a temporary file (hashed on the
 * way, so the signature check needs no second read), the small `signature` part
 * into memory. Memory stays flat whatever the catalog's size.
 */
async function receiveUpload(req: Request, tmpDir: string, maxBytes: number): Promise<{ file: string; sha256: string; signature: Buffer }> {
  const type = req.headers.get('content-type') ?? '';
  if (!type.toLowerCase().startsWith('multipart/form-data'))
    throw new AppError('unsupported-media-type', 'send multipart/form-data with parts "catalog" and "signature"');
  if (!req.body) throw new AppError('bad-request', 'empty body');
  await mkdir(tmpDir, { recursive: true });
  const file = join(tmpDir, `import-${randomUUID()}.gz`);
  let sha256: string | null = null;
  let signature: Buffer | null = null;
  try {
    const bb = busboy({ headers: { 'content-type': type }, limits: { files: 4, fields: 4, parts: 4, fileSize: maxBytes } });
    const work: Promise<void>[] = [];
    let failure: AppError | null = null;
    const fail = (e: AppError) => {
      failure ??= e;
    };
    const seen = new Set<string>();
    bb.on('file', (name, stream) => {
      if (seen.has(name)) {
        stream.resume();
        return fail(new AppError('validation-failed', `the part "${name}" appears twice`));
      }
      seen.add(name);
      if (name === 'catalog') {
        const hash = createHash('sha256');
        stream.on('data', (chunk: Buffer) => hash.update(chunk));
        stream.on('limit', () => fail(new AppError('payload-too-large', `the catalog is larger than ${maxBytes} bytes`)));
        // A write that fails (a full disk) while the body is still arriving: the rest of the
        // part is read and dropped, so the request ends with the reason; nothing is left
        // rejected without a handler (that would end the process).
        const ws = createWriteStream(file);
        work.push(
          new Promise<void>((resolve) => {
            ws.on('finish', () => {
              sha256 = hash.digest('hex');
              resolve();
            });
            ws.on('error', (err) => {
              stream.unpipe(ws);
              stream.resume();
              fail(
                isDiskFull(err)
                  ? new AppError('insufficient-storage', `no room for the catalog on the node's disk (${err.message}); free some and send it again`)
                  : new AppError('internal', `storing the upload failed: ${err.message}`),
              );
              resolve();
            });
            stream.on('error', (err) => {
              ws.destroy();
              fail(new AppError('bad-request', `the catalog part could not be read: ${err.message}`));
              resolve();
            });
          }),
        );
        stream.pipe(ws);
      } else if (name === 'signature') {
        const chunks: Buffer[] = [];
        let size = 0;
        stream.on('data', (chunk: Buffer) => {
          size += chunk.length;
          if (size <= 64 * 1024) chunks.push(chunk);
          else fail(new AppError('payload-too-large', 'the signature part is larger than 64 KiB'));
        });
        work.push(
          new Promise<void>((res) =>
            stream
              .on('end', () => res(void (signature = Buffer.concat(chunks))))
              .on('error', (err) => res(fail(new AppError('bad-request', `the signature part could not be read: ${err.message}`)))),
          ),
        );
      } else {
        stream.resume();
        fail(new AppError('validation-failed', `unexpected part "${name}"; expected "catalog" and "signature"`));
      }
    });
    bb.on('field', (name) => fail(new AppError('validation-failed', `unexpected field "${name}"; send "catalog" and "signature" as files`)));
    bb.on('partsLimit', () => fail(new AppError('validation-failed', 'too many parts; expected "catalog" and "signature"')));
    bb.on('filesLimit', () => fail(new AppError('validation-failed', 'too many files; expected "catalog" and "signature"')));
    try {
      await pipeline(Readable.fromWeb(req.body as unknown as WebReadableStream), bb);
      await Promise.all(work);
    } catch (err) {
      throw failure ?? new AppError('bad-request', `malformed multipart body: ${(err as Error).message}`);
    }
    if (failure) throw failure;
    if (!sha256) throw new AppError('validation-failed', 'the "catalog" part is missing');
    if (!signature) throw new AppError('validation-failed', 'the "signature" part is missing');
    return { file, sha256, signature };
  } catch (err) {
    await rm(file, { force: true });
    throw err;
  }
}

export function catalogRoutes(app: OpenAPIHono<AppEnv>, deps: AppDeps): void {
  const { orm } = deps.db;
  const severities = new Severities(orm, { nodeId: deps.hierarchy.identity.nodeId, notify: () => deps.hierarchy.parent.notify() });

  // The upload is streamed by hand (busboy); the route is documented here and
  // handled below without a body validator, which would buffer the whole file.
  app.openAPIRegistry.registerPath({
    method: 'post',
    path: '/api/v1/catalog/imports',
    tags: ['catalog'],
    summary: 'Import a signed catalog (operator)',
    description:
      'multipart/form-data with parts `catalog` (the .ndjson.gz file) and `signature` (its .sig). The signature must verify against a trusted publisher key. The import is atomic: an invalid line rejects the whole file with 422 and `errors` (line, path, message).',
    request: {
      body: {
        content: {
          'multipart/form-data': {
            schema: z.object({
              catalog: z.string().openapi({ type: 'string', format: 'binary' }),
              signature: z.string().openapi({ type: 'string', format: 'binary' }),
            }),
          },
        },
      },
    },
    responses: {
      201: { description: 'Imported', content: { 'application/json': { schema: importResult } } },
      409: problem,
      413: problem,
      415: problem,
      422: problem,
      503: problem,
      ...errors,
    },
  });
  app.post('/api/v1/catalog/imports', requireRole('operator'), async (c) => {
    const upstream = deps.hierarchy.child;
    if (upstream)
      throw new AppError('conflict', `this node receives its catalog from its upstream ${upstream.address}; import at the root`, {
        origin: upstream.status().parentId,
      });
    const upload = await receiveUpload(c.req.raw, deps.tmpDir, deps.maxCatalogBytes);
    try {
      const result = await deps.importer.import({
        catalogFile: upload.file,
        signature: upload.signature,
        fileSha256: upload.sha256,
        importedBy: c.get('principal').name,
        source: 'upload',
      });
      return c.json(result, 201);
    } finally {
      await rm(upload.file, { force: true });
    }
  });

  app.openapi(
    createRoute({
      method: 'get',
      path: '/api/v1/catalog/imports',
      tags: ['catalog'],
      summary: 'Import history, newest first',
      request: { query: z.object({ limit: z.coerce.number().int().min(1).max(500).default(50), cursor: z.coerce.number().int().min(1).optional() }) },
      responses: {
        200: {
          description: 'Imports',
          content: { 'application/json': { schema: z.object({ items: z.array(z.looseObject({ version: z.string() })), nextCursor: z.string().nullable() }) } },
        },
        ...errors,
      },
    }),
    async (c) => {
      const q = c.req.valid('query');
      return c.json(await listImports(orm, q.limit, q.cursor), 200);
    },
  );

  app.openapi(
    createRoute({
      method: 'get',
      path: '/api/v1/updates',
      tags: ['catalog'],
      summary: 'Browse the catalog (newest release first, keyset-paginated)',
      request: {
        query: z.object({
          kb: z
            .string()
            .regex(/^(KB)?\d{4,8}$/i)
            .optional()
            .transform((s) => s?.replace(/^KB/i, '')),
          severity: csv('Vendor severities (Critical, Important, Moderate, Low)'),
          customSeverity: csv('Custom severity ids').transform((l) => l?.map(Number).filter(Number.isInteger)),
          vendor: z.string().max(200).optional(),
          product: z.string().max(300).optional(),
          classification: z.string().max(100).optional(),
          language: z
            .string()
            .regex(/^(neutral|[a-z]{2,3}(-[a-z0-9]{2,8})*)$/)
            .optional(),
          cve: z
            .string()
            .regex(/^CVE-\d{4}-\d{4,}$/)
            .optional(),
          releasedSince: z.iso.date().optional(),
          releasedBefore: z.iso.date().optional(),
          superseded: bool,
          expired: z
            .enum(['true', 'false', 'any'])
            .default('false')
            .transform((v) => (v === 'any' ? ('any' as const) : v === 'true')),
          q: z.string().min(1).max(200).optional(),
          limit: z.coerce.number().int().min(1).max(1000).default(100),
          cursor: z.string().max(500).optional(),
        }),
      },
      responses: {
        200: {
          description: 'A page of updates',
          content: { 'application/json': { schema: z.object({ items: z.array(updateItem), nextCursor: z.string().nullable() }) } },
        },
        ...errors,
      },
    }),
    async (c) => {
      const q = c.req.valid('query');
      return c.json(await listUpdates(orm, { ...q, expired: q.expired }), 200);
    },
  );

  app.openapi(
    createRoute({
      method: 'get',
      path: '/api/v1/updates/{id}',
      tags: ['catalog'],
      summary: 'One update with files, rules and its supersedence chain both ways',
      request: { params: z.object({ id: z.string().min(1).max(100) }) },
      responses: { 200: { description: 'The update', content: { 'application/json': { schema: updateItem } } }, ...errors },
    }),
    async (c) => c.json(await getUpdate(orm, c.req.valid('param').id), 200),
  );

  app.openapi(
    createRoute({
      method: 'put',
      path: '/api/v1/updates/{id}/custom-severity',
      tags: ['severities'],
      summary: 'Assign a custom severity to an update, or clear it with null (operator)',
      middleware: [requireRole('operator')] as const,
      request: {
        params: z.object({ id: z.string().min(1).max(100) }),
        body: { content: { 'application/json': { schema: z.strictObject({ severityId: z.number().int().nullable() }) } }, required: true },
      },
      responses: { 200: { description: 'Assigned', content: { 'application/json': { schema: z.object({ updated: z.number() }) } } }, ...errors },
    }),
    async (c) => {
      const id = c.req.valid('param').id;
      await refuseReplicated(orm, deps.hierarchy.identity.nodeId, [id]);
      return c.json(await severities.assign([id], c.req.valid('json').severityId), 200);
    },
  );

  app.openapi(
    createRoute({
      method: 'post',
      path: '/api/v1/severities/assign',
      tags: ['severities'],
      summary: 'Assign a custom severity to many updates at once (operator)',
      middleware: [requireRole('operator')] as const,
      request: {
        body: {
          content: {
            'application/json': {
              schema: z.strictObject({ updates: z.array(z.string().min(1).max(100)).min(1).max(10000), severityId: z.number().int().nullable() }),
            },
          },
          required: true,
        },
      },
      responses: { 200: { description: 'Assigned', content: { 'application/json': { schema: z.object({ updated: z.number() }) } } }, ...errors },
    }),
    async (c) => {
      const b = c.req.valid('json');
      await refuseReplicated(orm, deps.hierarchy.identity.nodeId, b.updates);
      return c.json(await severities.assign([...new Set(b.updates)], b.severityId), 200);
    },
  );

  app.openapi(
    createRoute({
      method: 'get',
      path: '/api/v1/severities',
      tags: ['severities'],
      summary: 'Custom severity levels, in order (rank 0 first)',
      responses: {
        200: { description: 'Levels', content: { 'application/json': { schema: z.object({ items: z.array(severityItem.extend({ updates: z.number() })) }) } } },
        ...errors,
      },
    }),
    async (c) => c.json({ items: await severities.list() }, 200),
  );

  const name = z.string().trim().min(1).max(60);
  app.openapi(
    createRoute({
      method: 'post',
      path: '/api/v1/severities',
      tags: ['severities'],
      summary: 'Create a custom severity level (admin); appended last unless rank is given',
      middleware: [requireRole('admin')] as const,
      request: { body: { content: { 'application/json': { schema: z.strictObject({ name, rank: z.number().int().min(0).optional() }) } }, required: true } },
      responses: { 201: { description: 'Created', content: { 'application/json': { schema: severityItem } } }, 409: problem, ...errors },
    }),
    async (c) => {
      const b = c.req.valid('json');
      const row = await severities.create(b.name, b.rank);
      return c.json({ id: row.id, name: row.name, rank: row.rank }, 201);
    },
  );

  app.openapi(
    createRoute({
      method: 'put',
      path: '/api/v1/severities/order',
      tags: ['severities'],
      summary: 'Order all custom severity levels: the first id becomes rank 0 (admin)',
      middleware: [requireRole('admin')] as const,
      request: { body: { content: { 'application/json': { schema: z.strictObject({ ids: z.array(z.number().int()).max(1000) }) } }, required: true } },
      responses: {
        200: {
          description: 'New order',
          content: { 'application/json': { schema: z.object({ items: z.array(severityItem.extend({ updates: z.number() })) }) } },
        },
        ...errors,
      },
    }),
    async (c) => c.json({ items: await severities.order(c.req.valid('json').ids) }, 200),
  );

  const idParam = z.object({ id: z.coerce.number().int().min(1) });
  app.openapi(
    createRoute({
      method: 'patch',
      path: '/api/v1/severities/{id}',
      tags: ['severities'],
      summary: 'Rename or re-rank a custom severity level (admin)',
      middleware: [requireRole('admin')] as const,
      request: {
        params: idParam,
        body: {
          content: { 'application/json': { schema: z.strictObject({ name: name.optional(), rank: z.number().int().min(0).optional() }) } },
          required: true,
        },
      },
      responses: { 200: { description: 'Updated', content: { 'application/json': { schema: severityItem } } }, 409: problem, ...errors },
    }),
    async (c) => {
      const row = await severities.update(c.req.valid('param').id, c.req.valid('json'));
      return c.json({ id: row.id, name: row.name, rank: row.rank }, 200);
    },
  );

  app.openapi(
    createRoute({
      method: 'delete',
      path: '/api/v1/severities/{id}',
      tags: ['severities'],
      summary: 'Delete a custom severity level; its updates lose it (admin)',
      middleware: [requireRole('admin')] as const,
      request: { params: idParam },
      responses: { 204: { description: 'Deleted' }, ...errors },
    }),
    async (c) => {
      await severities.delete(c.req.valid('param').id);
      return c.body(null, 204);
    },
  );
}
