import { randomBytes, randomUUID } from 'node:crypto';
import type { SqlConn } from '../db/exec.js';
import { isoTime, keysetPage } from '../db/sql.js';
import { hashToken } from '../auth/tokens.js';
import { AppError } from '../lib/errors.js';
import type { EnrollmentTokens } from '../assessment/enrollment.js';

/** Who is calling: an agent, and its computer once it has reported an inventory. */
export interface AgentPrincipal {
  agentId: string;
  name: string;
  computerId: number | null;
}

interface Cached extends AgentPrincipal {
  revoked: boolean;
}

/** Credentials kept in memory at most (least recently used first out). */
const CACHE_MAX = 100_000;
/** Agent secrets start with this, enrolment tokens with `pte_`, API tokens with `pt_`. */
export const AGENT_SECRET_PREFIX = 'pta_';
const SEEN_FLUSH_MS = 30_000;

/**
 * Agent credentials. Enrolment trades an enrolment token (expiring, use-limited)
 * for an agent id and a secret; only the secret's SHA-256 is stored. Every later
 * agent call authenticates with the secret: the hottest path of the node, so known
 * secrets are answered from memory (revocation goes through here and drops them),
 * and "last seen" is written in one transaction every 30 s, not per call.
 */
export class AgentCredentials {
  readonly #cache = new Map<string, Cached>();
  readonly #seen = new Map<string, number>();
  #timer: NodeJS.Timeout | null = null;

  constructor(
    private readonly conn: SqlConn,
    private readonly tokens: EnrollmentTokens,
  ) {}

  start(): void {
    this.#timer = setInterval(() => void this.flushSeen().catch(() => {}), SEEN_FLUSH_MS);
    this.#timer.unref();
  }

  async stop(): Promise<void> {
    if (this.#timer) clearInterval(this.#timer);
    await this.flushSeen();
  }

  async enroll(enrollmentToken: string, name: string, now = Date.now()): Promise<{ agentId: string; secret: string }> {
    const token = await this.tokens.verify(enrollmentToken);
    const agentId = randomUUID();
    const secret = `${AGENT_SECRET_PREFIX}${randomBytes(32).toString('base64url')}`;
    // The use is counted and the agent stored in one transaction; past the limit, nothing is.
    const [used] = await this.conn.write([
      ['UPDATE enrollment_tokens SET uses = uses + 1 WHERE id = ? AND (max_uses IS NULL OR uses < max_uses)', [token.id]],
      [
        'INSERT INTO agents (id, name, secret_hash, enrollment_token_id, created_at) SELECT ?, ?, ?, ?, ? WHERE changes() > 0',
        [agentId, name, hashToken(secret), token.id, now],
      ],
    ]);
    if (!used) throw new AppError('forbidden', `enrolment token "${token.name}" has reached its limit of ${token.maxUses} uses`);
    return { agentId, secret };
  }

  /** The agent behind a secret; 401 for an unknown or revoked one. */
  async authenticate(secret: string, now = Date.now()): Promise<AgentPrincipal> {
    const hash = hashToken(secret);
    let a = this.#cache.get(hash);
    if (a) {
      // Most recently used last: the first key is the one to evict.
      this.#cache.delete(hash);
      this.#cache.set(hash, a);
    } else {
      const row = await this.conn.get<{ id: string; name: string; revoked_at: number | null }>(
        'SELECT id, name, revoked_at FROM agents WHERE secret_hash = ?',
        [hash],
      );
      if (!row) throw new AppError('unauthenticated', 'unknown agent secret: enrol with POST /agent/v1/enroll');
      a = { agentId: row.id, name: row.name, computerId: null, revoked: row.revoked_at !== null };
      this.#cache.set(hash, a);
      if (this.#cache.size > CACHE_MAX) this.#cache.delete(this.#cache.keys().next().value!);
    }
    if (a.revoked) throw new AppError('unauthenticated', "this agent's credentials were revoked: enrol again");
    if (a.computerId === null) {
      const c = await this.conn.get<{ id: number }>('SELECT id FROM computers WHERE agent_key = ?', [a.agentId]);
      if (c) a.computerId = Number(c.id);
    }
    this.#seen.set(a.agentId, now);
    return { agentId: a.agentId, name: a.name, computerId: a.computerId };
  }

  /** Whether an id is an enrolled agent's (revoked or not): its computer reports with the agent's own secret only. */
  async isAgent(agentId: string): Promise<boolean> {
    return Boolean(await this.conn.get<{ id: string }>('SELECT id FROM agents WHERE id = ?', [agentId]));
  }

  /** Writes the "last seen" times gathered since the last flush. */
  async flushSeen(): Promise<void> {
    if (!this.#seen.size) return;
    const seen = [...this.#seen];
    this.#seen.clear();
    await this.conn.write(seen.map(([id, at]) => ['UPDATE agents SET last_seen_at = max(coalesce(last_seen_at, 0), ?) WHERE id = ?', [at, id]] as const));
  }

  /** Revokes an agent's credentials (by agent id); its next call is a 401. */
  async revoke(agentId: string, by: string | null, now = Date.now()): Promise<void> {
    const [n] = await this.conn.write([['UPDATE agents SET revoked_at = ?, revoked_by = ? WHERE id = ? AND revoked_at IS NULL', [now, by, agentId]]]);
    for (const a of this.#cache.values()) if (a.agentId === agentId) a.revoked = true;
    if (!n) throw new AppError('not-found', `no agent ${agentId} with live credentials`);
  }

  /** Revokes the credentials of a computer's agent. */
  async revokeComputer(computerId: number, by: string | null): Promise<{ agentId: string }> {
    const c = await this.conn.get<{ agent_key: string }>('SELECT agent_key FROM computers WHERE id = ?', [computerId]);
    if (!c) throw new AppError('not-found', `no computer ${computerId}`);
    await this.revoke(c.agent_key, by);
    return { agentId: c.agent_key };
  }

  async list(o: { after: string; limit: number }) {
    const rows = await this.conn.all<{
      id: string;
      name: string;
      enrollment_token_id: string | null;
      created_at: number;
      last_seen_at: number | null;
      revoked_at: number | null;
      revoked_by: string | null;
      computer_id: number | null;
    }>(
      `SELECT a.id, a.name, a.enrollment_token_id, a.created_at, a.last_seen_at, a.revoked_at, a.revoked_by, c.id AS computer_id
       FROM agents a LEFT JOIN computers c ON c.agent_key = a.id WHERE a.id > ? ORDER BY a.id LIMIT ?`,
      [o.after, o.limit + 1],
    );
    return keysetPage(
      rows,
      o.limit,
      (r) => ({
        agentId: r.id,
        name: r.name,
        computerId: r.computer_id === null ? null : Number(r.computer_id),
        enrollmentTokenId: r.enrollment_token_id,
        createdAt: isoTime(r.created_at)!,
        lastSeenAt: isoTime(this.#seen.get(r.id) ?? r.last_seen_at),
        revokedAt: isoTime(r.revoked_at),
        revokedBy: r.revoked_by,
      }),
      (r) => r.id,
    );
  }
}
