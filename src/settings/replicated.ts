import { prepare, type NativeDb } from '../db/native.js';
import type { ApplyTx, Change, KindApplier, ReplicatedKind } from '../changelog/index.js';
import { replicatedSettings, type SettingPayload } from './service.js';

/**
 * Replicated settings (kind `setting`, key = the setting's key): a subtree follows its
 * origin's value and cannot change it; a setting of this node's own (origin '') is
 * never overwritten or swept.
 */
class SettingApplier implements KindApplier {
  readonly #s;

  constructor(db: NativeDb) {
    this.#s = {
      upsert: prepare(
        db,
        `INSERT INTO settings (key, value, updated_at, updated_by, origin) VALUES (?, ?, ?, 'replication', ?)
        ON CONFLICT(key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at, updated_by = excluded.updated_by, origin = excluded.origin`,
      ),
      delete: prepare(db, "DELETE FROM settings WHERE key = ? AND origin != ''"),
      replicated: (seen: string) => prepare(db, `SELECT key FROM settings WHERE origin != '' AND key NOT IN ${seen}`),
    };
  }

  apply(tx: ApplyTx, changes: readonly Change[]): number {
    for (const c of changes) {
      if (c.op === 'upsert') {
        const p = JSON.parse(c.payload.toString()) as SettingPayload;
        this.#s.upsert.run(c.key, JSON.stringify(p.value), tx.now, p.origin);
      } else if (c.op === 'delete') this.#s.delete.run(c.key);
      tx.log({ kind: 'setting', key: c.key, op: c.op, languages: '', payload: c.payload.toString() });
    }
    return changes.length;
  }

  /** Replicated settings the parent no longer has. */
  sweep(tx: ApplyTx): number {
    const gone = this.#s.replicated(tx.seenSql('setting')).all() as { key: string }[];
    for (const { key } of gone) {
      this.#s.delete.run(key);
      tx.log({ kind: 'setting', key, op: 'delete', languages: '', payload: JSON.stringify({ key }) });
    }
    return gone.length;
  }
}

export const settingKind: ReplicatedKind = {
  kind: 'setting',
  catalog: false,
  byLanguage: false,
  source: {
    tail: (_ctx, rows) => rows.map((r) => Buffer.from(r.payload)),
    async *snapshot(ctx) {
      const all = await replicatedSettings(ctx.orm, ctx.self.nodeId);
      if (all.length) yield all.map((s) => ({ seq: 0, kind: 'setting', key: s.key, op: 'upsert', payload: Buffer.from(JSON.stringify(s.payload)) }));
    },
  },
  applier: (db) => new SettingApplier(db),
};
