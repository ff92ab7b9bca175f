import { constants } from 'node:fs';
import { access, mkdir, stat, statfs } from 'node:fs/promises';
import { dirname, isAbsolute, join, resolve } from 'node:path';
import { eq } from 'drizzle-orm';
import type { Orm } from '../db/index.js';
import { AppError } from '../lib/errors.js';
import { changelog } from '../changelog/index.js';
import type { Publisher } from '../catalog/severities.js';
import type { Reader } from '../catalog/replica.js';
import { settings } from './schema.js';

/**
 * Settings that replicate down the tree (set at the root, read-only below it).
 * Each feature that owns such a setting registers its key here.
 */
export const REPLICATED_SETTINGS = new Set<string>();

/** Every replicated setting as its change-log payload (for a snapshot). */
export async function replicatedSettings(db: Reader, nodeId: string): Promise<{ key: string; payload: SettingPayload }[]> {
  const rows = await db.select().from(settings);
  return rows
    .filter((r) => REPLICATED_SETTINGS.has(r.key))
    .map((r) => ({ key: r.key, payload: { value: JSON.parse(r.value) as unknown, origin: r.origin || nodeId } }));
}

/** The change-log payload of a replicated setting. */
export interface SettingPayload {
  value: unknown;
  origin: string;
}

export interface StorageSetting {
  path: string;
}

export interface StorageStatus extends StorageSetting {
  writable: boolean;
  freeBytes: number;
  totalBytes: number;
}

/** Node settings stored as JSON documents by key. */
export class SettingsService {
  #storagePath: string | null = null;

  constructor(
    private readonly orm: Orm,
    private readonly dataDir: string,
    /** Replicated settings are appended to the change log (none: a tool that only reads). */
    private readonly publisher: Publisher | null = null,
  ) {}

  async get<T>(key: string): Promise<T | undefined> {
    const row = await this.orm.query.settings.findFirst({ where: eq(settings.key, key) });
    return row ? (JSON.parse(row.value) as T) : undefined;
  }

  /** The node a setting was replicated from, or null for this node's own (or unset). */
  async origin(key: string): Promise<string | null> {
    const row = await this.orm.query.settings.findFirst({ where: eq(settings.key, key) });
    return row?.origin ? row.origin : null;
  }

  /**
   * Saves a setting. A replicated one is refused (409 naming its origin) when it
   * came from upstream, and otherwise appended to the change log in the same
   * transaction, so the subtree follows.
   */
  async put(key: string, value: unknown, by: string | null): Promise<void> {
    const now = Date.now();
    const json = JSON.stringify(value);
    const replicated = REPLICATED_SETTINGS.has(key);
    await this.orm.transaction(async (tx) => {
      if (replicated) {
        const row = await tx.query.settings.findFirst({ where: eq(settings.key, key) });
        if (row?.origin)
          throw new AppError('conflict', `setting "${key}" is replicated from node ${row.origin} and is read-only here; change it at its origin`, {
            origin: row.origin,
          });
      }
      await tx
        .insert(settings)
        .values({ key, value: json, updatedAt: now, updatedBy: by, origin: '' })
        .onConflictDoUpdate({ target: settings.key, set: { value: json, updatedAt: now, updatedBy: by } });
      if (replicated && this.publisher) {
        const payload: SettingPayload = { value, origin: this.publisher.nodeId };
        await changelog.append(tx, { kind: 'setting', key, op: 'upsert', languages: '', payload: JSON.stringify(payload) }, now);
      }
    });
    if (replicated) this.publisher?.notify();
  }

  /** Where update files go: `<data>/content` until an admin sets another location. */
  async storagePath(): Promise<string> {
    this.#storagePath ??= ((await this.get<StorageSetting>('storage')) ?? { path: join(this.dataDir, 'content') }).path;
    return this.#storagePath;
  }

  async storage(): Promise<StorageStatus> {
    return describeStorage(await this.storagePath());
  }

  /**
   * Sets the storage location: created if missing and checked writable before it
   * is saved, so a bad path is refused and the old setting stays.
   */
  async setStorage(path: string, by: string | null): Promise<StorageStatus> {
    const abs = isAbsolute(path) ? path : resolve(this.dataDir, path);
    try {
      await ensureDir(abs);
      await access(abs, constants.W_OK | constants.R_OK);
    } catch (err) {
      throw new AppError('storage-unusable', `cannot use ${abs}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
    }
    await this.put('storage', { path: abs }, by);
    this.#storagePath = abs;
    return describeStorage(abs);
  }
}

/**
 * mkdir -p, one level at a time. Node's recursive mkdir can loop forever on some
 * file systems (procfs answers ENOENT for a parent that exists), which would hang
 * the request; this walks up once and down once.
 */
export async function ensureDir(path: string): Promise<void> {
  const missing: string[] = [];
  let p = path;
  for (;;) {
    try {
      await mkdir(p);
      break;
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'EEXIST') break;
      if (code !== 'ENOENT' || dirname(p) === p || missing.length > 64) throw err;
      missing.push(p);
      p = dirname(p);
    }
  }
  for (const dir of missing.reverse()) {
    try {
      await mkdir(dir);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    }
  }
  if (!(await stat(path)).isDirectory()) throw Object.assign(new Error(`${path} is not a directory`), { code: 'ENOTDIR' });
}

async function describeStorage(path: string): Promise<StorageStatus> {
  let writable = true;
  try {
    await ensureDir(path);
    await access(path, constants.W_OK);
  } catch {
    writable = false;
  }
  let freeBytes = 0;
  let totalBytes = 0;
  try {
    const s = await statfs(path);
    freeBytes = s.bavail * s.bsize;
    totalBytes = s.blocks * s.bsize;
  } catch {
    writable = false;
  }
  return { path, writable, freeBytes, totalBytes };
}
