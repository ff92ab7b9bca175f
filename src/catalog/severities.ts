import { asc, eq, inArray, sql } from 'drizzle-orm';
import type { Orm } from '../db/index.js';
import { AppError } from '../lib/errors.js';
import { changelog } from '../changelog/index.js';
import type { Reader } from './replica.js';
import { customSeverities, updates } from './schema.js';

/**
 * Custom severity levels (admin-defined, ordered by rank) and their assignment to
 * updates. Both replicate: a change to the levels appends the whole list (a handful
 * of rows) as one `severity-levels` entry; an assignment re-publishes the updates it
 * touches, whose replicated form names their level by key. Levels that came from
 * upstream are read-only here (409 naming their origin).
 */

/** What a replicated write needs: this node's id (the keys of its own levels) and a wake-up for subscribers. */
export interface Publisher {
  nodeId: string;
  notify(): void;
}

export interface LevelPayload {
  levels: { key: string; name: string; rank: number }[];
}

type Tx = Parameters<Parameters<Orm['transaction']>[0]>[0];

/** The key a level travels under: its origin's, or this node's id and the level's id. */
export function levelKey(nodeId: string, row: { id: number; originKey: string | null }): string {
  return row.originKey ?? `${nodeId}:${row.id}`;
}

/** The origin node of a replicated level (the part of its key before the colon). */
const originOf = (originKey: string) => originKey.slice(0, originKey.indexOf(':'));

/** The current list of levels, as one change-log payload. */
export async function levelsPayload(db: Reader, nodeId: string): Promise<LevelPayload> {
  const rows = await db.select().from(customSeverities).orderBy(asc(customSeverities.rank), asc(customSeverities.id));
  return { levels: rows.map((r) => ({ key: levelKey(nodeId, r), name: r.name, rank: r.rank })) };
}

/** True when an error, or one it wraps (drizzle wraps the driver's), is a UNIQUE violation. */
export function isUniqueViolation(err: unknown): boolean {
  for (let e = err, i = 0; e && i < 5; e = (e as { cause?: unknown }).cause, i++) {
    const { code, message } = e as { code?: unknown; message?: unknown };
    if (String(code ?? '').includes('CONSTRAINT_UNIQUE') || String(message ?? '').includes('UNIQUE constraint')) return true;
  }
  return false;
}

function uniqueName(err: unknown, name: string): never {
  if (isUniqueViolation(err)) throw new AppError('conflict', `a custom severity named "${name}" exists`);
  throw err;
}

export class Severities {
  constructor(
    private readonly orm: Orm,
    private readonly pub: Publisher,
  ) {}

  async list() {
    const rows = await this.orm
      .select({
        id: customSeverities.id,
        name: customSeverities.name,
        rank: customSeverities.rank,
        originKey: customSeverities.originKey,
        updates: sql<number>`(SELECT count(*) FROM updates u WHERE u.custom_severity_id = "custom_severities"."id")`,
      })
      .from(customSeverities)
      .orderBy(asc(customSeverities.rank), asc(customSeverities.id));
    return rows.map(({ originKey, ...r }) => ({ ...r, updates: Number(r.updates), origin: originKey ? originOf(originKey) : null }));
  }

  async #get(id: number, forWrite: boolean) {
    const row = await this.orm.query.customSeverities.findFirst({ where: eq(customSeverities.id, id) });
    if (!row) throw new AppError('not-found', `no custom severity ${id}`);
    if (forWrite && row.originKey) {
      const origin = originOf(row.originKey);
      throw new AppError('conflict', `custom severity "${row.name}" is replicated from node ${origin} and is read-only here; change it at its origin`, {
        origin,
      });
    }
    return row;
  }

  /** Runs a write and appends the new list of levels in the same transaction. */
  async #write<T>(fn: (tx: Tx) => Promise<T>): Promise<T> {
    const r = await this.orm.transaction(async (tx) => {
      const out = await fn(tx);
      const payload = JSON.stringify(await levelsPayload(tx, this.pub.nodeId));
      await changelog.append(tx, { kind: 'severity-levels', key: 'all', op: 'upsert', languages: '', payload }, Date.now());
      return out;
    });
    this.pub.notify();
    return r;
  }

  async create(name: string, rank?: number) {
    try {
      return await this.#write(async (tx) => {
        const max = await tx.select({ m: sql<number>`coalesce(max(${customSeverities.rank}), -1)` }).from(customSeverities);
        const [row] = await tx
          .insert(customSeverities)
          .values({ name, rank: rank ?? Number(max[0]?.m ?? -1) + 1, createdAt: Date.now() })
          .returning();
        return row!;
      });
    } catch (err) {
      uniqueName(err, name);
    }
  }

  async update(id: number, patch: { name?: string; rank?: number }) {
    await this.#get(id, true);
    if (patch.name !== undefined || patch.rank !== undefined) {
      try {
        await this.#write((tx) => tx.update(customSeverities).set(patch).where(eq(customSeverities.id, id)));
      } catch (err) {
        uniqueName(err, patch.name ?? '');
      }
    }
    return this.#get(id, false);
  }

  /** Sets the order of all levels at once: `ids[0]` becomes rank 0. */
  async order(ids: number[]) {
    const all = await this.orm.select({ id: customSeverities.id, name: customSeverities.name, originKey: customSeverities.originKey }).from(customSeverities);
    const have = new Set(all.map((r) => r.id));
    if (ids.length !== have.size || new Set(ids).size !== ids.length || !ids.every((i) => have.has(i)))
      throw new AppError('validation-failed', 'order must list every custom severity id exactly once', { expected: [...have].sort((a, b) => a - b) });
    const replicated = all.find((r) => r.originKey);
    if (replicated) {
      const origin = originOf(replicated.originKey!);
      throw new AppError(
        'conflict',
        `the order of custom severities is set at node ${origin}, where "${replicated.name}" comes from; rank this node's own levels one by one`,
        { origin },
      );
    }
    await this.#write(async (tx) => {
      for (let i = 0; i < ids.length; i++) await tx.update(customSeverities).set({ rank: i }).where(eq(customSeverities.id, ids[i]!));
    });
    return this.list();
  }

  /** Deleting a level unassigns it from its updates in the same transaction (a child does the same on the new list). */
  async delete(id: number) {
    await this.#get(id, true);
    await this.#write(async (tx) => {
      await tx.update(updates).set({ customSeverityId: null }).where(eq(updates.customSeverityId, id));
      await tx.delete(customSeverities).where(eq(customSeverities.id, id));
    });
  }

  /** Assigns a level (or none) to updates and re-publishes them, so the tree below follows. */
  async assign(updateIds: string[], severityId: number | null) {
    if (severityId !== null) await this.#get(severityId, false);
    const found = await this.orm.select({ id: updates.id }).from(updates).where(inArray(updates.id, updateIds));
    const missing = updateIds.filter((id) => !found.some((f) => f.id === id));
    if (missing.length) throw new AppError('not-found', `no update ${missing.slice(0, 5).join(', ')}`, { missing });
    await this.orm.transaction(async (tx) => {
      await tx.update(updates).set({ customSeverityId: severityId }).where(inArray(updates.id, updateIds));
      // State entries (no payload): subscribers are sent each update as it is then, level included.
      await tx.run(
        changelog.appendSelect(
          sql`SELECT 'update', id, 'upsert', languages, '', ${Date.now()} FROM updates WHERE id IN (SELECT value FROM json_each(${JSON.stringify(updateIds)})) ORDER BY id`,
        ),
      );
    });
    this.pub.notify();
    return { updated: updateIds.length };
  }
}
