import { randomUUID } from 'node:crypto';
import { eq } from 'drizzle-orm';
import type { Orm } from '../db/index.js';
import { nodeIdentity } from './schema.js';

export interface Identity {
  nodeId: string;
  epoch: string;
}

/** The node's id and change-log epoch, created on the first start and kept. */
export async function ensureIdentity(orm: Orm): Promise<Identity> {
  const row = await orm.query.nodeIdentity.findFirst({ where: eq(nodeIdentity.id, 1) });
  if (row) return { nodeId: row.nodeId, epoch: row.epoch };
  const created = { id: 1, nodeId: randomUUID(), epoch: randomUUID(), createdAt: Date.now() };
  await orm.insert(nodeIdentity).values(created).onConflictDoNothing();
  const again = await orm.query.nodeIdentity.findFirst({ where: eq(nodeIdentity.id, 1) });
  return { nodeId: again!.nodeId, epoch: again!.epoch };
}
