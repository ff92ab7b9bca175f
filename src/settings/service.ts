import { constants } from 'node:fs';
import { access, mkdir, statfs } from 'node:fs/promises';
import { isAbsolute, join, resolve } from 'node:path';
import { eq } from 'drizzle-orm';
import type { Orm } from '../db/index.js';
import { AppError } from '../lib/errors.js';
import { settings } from './schema.js';

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
  constructor(
    private readonly orm: Orm,
    private readonly dataDir: string,
  ) {}

  async get<T>(key: string): Promise<T | undefined> {
    const row = await this.orm.query.settings.findFirst({ where: eq(settings.key, key) });
    return row ? (JSON.parse(row.value) as T) : undefined;
  }

  async put(key: string, value: unknown, by: string | null): Promise<void> {
    const now = Date.now();
    await this.orm
      .insert(settings)
      .values({ key, value: JSON.stringify(value), updatedAt: now, updatedBy: by })
      .onConflictDoUpdate({ target: settings.key, set: { value: JSON.stringify(value), updatedAt: now, updatedBy: by } });
  }

  /** Where update files go: `<data>/content` until an admin sets another location. */
  async storage(): Promise<StorageStatus> {
    const s = (await this.get<StorageSetting>('storage')) ?? { path: join(this.dataDir, 'content') };
    return describeStorage(s.path);
  }

  /**
   * Sets the storage location: created if missing and checked writable before it
   * is saved, so a bad path is refused and the old setting stays.
   */
  async setStorage(path: string, by: string | null): Promise<StorageStatus> {
    const abs = isAbsolute(path) ? path : resolve(this.dataDir, path);
    try {
      await mkdir(abs, { recursive: true });
      await access(abs, constants.W_OK | constants.R_OK);
    } catch (err) {
      throw new AppError('storage-unusable', `cannot use ${abs}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
    }
    await this.put('storage', { path: abs }, by);
    return describeStorage(abs);
  }
}

async function describeStorage(path: string): Promise<StorageStatus> {
  let writable = true;
  try {
    await mkdir(path, { recursive: true });
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
