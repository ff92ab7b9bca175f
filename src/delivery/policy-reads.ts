import type { SqlConn } from '../db/exec.js';
import { isoTime as iso, keysetPage } from '../db/sql.js';
import { AppError } from '../lib/errors.js';
import type { InstallationOverride } from './installation.js';
import type { Targets } from './engine.js';
import type { PolicyDeliveries } from './policy-delivery.js';

/** A row of the policies table. */
export interface StoredPolicy {
  id: string;
  name: string;
  description: string | null;
  enabled: number;
  start_at: number;
  deadline_at: number | null;
  targets: string;
  installation: string | null;
  follow_supersedence: number;
  origin: string;
  origin_name: string;
  shared_targets: string;
  revision: number;
  created_at: number;
  created_by: string | null;
  updated_at: number;
}

/** Software update policies as read: one, a page of them, a policy's history and its delivery. */
export class PolicyReads {
  constructor(
    protected readonly conn: SqlConn,
    private readonly deliveries: PolicyDeliveries,
  ) {}

  protected view(r: StoredPolicy, updates: string[]) {
    return {
      id: r.id,
      name: r.name,
      description: r.description,
      enabled: Boolean(r.enabled),
      startAt: iso(r.start_at)!,
      deadline: iso(r.deadline_at),
      targets: JSON.parse(r.targets) as Targets,
      installation: r.installation ? (JSON.parse(r.installation) as InstallationOverride) : null,
      followSupersedence: Boolean(r.follow_supersedence),
      origin: r.origin || null,
      originName: r.origin ? r.origin_name : null,
      readOnly: Boolean(r.origin),
      revision: Number(r.revision),
      createdAt: iso(r.created_at)!,
      createdBy: r.created_by,
      updatedAt: iso(r.updated_at)!,
      updates,
    };
  }

  protected async row(id: string): Promise<StoredPolicy> {
    const r = await this.conn.get<StoredPolicy>('SELECT * FROM policies WHERE id = ?', [id]);
    if (!r) throw new AppError('not-found', `no policy ${id}`);
    return r;
  }

  protected async updatesOf(id: string): Promise<string[]> {
    return (await this.conn.all<{ update_id: string }>('SELECT update_id FROM policy_updates WHERE policy_id = ? ORDER BY update_id', [id])).map(
      (r) => r.update_id,
    );
  }

  async get(id: string) {
    const r = await this.row(id);
    return { ...this.view(r, await this.updatesOf(id)), delivery: await this.totals(id) };
  }

  async list(o: { after: string; limit: number }) {
    const rows = await this.conn.all<StoredPolicy & { n: number }>(
      'SELECT p.*, (SELECT count(*) FROM policy_updates pu WHERE pu.policy_id = p.id) AS n FROM policies p WHERE p.name > ? ORDER BY p.name LIMIT ?',
      [o.after, o.limit + 1],
    );
    const page = keysetPage(
      rows,
      o.limit,
      (r) => r,
      (r) => r.name,
    );
    const items = [];
    for (const r of page.items) {
      const { updates: _u, ...v } = this.view(r, []);
      items.push({ ...v, updateCount: Number(r.n), delivery: await this.totals(r.id) });
    }
    return { items, nextCursor: page.nextCursor };
  }

  async history(id: string, o: { after: number; limit: number }) {
    const rows = await this.conn.all<{ id: number; at: number; by: string | null; action: string; detail: string }>(
      'SELECT id, at, by, action, detail FROM policy_history WHERE policy_id = ? AND id > ? ORDER BY id LIMIT ?',
      [id, o.after, o.limit + 1],
    );
    if (!rows.length && o.after === 0) await this.row(id);
    return keysetPage(
      rows,
      o.limit,
      (r) => ({ id: Number(r.id), at: iso(r.at)!, by: r.by, action: r.action, detail: JSON.parse(r.detail) as unknown }),
      (r) => String(r.id),
    );
  }

  /** Counts per delivery state of a policy's (computer, update) pairs, and its computers. */
  totals(id: string): Promise<Record<string, number>> {
    return this.deliveries.totals(id);
  }

  /** Every policy's totals (for the roll-up). */
  allTotals() {
    return this.deliveries.allTotals();
  }

  /** A policy's delivery, per computer and update, paged by (computer, update). */
  async deliveryOf(id: string, o: { state?: string | undefined; computer?: number | undefined; after: string; limit: number }) {
    await this.row(id);
    return this.deliveries.deliveryOf(id, o);
  }

  /** Installs (and failed installs) per day of the last `days`. */
  async installsByDay(id: string, days: number) {
    await this.row(id);
    return { days: await this.deliveries.installsByDay(id, days) };
  }
}
