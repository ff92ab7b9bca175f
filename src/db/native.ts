import Database from 'libsql';
import { BUSY_TIMEOUT_MS } from './client.js';

export type NativeDb = InstanceType<typeof Database>;

/**
 * A direct `libsql` binding connection for hot paths: prepared statements and a
 * synchronous transaction, about 2.5x faster than the client for bulk writes
 * (ARCHITECTURE.md). Each connection sets its own pragmas; synchronous=FULL keeps
 * every commit durable.
 */
export function openNative(filePath: string): NativeDb {
  const db = new Database(filePath, { timeout: BUSY_TIMEOUT_MS });
  db.exec('PRAGMA synchronous = FULL');
  return db;
}
