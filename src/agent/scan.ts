import { createReadStream, createWriteStream, existsSync, renameSync } from 'node:fs';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { CatalogIndex } from '../assessment/catalog-index.js';
import { facts, type Inventory } from '../assessment/evaluate.js';
import type { RuleLine } from '../agent-api/checkin.js';
import type { Report } from '../agent-api/inventory.js';
import type { CheckIn } from './checkin.js';
import type { NodeConnection } from './connection.js';
import type { InventoryProvider } from './inventory.js';
import type { PatchLog } from './log.js';
import type { AgentStore } from './store.js';

/**
 * The scan: collect the inventory, report it to the node, and evaluate it here
 * against the node's rules (fetched again only when they changed) with the
 * evaluator the node uses.
 */

export interface ScanResult {
  at: string;
  required: number;
  unknown: number;
  bySeverity: Record<string, number>;
}

export interface ScannerOptions {
  state: string;
  name?: string | undefined;
  version: string;
  inventory: InventoryProvider;
  connection: NodeConnection;
  checkIn: CheckIn;
  store: AgentStore;
  log: PatchLog;
}

export class Scanner {
  constructor(private readonly o: ScannerOptions) {}

  async scan(signal: AbortSignal, step: (s: string) => void): Promise<void> {
    const o = this.o;
    step('configuration');
    await o.checkIn.config(signal);
    step('inventory');
    const inv = await o.inventory.collect(signal);
    step('uploading the inventory');
    const report: Report = { agentKey: o.connection.credentials!.agentId, name: o.name ?? hostname(), agentVersion: o.version, full: inv as Report['full'] };
    await o.connection.json('/agent/v1/inventory', { method: 'POST', body: JSON.stringify(report) }, signal);
    step('evaluating');
    const result = await this.#evaluate(inv, signal);
    o.store.put('lastScan', result);
    o.store.put('scanRequested', false);
    const sev = Object.entries(result.bySeverity)
      .map(([k, v]) => `${k} ${v}`)
      .join(', ');
    o.log.write(`scan: ${result.required} update(s) required${sev ? ` (${sev})` : ''}, ${result.unknown} undecided`);
  }

  /** Evaluates the inventory here, against the node's rules (fetched again only when they changed). */
  async #evaluate(inv: Inventory, signal: AbortSignal): Promise<ScanResult> {
    const { store } = this.o;
    const file = join(this.o.state, 'rules.ndjson');
    const etag = existsSync(file) ? store.get<string>('rulesEtag') : null;
    const res = await this.o.connection.fetch('/agent/v1/rules', { headers: etag ? { 'if-none-match': etag } : {}, timeoutMs: 600_000 }, signal);
    if (res.status === 200 && res.body) {
      await pipeline(Readable.fromWeb(res.body as never), createWriteStream(`${file}.tmp`), { signal });
      renameSync(`${file}.tmp`, file);
      store.put('rulesEtag', res.headers.get('etag'));
    } else if (res.status !== 304) throw new Error(`GET /agent/v1/rules: HTTP ${res.status}`);
    else await res.body?.cancel();
    const index = new CatalogIndex();
    if (existsSync(file))
      for await (const line of createInterface({ input: createReadStream(file) })) {
        if (!line) continue;
        const r = JSON.parse(line) as RuleLine;
        index.set({
          id: r.id,
          kb: r.kb,
          product: r.product,
          severity: r.severity,
          applicability: JSON.stringify(r.applicability),
          installed: JSON.stringify(r.installed),
          supersedes: JSON.stringify(r.supersedes),
        });
      }
    const states = index.assess(facts(inv));
    const bySeverity: Record<string, number> = {};
    let required = 0;
    let unknown = 0;
    for (const [id, s] of states) {
      if (s === 'unknown') unknown++;
      if (s !== 'required') continue;
      required++;
      const sev = index.get(id)?.severity ?? 'Unrated';
      bySeverity[sev] = (bySeverity[sev] ?? 0) + 1;
    }
    return { at: new Date().toISOString(), required, unknown, bySeverity };
  }
}
