import type { SqlConn, Write } from '../db/exec.js';
import { AppError } from '../lib/errors.js';
import { facts, type Inventory } from './evaluate.js';
import type { CatalogIndex, State } from './catalog-index.js';
import { applyDelta, inventoryLanguages } from './inventory.js';
import type { Report } from '../agent-api/inventory.js';
import { SLOT, summary, type ComputerRow, type Counts } from './results.js';

/**
 * An inventory report, checked and assessed: the computer's old and new
 * inventories are evaluated against the catalog index and only the difference is
 * written (rows of `required`/`unknown` pairs, the per-update counters, the
 * computer's summary). It only computes the writes; the assessor's queue stores
 * them, several reports per transaction.
 */

export interface ReportResult {
  computerId: number;
  scanId: number;
  created: boolean;
  required: number;
  unknown: number;
}

/** What the reports of one batch changed, for the later reports of the same batch. */
export interface BatchContext {
  computers: Map<string, ComputerRow>;
  tokens: Map<string, { uses: number; max: number | null }>;
  nextId: number | null;
}

export class ReportIntake {
  constructor(
    private readonly db: SqlConn,
    private readonly index: CatalogIndex,
  ) {}

  /**
   * Checks and assesses one report and adds its writes to `w` (nothing is added if
   * it is refused). `ctx` carries what earlier reports of the same batch changed.
   */
  async assess(r: Report, now: number, enrollmentTokenId: string | undefined, ctx: BatchContext, w: Write[]): Promise<ReportResult> {
    const old =
      ctx.computers.get(r.agentKey) ??
      (await this.db.get<ComputerRow>('SELECT id, inventory, scan_id FROM computers WHERE agent_key = ?', [r.agentKey])) ??
      null;
    const oldInv = old ? (JSON.parse(old.inventory) as Inventory) : null;
    let inv: Inventory;
    if (r.full) inv = r.full as Inventory;
    else {
      if (!old || old.scan_id !== r.delta!.baseScanId)
        throw new AppError(
          'delta-base-mismatch',
          old
            ? `this computer's last report is scan ${old.scan_id}, not ${r.delta!.baseScanId}; send a full inventory`
            : 'this computer has not reported yet; send a full inventory',
          {
            currentScanId: old?.scan_id ?? null,
          },
        );
      try {
        inv = applyDelta(oldInv!, r.delta!);
      } catch (err) {
        throw new AppError('validation-failed', `invalid delta: ${(err as Error).message}`);
      }
    }
    const before = oldInv ? this.index.assess(facts(oldInv)) : new Map<string, State>();
    const after = this.index.assess(facts(inv));
    const json = JSON.stringify(inv);
    const scanId = (old?.scan_id ?? 0) + 1;
    const os = inv.os;
    // name, os_family, os_name, os_version, arch, language, languages, agent_version, inventory, scan_id, last_scan_at
    const fields = [
      r.name,
      os.family,
      os.name ?? null,
      os.version ?? null,
      os.arch ?? null,
      os.language ?? null,
      inventoryLanguages(inv).join(','),
      r.agentVersion ?? null,
      json,
      scanId,
      now,
    ];
    let id: number;
    if (old) {
      id = old.id;
      w.push([
        'UPDATE computers SET name = ?, os_family = ?, os_name = ?, os_version = ?, arch = ?, language = ?, languages = ?, agent_version = coalesce(?, agent_version), inventory = ?, scan_id = ?, last_scan_at = ? WHERE id = ?',
        [...fields, id],
      ]);
    } else {
      if (enrollmentTokenId) {
        let t = ctx.tokens.get(enrollmentTokenId);
        if (!t) {
          const row = await this.db.get<{ uses: number; max_uses: number | null }>('SELECT uses, max_uses FROM enrollment_tokens WHERE id = ?', [
            enrollmentTokenId,
          ]);
          t = { uses: Number(row?.uses ?? 0), max: row?.max_uses === null || row?.max_uses === undefined ? null : Number(row.max_uses) };
          ctx.tokens.set(enrollmentTokenId, t);
        }
        if (t.max !== null && t.uses >= t.max) throw new AppError('forbidden', 'this enrolment token has enrolled as many computers as it may');
        t.uses++;
        w.push(['UPDATE enrollment_tokens SET uses = uses + 1 WHERE id = ?', [enrollmentTokenId]]);
      }
      // This queue is the only writer of computers, so ids can be handed out here.
      ctx.nextId ??= Number((await this.db.get<{ id: number }>('SELECT coalesce(max(id), 0) + 1 AS id FROM computers', []))?.id ?? 1);
      id = ctx.nextId++;
      w.push([
        'INSERT INTO computers (id, agent_key, name, os_family, os_name, os_version, arch, language, languages, agent_version, inventory, scan_id, last_scan_at, created_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)',
        [id, r.agentKey, ...fields, now],
      ]);
    }
    // The product index of this computer, when its products changed.
    const oldProducts = oldInv ? productKeys(oldInv) : [];
    const newProducts = productKeys(inv);
    if (oldProducts.join('\n') !== newProducts.join('\n')) {
      w.push(['DELETE FROM computer_products WHERE computer_id = ?', [id]]);
      for (const p of newProducts) w.push(['INSERT OR IGNORE INTO computer_products (product, computer_id) VALUES (?, ?)', [p, id]]);
    }
    // Only the difference: counters and rows of the updates whose state changed.
    for (const uid of new Set([...before.keys(), ...after.keys()])) {
      const s0 = before.get(uid);
      const s1 = after.get(uid);
      if (s0 !== s1) this.#changed(w, id, uid, s0, s1);
    }
    const sum = summary(this.index, id, after, now);
    w.push(sum.write);
    ctx.computers.set(r.agentKey, { id, inventory: json, scan_id: scanId });
    return { computerId: id, scanId, created: !old, required: sum.required, unknown: sum.unknown };
  }

  /** One (computer, update) pair changed state: its row and the update's counters follow. */
  #changed(w: Write[], computerId: number, updateId: string, s0: State | undefined, s1: State | undefined): void {
    const d: Counts = [0, 0, 0, 0];
    if (s0) d[SLOT[s0]]!--;
    if (s1) d[SLOT[s1]]!++;
    w.push([
      `INSERT INTO update_compliance (update_id, installed, required, unknown, superseded) VALUES (?, ?, ?, ?, ?)
       ON CONFLICT(update_id) DO UPDATE SET installed = installed + excluded.installed, required = required + excluded.required,
       unknown = unknown + excluded.unknown, superseded = superseded + excluded.superseded`,
      [updateId, ...d],
    ]);
    if (s1 === 'required' || s1 === 'unknown')
      w.push(['INSERT OR REPLACE INTO computer_updates (computer_id, update_id, state) VALUES (?, ?, ?)', [computerId, updateId, s1]]);
    else if (s0 === 'required' || s0 === 'unknown') w.push(['DELETE FROM computer_updates WHERE computer_id = ? AND update_id = ?', [computerId, updateId]]);
  }
}

/** A computer's entries in `computer_products`: its products lower-cased, or `*` when it reports none (a candidate for every update). */
function productKeys(inv: Inventory): string[] {
  if (!inv.products) return ['*'];
  return [...new Set(inv.products.map((p) => p.name.toLowerCase()))].sort();
}
