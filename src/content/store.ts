import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { mkdir, rename, rm, stat, statfs } from 'node:fs/promises';
import { join } from 'node:path';

export const SHA256 = /^[0-9a-f]{64}$/;

/**
 * Update files on disk, addressed by SHA-256: `objects/ab/<sha256>` holds only
 * verified files; `partial/<sha256>.part` holds downloads in progress and is never
 * served. A file moves from partial to objects by rename, after its full hash
 * matched, so a reader sees a whole verified file or nothing.
 */
export class ContentStore {
  constructor(readonly root: string) {}

  objectPath(sha256: string): string {
    if (!SHA256.test(sha256)) throw new Error(`not a sha256: ${sha256}`);
    return join(this.root, 'objects', sha256.slice(0, 2), sha256);
  }

  partialPath(sha256: string): string {
    if (!SHA256.test(sha256)) throw new Error(`not a sha256: ${sha256}`);
    return join(this.root, 'partial', `${sha256}.part`);
  }

  async ensureDirs(): Promise<void> {
    await mkdir(join(this.root, 'objects'), { recursive: true });
    await mkdir(join(this.root, 'partial'), { recursive: true });
  }

  /** Bytes of a partial download already on disk (0 when none). */
  async partialSize(sha256: string): Promise<number> {
    try {
      return (await stat(this.partialPath(sha256))).size;
    } catch {
      return 0;
    }
  }

  /** Makes a verified partial file visible. */
  async commit(sha256: string): Promise<void> {
    const dest = this.objectPath(sha256);
    await mkdir(join(this.root, 'objects', sha256.slice(0, 2)), { recursive: true });
    await rename(this.partialPath(sha256), dest);
  }

  async remove(sha256: string): Promise<number> {
    let freed = 0;
    for (const p of [this.objectPath(sha256), this.partialPath(sha256)]) {
      try {
        freed += (await stat(p)).size;
        await rm(p, { force: true });
      } catch {
        /* not there */
      }
    }
    return freed;
  }

  async objectSize(sha256: string): Promise<number | null> {
    try {
      return (await stat(this.objectPath(sha256))).size;
    } catch {
      return null;
    }
  }

  async freeBytes(): Promise<number> {
    await this.ensureDirs();
    const s = await statfs(this.root);
    return s.bavail * s.bsize;
  }
}

/** SHA-256 of a file (or of its first `length` bytes), streamed. */
export async function hashFile(path: string, length?: number): Promise<string> {
  const hash = createHash('sha256');
  if (length === 0) return hash.digest('hex');
  for await (const chunk of createReadStream(path, length !== undefined ? { end: length - 1 } : {})) hash.update(chunk as Buffer);
  return hash.digest('hex');
}
