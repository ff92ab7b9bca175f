import { createHash } from 'node:crypto';
import { createReadStream, createWriteStream, existsSync, mkdirSync, renameSync, rmSync, statSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { AssignedFile, Assignment } from '../agent-api/assignments.js';
import { FILE_NAME } from '../delivery/installers.js';
import type { NodeConnection } from './connection.js';
import type { PatchLog } from './log.js';
import type { Progress } from './status.js';

/**
 * The agent's downloads: `<state>/downloads/<sha256>/<catalog file name>`, fetched
 * from the node, resumed with Range, verified by SHA-256 before they are kept, and
 * removed once the updates that need them are settled.
 */

export async function sha256File(path: string): Promise<string> {
  const h = createHash('sha256');
  await pipeline(createReadStream(path), h);
  return h.digest('hex');
}

export class Downloads {
  constructor(
    /** Absolute: every command line names its files by absolute path. */
    private readonly dir: string,
    private readonly connection: NodeConnection,
    private readonly log: PatchLog,
  ) {
    mkdirSync(dir, { recursive: true });
  }

  /** A settled update's files are deleted, unless another assigned update still needs one. */
  remove(done: Assignment, items: readonly Assignment[], progress: Record<string, Progress>): void {
    const needed = new Set(items.filter((i) => i !== done && !progress[i.updateId]?.settled).flatMap((i) => i.files.map((f) => f.sha256)));
    let bytes = 0;
    for (const f of done.files) {
      const dir = join(this.dir, f.sha256);
      if (needed.has(f.sha256) || !existsSync(dir)) continue;
      rmSync(dir, { recursive: true, force: true });
      bytes += f.size;
    }
    if (bytes) this.log.write(`${done.kb ? `KB${done.kb}` : done.updateId}: its downloads removed (${bytes} bytes)`);
  }

  /** `<state>/downloads/<sha256>/<catalog file name>`, absolute; a file of the old layout (`downloads/<sha256>`) is moved there. */
  path(f: AssignedFile): string {
    if (!FILE_NAME.test(f.name)) throw new Error(`refused the file name ${JSON.stringify(f.name)}: not a plain file name`);
    const dir = join(this.dir, f.sha256);
    const path = join(dir, f.name);
    if (existsSync(dir) && !statSync(dir).isDirectory()) {
      renameSync(dir, `${dir}.old`);
      mkdirSync(dir, { recursive: true });
      renameSync(`${dir}.old`, path);
    }
    if (existsSync(`${dir}.part`)) {
      mkdirSync(dir, { recursive: true });
      renameSync(`${dir}.part`, `${path}.part`);
    }
    return path;
  }

  /** Fetches a file from the node into `path`, resuming a partial download with Range; verified before it is kept. */
  async fetch(f: AssignedFile, path: string, signal: AbortSignal): Promise<void> {
    mkdirSync(dirname(path), { recursive: true });
    const part = `${path}.part`;
    let have = existsSync(part) ? statSync(part).size : 0;
    if (have > f.size) {
      rmSync(part);
      have = 0;
    }
    const res = await this.connection.fetch(f.url, { headers: have ? { range: `bytes=${have}-` } : {}, timeoutMs: 24 * 3_600_000 }, signal);
    if (res.status !== 200 && res.status !== 206) {
      const text = await res.text().catch(() => '');
      throw new Error(`HTTP ${res.status}${text ? ` ${text.slice(0, 200)}` : ''}`);
    }
    const append = res.status === 206;
    if (append) this.log.write(`${f.name}: resuming at byte ${have} of ${f.size}`);
    await pipeline(Readable.fromWeb(res.body as never), createWriteStream(part, { flags: append ? 'a' : 'w' }), { signal });
    const size = statSync(part).size;
    if (size !== f.size) throw new Error(`got ${size} of ${f.size} bytes`);
    const got = await sha256File(part);
    if (got !== f.sha256) {
      rmSync(part, { force: true });
      throw new Error(`sha256 mismatch: got ${got}, expected ${f.sha256}; refused`);
    }
    renameSync(part, path);
  }
}
