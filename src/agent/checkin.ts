import { assignmentsSchema, type Assignments } from '../agent-api/assignments.js';
import type { AgentConfig } from '../agent-api/checkin.js';
import type { NodeConnection } from './connection.js';
import type { PatchLog } from './log.js';
import type { Progress } from './status.js';
import type { AgentStore } from './store.js';

/**
 * Checking in: the node's configuration for this agent and its assignments (with
 * their ETag, so a quiet check-in is a 304), both kept in the store; and what the
 * agent last did with each update (its progress, which the status shows).
 */

/** What the agent keeps of the configuration. */
export type ConfigDoc = Pick<AgentConfig, 'scanIntervalMinutes' | 'installation' | 'nodeTime'>;

export class CheckIn {
  constructor(
    private readonly connection: NodeConnection,
    private readonly store: AgentStore,
    private readonly log: PatchLog,
  ) {}

  async config(signal?: AbortSignal): Promise<ConfigDoc> {
    const cfg = await this.connection.json<AgentConfig>('/agent/v1/config', {}, signal);
    const skew = Date.parse(cfg.nodeTime) - Date.now();
    if (Math.abs(skew) > 5 * 60_000) this.log.write(`warning: this computer's clock is ${Math.round(skew / 1000)} s off the node's`);
    this.store.put('config', cfg);
    this.store.put('configAt', new Date().toISOString());
    this.store.put('lastCheckIn', new Date().toISOString());
    return cfg;
  }

  /** The last assignments, if they are of this version's shape (an upgraded agent fetches them afresh). */
  cachedAssignments(): { etag: string; body: Assignments } | null {
    const c = this.store.get<{ etag: string; body: unknown }>('assignments');
    const body = c ? assignmentsSchema.safeParse(c.body) : null;
    return c && body?.success ? { etag: c.etag, body: body.data } : null;
  }

  async assignments(signal?: AbortSignal): Promise<Assignments> {
    const cached = this.cachedAssignments();
    const res = await this.connection.fetch('/agent/v1/assignments', { headers: cached ? { 'if-none-match': cached.etag } : {} }, signal);
    this.store.put('lastCheckIn', new Date().toISOString());
    if (res.status === 304 && cached) return cached.body;
    const text = await res.text();
    if (res.status !== 200) throw new Error(`GET /agent/v1/assignments: HTTP ${res.status} ${text.slice(0, 200)}`);
    let raw: unknown;
    try {
      raw = JSON.parse(text);
    } catch (err) {
      throw new Error(`GET /agent/v1/assignments: not JSON: ${(err as Error).message}`);
    }
    const parsed = assignmentsSchema.safeParse(raw);
    if (!parsed.success) {
      const i = parsed.error.issues[0];
      throw new Error(`GET /agent/v1/assignments: not understood (${i?.path.join('.')}: ${i?.message}); is the node a different version?`);
    }
    const body = parsed.data;
    this.store.put('assignments', { etag: res.headers.get('etag') ?? '', body });
    // What the node no longer lists is done with here too.
    const listed = new Set([...body.items, ...body.waiting].map((i) => i.updateId));
    const progress = this.progress();
    if (Object.keys(progress).some((id) => !listed.has(id)))
      this.store.put('progress', Object.fromEntries(Object.entries(progress).filter(([id]) => listed.has(id))));
    return body;
  }

  progress(): Record<string, Progress> {
    return this.store.get<Record<string, Progress>>('progress') ?? {};
  }

  /** Records what an update is doing now (the status shows it, also when the agent is not running). */
  setProgress(updateId: string, p: Omit<Progress, 'at' | 'lastError'> & { lastError?: string | null }): void {
    const all = this.progress();
    const prev = all[updateId];
    all[updateId] = { ...p, lastError: p.lastError === undefined ? (prev?.lastError ?? null) : p.lastError, at: new Date().toISOString() };
    this.store.put('progress', all);
  }
}
