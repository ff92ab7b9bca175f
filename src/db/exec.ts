import type { Client, Transaction } from '@libsql/client';
import { BUSY_TIMEOUT_MS, openNative, prepare, type NativeDb, type Stmt } from './native.js';

/**
 * Plain SQL for the hot paths (imports, assessment), one interface over both
 * drivers: the `libsql` binding on a local file (prepared statements, synchronous,
 * about 2.5x faster for bulk writes) or @libsql/client for a remote libsql server.
 * Calls may return a value or a promise; callers await either.
 */
export interface Exec {
  run(sql: string, args: readonly unknown[]): Promise<number> | number;
  get<T>(sql: string, args: readonly unknown[]): Promise<T | undefined> | T | undefined;
  all<T>(sql: string, args: readonly unknown[]): Promise<T[]> | T[];
  exec(sql: string): Promise<void> | void;
}

/** One statement of a write batch. */
export type Write = readonly [sql: string, args: readonly unknown[]];

/** An Exec with write transactions and a close. */
export interface SqlConn extends Exec {
  transaction<T>(fn: () => Promise<T>): Promise<T>;
  /**
   * Runs statements in one write transaction and returns each one's changes. On a
   * local file this is synchronous from BEGIN to COMMIT: no other code of this
   * thread runs while the write lock is held, so another connection of the same
   * thread can never block on it (which would stall the thread for the busy
   * timeout). Compute first, then write. With `guard`, the statement at that index
   * must change a row, or the whole batch is rolled back (an optimistic check:
   * `UPDATE ... WHERE revision = ?` first); the counts so far are returned.
   */
  write(stmts: readonly Write[], opts?: { guard?: number }): Promise<number[]>;
  close(): void;
}

/** Statements prepared once per connection, by SQL text. */
function nativeExec(db: NativeDb): Exec {
  const cache = new Map<string, Stmt>();
  const prep = (sql: string): Stmt => {
    let s = cache.get(sql);
    if (!s) {
      s = prepare(db, sql);
      cache.set(sql, s);
    }
    return s;
  };
  return {
    run: (sql, args) => prep(sql).run(...(args as unknown[])).changes,
    get: <T>(sql: string, args: readonly unknown[]) => prep(sql).get(...(args as unknown[])) as T | undefined,
    all: <T>(sql: string, args: readonly unknown[]) => prep(sql).all(...(args as unknown[])) as T[],
    exec: (sql) => void db.exec(sql),
  };
}

/** A connection of its own to the node's database, on the fastest driver it allows. */
export function openConn(database: { filePath: string | null; url: string; authToken?: string | undefined }): SqlConn {
  if (database.filePath) {
    const db = openNative(database.filePath);
    const e = nativeExec(db);
    return {
      ...e,
      async transaction<T>(fn: () => Promise<T>): Promise<T> {
        db.exec('BEGIN IMMEDIATE');
        try {
          const r = await fn();
          db.exec('COMMIT');
          return r;
        } catch (err) {
          if (db.inTransaction) db.exec('ROLLBACK');
          throw err;
        }
      },
      async write(stmts: readonly Write[], opts: { guard?: number } = {}): Promise<number[]> {
        if (!stmts.length) return [];
        db.exec('BEGIN IMMEDIATE');
        try {
          const out: number[] = [];
          for (const [sql, args] of stmts) {
            out.push(e.run(sql, args) as number);
            if (out.length - 1 === opts.guard && out[out.length - 1] === 0) {
              db.exec('ROLLBACK');
              return out;
            }
          }
          db.exec('COMMIT');
          return out;
        } catch (err) {
          if (db.inTransaction) db.exec('ROLLBACK');
          throw err;
        }
      },
      close: () => db.close(),
    };
  }
  // The remote client (HTTP, WebSocket) is loaded on first use: a node on a file never loads it.
  let loading: Promise<Client> | null = null;
  let closed = false;
  const remote = (): Promise<Client> => {
    if (closed) return Promise.reject(new Error('the connection is closed'));
    return (loading ??= import('@libsql/client').then((m) =>
      m.createClient({ url: database.url, ...(database.authToken ? { authToken: database.authToken } : {}), timeout: BUSY_TIMEOUT_MS }),
    ));
  };
  let tx: Transaction | null = null;
  const on = async () => tx ?? (await remote());
  return {
    run: async (sql, args) => (await (await on()).execute({ sql, args: args as never })).rowsAffected,
    get: async <T>(sql: string, args: readonly unknown[]) => (await (await on()).execute({ sql, args: args as never })).rows[0] as T | undefined,
    all: async <T>(sql: string, args: readonly unknown[]) => (await (await on()).execute({ sql, args: args as never })).rows as unknown as T[],
    exec: async (sql) => void (await (await on()).execute(sql)),
    async transaction<T>(fn: () => Promise<T>): Promise<T> {
      tx = await (await remote()).transaction('write');
      try {
        const r = await fn();
        await tx.commit();
        return r;
      } catch (err) {
        if (!tx.closed) await tx.rollback();
        throw err;
      } finally {
        tx = null;
      }
    },
    async write(stmts: readonly Write[], opts: { guard?: number } = {}): Promise<number[]> {
      if (!stmts.length) return [];
      if (opts.guard === undefined) {
        const rs = await (await remote()).batch(
          stmts.map(([sql, args]) => ({ sql, args: args as never })),
          'write',
        );
        return rs.map((r) => r.rowsAffected);
      }
      const t = await (await remote()).transaction('write');
      try {
        const out: number[] = [];
        for (const [sql, args] of stmts) {
          out.push((await t.execute({ sql, args: args as never })).rowsAffected);
          if (out.length - 1 === opts.guard && out[out.length - 1] === 0) {
            await t.rollback();
            return out;
          }
        }
        await t.commit();
        return out;
      } finally {
        t.close();
      }
    },
    close: () => {
      closed = true;
      // Closed once made, also when it is still loading.
      void loading?.then((c) => c.close()).catch(() => {});
    },
  };
}
