import { opendir, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { and, asc, eq, gt, sql, type SQL } from 'drizzle-orm';
import type { Orm } from '../db/index.js';
import type { Logger } from '../lib/log.js';
import { AppError } from '../lib/errors.js';
import { languageMatchDrizzle } from '../lib/languages-drizzle.js';
import { updateFiles } from '../catalog/schema.js';
import { existingUpdates } from '../catalog/read.js';
import { contentFiles, downloadMarks } from './schema.js';
import { type ContentStore, SHA256, hashFile } from './store.js';
import type { Downloader } from './downloader.js';
import type { ContentSettings } from './settings.js';

export type FileState = 'pending' | 'downloading' | 'verified' | 'failed';

export interface VerifyJob {
  id: number;
  state: 'running' | 'done' | 'failed';
  startedAt: string;
  finishedAt: string | null;
  files: number;
  filesChecked: number;
  bytes: number;
  bytesChecked: number;
  corrupt: number;
  missing: number;
  error: string | null;
}

/**
 * What the node needs, and what is on disk. "Needed" is a SQL set computed from the
 * catalog, the node's languages, the download marks and the enabled policies' updates: reconciling inserts the
 * missing rows in one statement, so it never holds the catalog in memory.
 */
export class ContentService {
  #verify: VerifyJob | null = null;
  #verifySeq = 0;

  constructor(
    private readonly orm: Orm,
    private readonly languages: () => readonly string[],
    private readonly store: () => Promise<ContentStore>,
    private readonly settings: () => Promise<ContentSettings>,
    private readonly downloader: Downloader,
    private readonly logger: Logger,
  ) {}

  /** The files this node needs: live updates, its languages (+ neutral), and the `need` mode. */
  neededSql(s: ContentSettings): SQL {
    const lang = languageMatchDrizzle(sql.raw('f.language'), this.languages());
    const marked =
      s.need === 'marked'
        ? sql` AND f.update_id IN (SELECT update_id FROM download_marks UNION SELECT pu.update_id FROM policy_updates pu JOIN policies p ON p.id = pu.policy_id AND p.enabled = 1)`
        : sql``;
    return sql`SELECT f.sha256 AS sha256, max(f.size) AS size, min(f.url) AS url, min(f.name) AS name
      FROM update_files f JOIN updates u ON u.id = f.update_id
      WHERE u.expired = 0 AND (${lang})${marked} GROUP BY f.sha256`;
  }

  /** Adds rows for newly needed files and wakes the downloader. Returns how many were added. */
  async reconcile(): Promise<number> {
    const s = await this.settings();
    const now = Date.now();
    const res = await this.orm.run(sql`INSERT INTO content_files (sha256, size, url, name, state, bytes_done, attempts, next_attempt_at, created_at, updated_at)
      SELECT n.sha256, n.size, n.url, n.name, 'pending', 0, 0, 0, ${now}, ${now} FROM (${this.neededSql(s)}) n WHERE true
      ON CONFLICT(sha256) DO NOTHING`);
    const added = Number(res.rowsAffected ?? 0);
    if (added > 0) this.logger.info({ added }, 'new files needed');
    this.downloader.kick();
    return added;
  }

  /** A file this node holds verified (what it may serve to a child or an agent), or null. */
  async verifiedFile(sha256: string): Promise<{ size: number; path: string } | null> {
    const row = await this.orm.query.contentFiles.findFirst({ where: eq(contentFiles.sha256, sha256) });
    if (row?.state !== 'verified') return null;
    return { size: row.size, path: (await this.store()).objectPath(sha256) };
  }

  async summary() {
    const rows = await this.orm
      .select({
        state: contentFiles.state,
        n: sql<number>`count(*)`,
        bytes: sql<number>`sum(${contentFiles.size})`,
        done: sql<number>`sum(${contentFiles.bytesDone})`,
      })
      .from(contentFiles)
      .groupBy(contentFiles.state);
    const by = (st: FileState) => rows.find((r) => r.state === st);
    const store = await this.store();
    let freeBytes = 0;
    try {
      freeBytes = await store.freeBytes();
    } catch {
      /* storage unusable: reported as 0 free */
    }
    const s = await this.settings();
    const files = rows.reduce((a, r) => a + Number(r.n), 0);
    const bytes = rows.reduce((a, r) => a + Number(r.bytes ?? 0), 0);
    const status = this.downloader.status();
    // Bytes on disk: whole verified files, partial bytes of the others, and for the
    // files in flight the downloader's live count rather than the last saved one.
    const live = new Map(status.active.map((a) => [a.sha256, a.bytesDone]));
    const downloadingRows = await this.orm
      .select({ sha256: contentFiles.sha256, bytesDone: contentFiles.bytesDone })
      .from(contentFiles)
      .where(eq(contentFiles.state, 'downloading'));
    const bytesDone =
      Number(by('verified')?.bytes ?? 0) +
      Number(by('pending')?.done ?? 0) +
      Number(by('failed')?.done ?? 0) +
      downloadingRows.reduce((a, r) => a + (live.get(r.sha256) ?? r.bytesDone), 0);
    return {
      files,
      bytes,
      verified: Number(by('verified')?.n ?? 0),
      failed: Number(by('failed')?.n ?? 0),
      pending: Number(by('pending')?.n ?? 0),
      downloading: Number(by('downloading')?.n ?? 0),
      verifiedBytes: Number(by('verified')?.bytes ?? 0),
      bytesDone: Math.min(bytes, bytesDone),
      freeBytes,
      reserveBytes: s.reserveBytes,
      storagePath: store.root,
      need: s.need,
      downloader: status,
      verify: this.#verify,
    };
  }

  async listFiles(q: { state?: FileState; update?: string; limit: number; cursor?: string }) {
    if (q.update) {
      if (!(await existingUpdates(this.orm, [q.update])).has(q.update)) throw new AppError('not-found', `no update ${q.update}`);
      const rows = await this.orm
        .select({ f: updateFiles, c: contentFiles })
        .from(updateFiles)
        .leftJoin(contentFiles, eq(contentFiles.sha256, updateFiles.sha256))
        .where(and(eq(updateFiles.updateId, q.update), q.state ? eq(contentFiles.state, q.state) : undefined))
        .orderBy(asc(updateFiles.sha256));
      return {
        items: rows.map(({ f, c }) => ({
          sha256: f.sha256,
          size: f.size,
          name: f.name,
          language: f.language,
          url: f.url,
          needed: c !== null,
          state: (c?.state ?? 'pending') as FileState,
          bytesDone: this.#live(f.sha256, c?.bytesDone ?? 0),
          attempts: c?.attempts ?? 0,
          lastError: c?.lastError ?? null,
          nextAttemptAt: c && c.state === 'failed' ? new Date(c.nextAttemptAt).toISOString() : null,
          verifiedAt: c?.verifiedAt ? new Date(c.verifiedAt).toISOString() : null,
        })),
        nextCursor: null,
      };
    }
    const rows = await this.orm
      .select()
      .from(contentFiles)
      .where(and(q.state ? eq(contentFiles.state, q.state) : undefined, q.cursor ? gt(contentFiles.sha256, q.cursor) : undefined))
      .orderBy(asc(contentFiles.sha256))
      .limit(q.limit + 1);
    const items = rows.slice(0, q.limit).map((c) => ({
      sha256: c.sha256,
      size: c.size,
      name: c.name,
      url: c.url,
      needed: true,
      state: c.state,
      bytesDone: this.#live(c.sha256, c.bytesDone),
      attempts: c.attempts,
      lastError: c.lastError,
      nextAttemptAt: c.state === 'failed' ? new Date(c.nextAttemptAt).toISOString() : null,
      verifiedAt: c.verifiedAt ? new Date(c.verifiedAt).toISOString() : null,
    }));
    return { items, nextCursor: rows.length > q.limit ? items[items.length - 1]!.sha256 : null };
  }

  /** Bytes done of a file, live from the downloader while it is in flight. */
  #live(sha256: string, stored: number): number {
    return this.downloader.status().active.find((a) => a.sha256 === sha256)?.bytesDone ?? stored;
  }

  /** Marks updates for download (all or nothing) and/or puts failed files back in the queue. */
  async requestDownloads(updateIds: string[], retryFailed: boolean, by: string | null): Promise<{ marked: number; retried: number; added: number }> {
    let marked = 0;
    if (updateIds.length) {
      const found = await existingUpdates(this.orm, updateIds);
      const missing = updateIds.filter((id) => !found.has(id));
      if (missing.length) throw new AppError('not-found', `no update ${missing.slice(0, 5).join(', ')}`, { missing });
      const now = Date.now();
      await this.orm
        .insert(downloadMarks)
        .values(updateIds.map((updateId) => ({ updateId, markedAt: now, markedBy: by })))
        .onConflictDoNothing();
      marked = updateIds.length;
      // Asking again for a failed file of these updates is a retry of it.
      await this.orm.run(sql`UPDATE content_files SET state = 'pending', attempts = 0, next_attempt_at = 0, updated_at = ${now}
        WHERE state = 'failed' AND sha256 IN (SELECT sha256 FROM update_files WHERE update_id IN (${sql.join(
          updateIds.map((i) => sql`${i}`),
          sql`, `,
        )}))`);
    }
    let retried = 0;
    if (retryFailed) {
      const r = await this.orm.run(
        sql`UPDATE content_files SET state = 'pending', attempts = 0, next_attempt_at = 0, updated_at = ${Date.now()} WHERE state = 'failed'`,
      );
      retried = Number(r.rowsAffected ?? 0);
    }
    const added = await this.reconcile();
    return { marked, retried, added };
  }

  async unmark(updateId: string): Promise<void> {
    const r = await this.orm.delete(downloadMarks).where(eq(downloadMarks.updateId, updateId));
    if (!r.rowsAffected) throw new AppError('not-found', `update ${updateId} is not marked for download`);
  }

  /**
   * Garbage collection: files no longer needed (their updates expired, were unmarked,
   * or left the node's languages), and strays on disk with no row. A dry run (the
   * default) only reports what and how much.
   */
  async gc(dryRun: boolean): Promise<{ dryRun: boolean; count: number; bytes: number; files: { sha256: string; bytes: number }[] }> {
    const s = await this.settings();
    const store = await this.store();
    const out: { sha256: string; bytes: number }[] = [];
    let count = 0;
    let bytes = 0;
    const note = (sha256: string, b: number) => {
      count++;
      bytes += b;
      if (out.length < 1000) out.push({ sha256, bytes: b });
    };
    // Rows not in the needed set, a page at a time.
    let after = '';
    for (;;) {
      const page = await this.orm.all<{
        sha256: string;
        state: string;
        size: number;
        bytes_done: number;
      }>(sql`SELECT c.sha256, c.state, c.size, c.bytes_done FROM content_files c
        WHERE c.sha256 > ${after} AND c.sha256 NOT IN (SELECT sha256 FROM (${this.neededSql(s)})) ORDER BY c.sha256 LIMIT 500`);
      if (!page.length) break;
      for (const r of page) {
        const onDisk = (await store.objectSize(r.sha256)) ?? 0;
        const partial = await store.partialSize(r.sha256);
        note(r.sha256, onDisk + partial);
        if (!dryRun) {
          await store.remove(r.sha256);
          await this.orm.delete(contentFiles).where(eq(contentFiles.sha256, r.sha256));
        }
      }
      after = page[page.length - 1]!.sha256;
    }
    // Strays: objects and partials on disk without a row.
    for (const sub of ['objects', 'partial']) {
      const dirs = sub === 'objects' ? await listDirs(join(store.root, 'objects')) : [join(store.root, 'partial')];
      for (const dir of dirs) {
        let handle: Awaited<ReturnType<typeof opendir>>;
        try {
          handle = await opendir(dir);
        } catch {
          continue;
        }
        for await (const ent of handle) {
          const sha = ent.name.replace(/\.part$/, '');
          if (!SHA256.test(sha)) continue;
          const row = await this.orm.select({ sha256: contentFiles.sha256 }).from(contentFiles).where(eq(contentFiles.sha256, sha)).limit(1);
          if (row.length) continue;
          const p = join(dir, ent.name);
          const size = (await stat(p)).size;
          note(sha, size);
          if (!dryRun) await rm(p, { force: true });
        }
      }
    }
    if (!dryRun && count) this.logger.info({ count, bytes }, 'garbage collected');
    return { dryRun, count, bytes, files: out };
  }

  get verifyJob(): VerifyJob | null {
    return this.#verify;
  }

  /**
   * Re-hashes every verified file in the background. A missing or corrupt file is
   * deleted and queued again, so the downloader repairs it.
   */
  startVerify(): VerifyJob {
    if (this.#verify?.state === 'running') throw new AppError('conflict', `verification ${this.#verify.id} is running`, { job: this.#verify });
    const job: VerifyJob = {
      id: ++this.#verifySeq,
      state: 'running',
      startedAt: new Date().toISOString(),
      finishedAt: null,
      files: 0,
      filesChecked: 0,
      bytes: 0,
      bytesChecked: 0,
      corrupt: 0,
      missing: 0,
      error: null,
    };
    this.#verify = job;
    void this.#runVerify(job).catch((err) => {
      job.state = 'failed';
      job.error = (err as Error).message;
      job.finishedAt = new Date().toISOString();
      this.logger.error({ err }, 'verification failed');
    });
    return job;
  }

  async #runVerify(job: VerifyJob): Promise<void> {
    const totals = await this.orm
      .select({ n: sql<number>`count(*)`, b: sql<number>`coalesce(sum(${contentFiles.size}), 0)` })
      .from(contentFiles)
      .where(eq(contentFiles.state, 'verified'));
    job.files = Number(totals[0]?.n ?? 0);
    job.bytes = Number(totals[0]?.b ?? 0);
    const store = await this.store();
    let after = '';
    for (;;) {
      const page = await this.orm
        .select({ sha256: contentFiles.sha256, size: contentFiles.size })
        .from(contentFiles)
        .where(and(eq(contentFiles.state, 'verified'), gt(contentFiles.sha256, after)))
        .orderBy(asc(contentFiles.sha256))
        .limit(200);
      if (!page.length) break;
      for (const f of page) {
        const size = await store.objectSize(f.sha256);
        let bad: 'missing' | 'corrupt' | null = null;
        if (size === null) bad = 'missing';
        else if (size !== f.size || (await hashFile(store.objectPath(f.sha256))) !== f.sha256) bad = 'corrupt';
        if (bad) {
          job[bad]++;
          await store.remove(f.sha256);
          await this.orm
            .update(contentFiles)
            .set({ state: 'pending', bytesDone: 0, attempts: 0, nextAttemptAt: 0, verifiedAt: null, lastError: `verify: ${bad}`, updatedAt: Date.now() })
            .where(eq(contentFiles.sha256, f.sha256));
          this.logger.warn({ sha256: f.sha256, problem: bad }, 'stored file failed verification; downloading it again');
        }
        job.filesChecked++;
        job.bytesChecked += f.size;
      }
      after = page[page.length - 1]!.sha256;
    }
    job.state = 'done';
    job.finishedAt = new Date().toISOString();
    this.downloader.kick();
  }
}

async function listDirs(root: string): Promise<string[]> {
  const out: string[] = [];
  try {
    for await (const ent of await opendir(root)) if (ent.isDirectory()) out.push(join(root, ent.name));
  } catch {
    /* no objects yet */
  }
  return out;
}
