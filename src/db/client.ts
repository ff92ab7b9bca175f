import { BUSY_TIMEOUT_MS } from './native.js';
import { chmodSync, closeSync, mkdirSync, openSync } from 'node:fs';
import { dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
// A file database needs only the client's SQLite part; the remote one (HTTP, WebSocket) is loaded for a server URL only.
import { createClient as createFileClient, type Client } from '@libsql/client/sqlite3';
import type { LibSQLDatabase } from 'drizzle-orm/libsql';
import { drizzle } from 'drizzle-orm/libsql/sqlite3';
import { migrate } from 'drizzle-orm/libsql/migrator';
import * as schema from './schema.js';

export type Schema = typeof schema;
export type Orm = LibSQLDatabase<Schema>;

/**
 * One node's database. `orm` (drizzle over @libsql/client) serves everything but
 * the hot paths; those open their own `libsql` binding connection on the same file
 * (see catalog/import-worker.ts), which `filePath` makes possible. A remote libsql
 * server has no `filePath`, and the hot paths fall back to the client.
 */
export interface Database {
  readonly url: string;
  readonly authToken: string | undefined;
  /** Absolute path of the SQLite file, or null for a remote database. */
  readonly filePath: string | null;
  readonly client: Client;
  readonly orm: Orm;
  /**
   * Reads that must see what other connections (the assessor, imports, the
   * replica writer) just committed. The client's pool of file connections was
   * seen to keep one connection on an old snapshot for seconds after another
   * connection committed (libsql 0.5.29 / @libsql/client 0.18.0: statements are
   * reset before they run, not after); a client of one connection used only for
   * plain reads (never a transaction) has not shown it. Same as `orm` remotely.
   */
  readonly reader: Orm;
  close(): void;
}

export const MIGRATIONS_DIR = fileURLToPath(new URL('../../../migrations', import.meta.url));

/** Path of a `file:` URL (`file:rel/x.db`, `file:/abs/x.db`, `file:///abs/x.db`), else null. */
export function filePathOf(url: string): string | null {
  if (!url.startsWith('file:')) return null;
  let p = url.slice('file:'.length);
  if (p.startsWith('//')) p = p.slice(2);
  const q = p.indexOf('?');
  return q >= 0 ? p.slice(0, q) : p;
}

/**
 * Opens the database and applies pending migrations. A file database is put in
 * WAL mode (readers never block the writer) with synchronous=FULL: an acknowledged
 * write survives a power cut.
 */
export async function openDatabase(url: string, authToken?: string): Promise<Database> {
  const filePath = filePathOf(url);
  if (filePath) {
    mkdirSync(dirname(filePath), { recursive: true, mode: 0o700 });
    // Created 0600 before SQLite opens it (its -wal and -shm files take the same mode); an older, wider one is narrowed.
    closeSync(openSync(filePath, 'a', 0o600));
    chmodSync(filePath, 0o600);
  }
  const config = { url, ...(authToken ? { authToken } : {}), timeout: BUSY_TIMEOUT_MS, concurrency: 4 };
  const client = filePath ? createFileClient(config) : (await import('@libsql/client')).createClient(config);
  try {
    if (filePath) {
      await client.execute('PRAGMA journal_mode = WAL');
      await client.execute('PRAGMA synchronous = FULL');
    }
    const orm = drizzle(client, { schema });
    await migrate(orm, { migrationsFolder: MIGRATIONS_DIR });
    const readClient = filePath ? createFileClient({ url, timeout: BUSY_TIMEOUT_MS, concurrency: 1 }) : client;
    const reader = filePath ? drizzle(readClient, { schema }) : orm;
    return {
      url,
      authToken,
      filePath,
      client,
      orm,
      reader,
      close: () => {
        if (readClient !== client) readClient.close();
        client.close();
      },
    };
  } catch (err) {
    client.close();
    throw err;
  }
}
