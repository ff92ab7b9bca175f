import { createRoute, z, type OpenAPIHono } from '@hono/zod-openapi';
import { AppError } from '../../lib/errors.js';
import { PROTOCOL_VERSION } from '../../replication/protocol.js';
import { replicationRulesSchema } from '../../replication/rules.js';
import { requireRole, type AppEnv } from '../auth.js';
import type { AppDeps } from '../app.js';
import { deleteById, errors, problem } from './common.js';
import { pinnedToken } from '../../tls/pin.js';

export function hierarchyRoutes(app: OpenAPIHono<AppEnv>, deps: AppDeps): void {
  const h = deps.hierarchy;

  app.openapi(
    createRoute({
      method: 'post',
      path: '/api/v1/hierarchy/join-tokens',
      tags: ['hierarchy'],
      summary: 'Create a one-time, expiring token a child node joins with (admin)',
      middleware: [requireRole('admin')] as const,
      request: {
        body: {
          content: {
            'application/json': {
              schema: z.strictObject({
                ttlSeconds: z
                  .number()
                  .int()
                  .min(60)
                  .max(30 * 86400)
                  .default(86400),
              }),
            },
          },
          required: false,
        },
      },
      responses: {
        201: { description: 'Created', content: { 'application/json': { schema: z.object({ token: z.string(), expiresAt: z.string() }) } } },
        ...errors,
      },
    }),
    async (c) => {
      const made = await h.parent.createJoinToken(c.req.valid('json').ttlSeconds ?? 86400, c.get('principal').name);
      // With this node's own CA: the token carries its SHA-256, so the child verifies this node and nothing else.
      return c.json({ ...made, token: pinnedToken(made.token, h.parent.certificates ? deps.tls.pin : null) }, 201);
    },
  );

  app.openapi(
    createRoute({
      method: 'get',
      path: '/api/v1/hierarchy',
      tags: ['hierarchy'],
      summary: 'This node, its upstream (connection, cursor, lag) and its children',
      responses: {
        200: {
          description: 'The hierarchy as this node sees it',
          content: {
            'application/json': {
              schema: z.object({
                node: z.looseObject({ id: z.string(), name: z.string(), role: z.string() }),
                upstream: z.looseObject({ connected: z.boolean(), cursor: z.number() }).nullable(),
                children: z.array(
                  z.looseObject({
                    id: z.string(),
                    name: z.string(),
                    connected: z.boolean(),
                    cursor: z.number(),
                    languages: z.array(z.string()),
                    resyncOwed: z.boolean().describe('A complete resync is owed to the child until it acknowledges its end'),
                  }),
                ),
              }),
            },
          },
        },
        ...errors,
      },
    }),
    async (c) => {
      const children = await h.parent.listChildren();
      const live = children.filter((x) => !x.removed);
      const role = h.child ? (live.length ? 'mid-tier' : 'child') : live.length ? 'root' : 'standalone';
      return c.json(
        {
          node: {
            id: h.identity.nodeId,
            name: deps.node.name,
            role,
            languages: [...h.languages],
            subtreeLanguages: h.subtreeLanguages(),
            version: deps.node.version,
            protocolVersion: PROTOCOL_VERSION,
            epoch: h.identity.epoch,
            headSeq: await h.parent.headSeq(),
          },
          upstream: h.child ? { ...h.child.status(), reports: deps.rollup.status() } : null,
          children,
          /** What children share: complete resyncs' snapshots built, language sets held, children reading them; tail files and tail pages built. */
          snapshots: h.parent.sharing(),
          /** Every node below this one that reports (the roll-up), with its freshness. */
          subtree: await deps.rollup.subtree(),
          /** Catalog releases that missed their goal at a node of this subtree (docs/reports.md). */
          problems: await deps.freshness.problems(),
        },
        200,
      );
    },
  );

  deleteById(
    app,
    {
      path: '/api/v1/hierarchy/children/{id}',
      tag: 'hierarchy',
      summary: 'Remove a child (admin): its credential stops working; it may join again with a new token',
      role: 'admin',
      done: 'Removed',
    },
    (id) => h.parent.removeChild(id),
  );

  const rules = replicationRulesSchema.openapi('ReplicationRules');
  app.openapi(
    createRoute({
      method: 'get',
      path: '/api/v1/hierarchy/children/{id}/rules',
      tags: ['hierarchy'],
      summary: "A child's replication rules: catalog, files, and continuous or scheduled",
      request: { params: z.object({ id: z.string().min(1).max(100) }) },
      responses: { 200: { description: 'The rules', content: { 'application/json': { schema: rules } } }, ...errors },
    }),
    async (c) => c.json(await h.parent.rules(c.req.valid('param').id), 200),
  );

  app.openapi(
    createRoute({
      method: 'put',
      path: '/api/v1/hierarchy/children/{id}/rules',
      tags: ['hierarchy'],
      summary: "Set a child's replication rules (admin); it reconnects under them, and turning the catalog back on resyncs it",
      middleware: [requireRole('admin')] as const,
      request: { params: z.object({ id: z.string().min(1).max(100) }), body: { content: { 'application/json': { schema: rules } }, required: true } },
      responses: { 200: { description: 'The rules now in force', content: { 'application/json': { schema: rules } } }, ...errors },
    }),
    async (c) => c.json(await h.parent.setRules(c.req.valid('param').id, c.req.valid('json')), 200),
  );

  app.openapi(
    createRoute({
      method: 'post',
      path: '/api/v1/hierarchy/children/{id}/resync',
      tags: ['hierarchy'],
      summary: 'Send a child a complete resync on its next connection (admin); its current stream is ended',
      middleware: [requireRole('admin')] as const,
      request: { params: z.object({ id: z.string().min(1).max(100) }) },
      responses: { 202: { description: 'Requested', content: { 'application/json': { schema: z.object({ requested: z.boolean() }) } } }, ...errors },
    }),
    async (c) => {
      await h.parent.requestResync(c.req.valid('param').id);
      return c.json({ requested: true }, 202);
    },
  );

  app.openapi(
    createRoute({
      method: 'post',
      path: '/api/v1/hierarchy/upstream/resync',
      tags: ['hierarchy'],
      summary: "Ask this node's parent for a complete resync (admin)",
      middleware: [requireRole('admin')] as const,
      responses: {
        202: { description: 'Requested', content: { 'application/json': { schema: z.object({ requested: z.boolean() }) } } },
        409: problem,
        ...errors,
      },
    }),
    async (c) => {
      if (!h.child) throw new AppError('conflict', 'this node has no upstream');
      h.child.requestResync();
      return c.json({ requested: true }, 202);
    },
  );
}
