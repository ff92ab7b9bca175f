import { chmodSync, existsSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { openNative, prepare, type NativeDb } from '../db/native.js';
import type { AgentEvent } from '../agent-api/events.js';

/**
 * The agent's durable state, in its state directory:
 * - `credentials.json` (mode 0600): the node, agent id and secret from enrolment;
 * - `agent.db` (SQLite): the event queue (an event is deleted only once the node has
 *   acknowledged its batch, so a crash or an hour without the node loses nothing and,
 *   with the node's deduplication by event id, doubles nothing), the retry counters
 *   per update, and small documents (config, assignments with their ETag, last scan).
 */

export interface Credentials {
  server: string;
  agentId: string;
  secret: string;
  enrolledAt: string;
}

/** An event waiting to be sent, as the node takes it. */
export type QueuedEvent = AgentEvent;

export interface Counters {
  download: number;
  install: number;
  /** The node's retriesClearedAt this agent last applied (ISO), or null. */
  clearedAt: string | null;
  /** Set once the ceiling was logged and reported, so it is said once. */
  ceilingReported: boolean;
}

export function readCredentials(state: string): Credentials | null {
  const f = join(state, 'credentials.json');
  return existsSync(f) ? (JSON.parse(readFileSync(f, 'utf8')) as Credentials) : null;
}

export function writeCredentials(state: string, c: Credentials): void {
  const f = join(state, 'credentials.json');
  const tmp = `${f}.tmp`;
  writeFileSync(tmp, `${JSON.stringify(c, null, 2)}\n`, { mode: 0o600 });
  chmodSync(tmp, 0o600);
  renameSync(tmp, f);
}

export class AgentStore {
  readonly #db: NativeDb;

  constructor(state: string) {
    this.#db = openNative(join(state, 'agent.db'));
    this.#db.exec('PRAGMA journal_mode = WAL');
    this.#db.exec(`CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, value TEXT NOT NULL);
      CREATE TABLE IF NOT EXISTS events (seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE, body TEXT NOT NULL);
      CREATE TABLE IF NOT EXISTS counters (update_id TEXT PRIMARY KEY, download INTEGER NOT NULL, install INTEGER NOT NULL, cleared_at TEXT, ceiling_reported INTEGER NOT NULL DEFAULT 0);`);
  }

  close(): void {
    this.#db.close();
  }

  get<T>(key: string): T | null {
    const r = prepare(this.#db, 'SELECT value FROM kv WHERE key = ?').get(key) as { value: string } | undefined;
    return r ? (JSON.parse(r.value) as T) : null;
  }

  put(key: string, value: unknown): void {
    prepare(this.#db, 'INSERT INTO kv (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value').run(key, JSON.stringify(value));
  }

  enqueue(e: QueuedEvent): void {
    prepare(this.#db, 'INSERT OR IGNORE INTO events (id, body) VALUES (?, ?)').run(e.id, JSON.stringify(e));
  }

  /** The oldest unacknowledged events, at most `limit`. */
  pending(limit: number): { seq: number; event: QueuedEvent }[] {
    return (prepare(this.#db, 'SELECT seq, body FROM events ORDER BY seq LIMIT ?').all(limit) as { seq: number; body: string }[]).map((r) => ({
      seq: Number(r.seq),
      event: JSON.parse(r.body) as QueuedEvent,
    }));
  }

  queued(): number {
    return Number((prepare(this.#db, 'SELECT count(*) AS n FROM events').get() as { n: number }).n);
  }

  /** The node acknowledged everything up to `seq`. */
  ack(seq: number): void {
    prepare(this.#db, 'DELETE FROM events WHERE seq <= ?').run(seq);
  }

  /** Events the node refused for good: out of the queue. */
  drop(seqs: readonly number[]): void {
    for (const seq of seqs) prepare(this.#db, 'DELETE FROM events WHERE seq = ?').run(seq);
  }

  counters(updateId: string): Counters {
    const r = prepare(this.#db, 'SELECT download, install, cleared_at, ceiling_reported FROM counters WHERE update_id = ?').get(updateId) as
      | { download: number; install: number; cleared_at: string | null; ceiling_reported: number }
      | undefined;
    return r
      ? { download: Number(r.download), install: Number(r.install), clearedAt: r.cleared_at, ceilingReported: Boolean(r.ceiling_reported) }
      : { download: 0, install: 0, clearedAt: null, ceilingReported: false };
  }

  setCounters(updateId: string, c: Counters): void {
    prepare(
      this.#db,
      'INSERT INTO counters (update_id, download, install, cleared_at, ceiling_reported) VALUES (?, ?, ?, ?, ?) ON CONFLICT(update_id) DO UPDATE SET download = excluded.download, install = excluded.install, cleared_at = excluded.cleared_at, ceiling_reported = excluded.ceiling_reported',
    ).run(updateId, c.download, c.install, c.clearedAt, c.ceilingReported ? 1 : 0);
  }

  allCounters(): ({ updateId: string } & Counters)[] {
    return (
      prepare(this.#db, 'SELECT update_id, download, install, cleared_at, ceiling_reported FROM counters ORDER BY update_id').all() as {
        update_id: string;
        download: number;
        install: number;
        cleared_at: string | null;
        ceiling_reported: number;
      }[]
    ).map((r) => ({
      updateId: r.update_id,
      download: Number(r.download),
      install: Number(r.install),
      clearedAt: r.cleared_at,
      ceilingReported: Boolean(r.ceiling_reported),
    }));
  }

  /** Resets every counter (`patchtree agent clear-retries`); returns how many were set. */
  clearCounters(): number {
    return prepare(this.#db, 'UPDATE counters SET download = 0, install = 0, ceiling_reported = 0 WHERE download > 0 OR install > 0').run().changes;
  }
}
