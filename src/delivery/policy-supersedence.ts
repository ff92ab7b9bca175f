import type { SqlConn, Write } from '../db/exec.js';
import type { Logger } from '../lib/log.js';
import type { Delivery } from './engine.js';
import { policyLogWrite } from './replication.js';
import type { PolicyPublisher } from './policies.js';

/** Policies that follow supersedence take the updates that supersede theirs. */
export class PolicySupersedence {
  constructor(
    private readonly conn: SqlConn,
    private readonly delivery: Delivery,
    private readonly logger: Logger,
    private readonly publisher: PolicyPublisher,
  ) {}

  /**
   * Seed KB "revise Software Update policies after importing patch data": for each
   * policy that follows supersedence, every live update superseding one of its
   * updates (same product) is added, with a history entry, until none is left
   * (chains of cumulative updates are followed to their newest).
   */
  async revise(now = Date.now()): Promise<number> {
    let total = 0;
    const revised = new Set<string>();
    for (let round = 0; round < 50; round++) {
      const rows = await this.conn.all<{ policy_id: string; newer: string; older: string }>(
        `SELECT DISTINCT pu.policy_id, n.id AS newer, o.id AS older FROM policy_updates pu
         JOIN policies p ON p.id = pu.policy_id AND p.follow_supersedence = 1 AND p.origin = ''
         JOIN updates o ON o.id = pu.update_id AND o.kb IS NOT NULL
         JOIN update_supersedes s ON s.kb = o.kb
         JOIN updates n ON n.id = s.update_id AND n.product = o.product AND n.expired = 0
         WHERE NOT EXISTS (SELECT 1 FROM policy_updates x WHERE x.policy_id = pu.policy_id AND x.update_id = n.id)
         ORDER BY pu.policy_id, n.id LIMIT 5000`,
        [],
      );
      if (!rows.length) break;
      const w: Write[] = [];
      const seen = new Set<string>();
      for (const r of rows) {
        const key = `${r.policy_id}\t${r.newer}`;
        if (seen.has(key)) continue;
        seen.add(key);
        w.push(['INSERT OR IGNORE INTO policy_updates (policy_id, update_id, added_at) VALUES (?, ?, ?)', [r.policy_id, r.newer, now]]);
        w.push([
          'INSERT INTO policy_history (policy_id, at, by, action, detail) VALUES (?, ?, ?, ?, ?)',
          [r.policy_id, now, 'supersedence', 'update-superseded', JSON.stringify({ added: r.newer, supersedes: r.older })],
        ]);
        w.push(['UPDATE policies SET revision = revision + 1, updated_at = ? WHERE id = ?', [now, r.policy_id]]);
        revised.add(r.policy_id);
        total++;
      }
      for (const id of new Set(rows.map((r) => r.policy_id))) w.push(policyLogWrite(id, this.publisher, now));
      await this.conn.write(w);
    }
    for (const id of revised) this.delivery.policyChanged(id);
    if (revised.size) this.publisher.notify();
    if (total) this.logger.info({ added: total, policies: revised.size }, 'policies revised for superseding updates');
    return total;
  }
}
