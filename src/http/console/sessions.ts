import { randomBytes, timingSafeEqual } from 'node:crypto';

/**
 * Console sessions: the cookie holds a random session id, never the API token, so
 * signing out revokes the session and a stolen cookie dies with it. Each session has
 * its own CSRF token for the console's forms. Kept in memory, bounded (the oldest go
 * first), ended after 12 hours idle or 7 days in all; a node restart signs everyone
 * out. The API token behind a session is checked again on every request, so revoking
 * the token ends its sessions too.
 */

export interface Session {
  id: string;
  token: string;
  csrf: string;
  createdAt: number;
  lastUsedAt: number;
}

const IDLE_MS = 12 * 3_600_000;
const MAX_AGE_MS = 7 * 24 * 3_600_000;
const MAX_SESSIONS = 10_000;

export class Sessions {
  readonly #byId = new Map<string, Session>();

  constructor(private readonly now: () => number = Date.now) {}

  create(token: string): Session {
    const t = this.now();
    const s: Session = { id: randomBytes(32).toString('base64url'), token, csrf: randomBytes(24).toString('base64url'), createdAt: t, lastUsedAt: t };
    this.#byId.set(s.id, s);
    while (this.#byId.size > MAX_SESSIONS) this.#byId.delete(this.#byId.keys().next().value!);
    return s;
  }

  /** The live session of an id (its use is recorded), or null. */
  get(id: string | undefined): Session | null {
    if (!id) return null;
    const s = this.#byId.get(id);
    if (!s) return null;
    const t = this.now();
    if (t - s.lastUsedAt > IDLE_MS || t - s.createdAt > MAX_AGE_MS) {
      this.#byId.delete(id);
      return null;
    }
    s.lastUsedAt = t;
    // Most recently used last: the bound evicts the least recently used.
    this.#byId.delete(id);
    this.#byId.set(id, s);
    return s;
  }

  revoke(id: string | undefined): boolean {
    return id ? this.#byId.delete(id) : false;
  }

  get size(): number {
    return this.#byId.size;
  }
}

/** Constant-time comparison of a form's CSRF token with the session's. */
export function csrfMatches(s: Session, sent: unknown): boolean {
  if (typeof sent !== 'string') return false;
  const a = Buffer.from(s.csrf);
  const b = Buffer.from(sent);
  return a.length === b.length && timingSafeEqual(a, b);
}

/** A `next` target that stays on this site: one leading slash, no `//`, no backslash, no scheme. */
export function safeNext(next: unknown): string {
  const s = typeof next === 'string' ? next : '';
  return /^\/(?![/\\])[\x21-\x5b\x5d-\x7e]*$/.test(s) ? s : '/';
}
