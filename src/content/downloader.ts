import { createHash } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { truncate } from 'node:fs/promises';
import { once } from 'node:events';
import PQueue from 'p-queue';
import { and, asc, eq, gt, inArray, lt, lte, sql } from 'drizzle-orm';
import type { Orm } from '../db/index.js';
import type { Logger } from '../lib/log.js';
import { describeError } from '../lib/errors.js';
import { contentFiles } from './schema.js';
import type { ContentStore } from './store.js';
import { RateLimit, throttle } from './throttle.js';
import type { ContentSettings } from './settings.js';
import { backoffMs } from '../lib/backoff.js';

export interface DownloaderStatus {
  state: 'idle' | 'downloading' | 'paused' | 'stopped';
  /** Why the downloader is paused (e.g. the free-space reserve). */
  reason: string | null;
  active: { sha256: string; bytesDone: number; size: number }[];
}

class DiskShort extends Error {}

/**
 * The source asks to be asked again later (the parent's replication rules hold
 * files back): not a failed attempt; the file waits until `retryAt`.
 */
export class DeferredError extends Error {
  constructor(
    message: string,
    readonly retryAt: number,
  ) {
    super(message);
  }
}

/** Where a child node reads files: its parent, from an offset (replication/child.ts). */
export type UpstreamSource = (sha256: string, offset: number, signal: AbortSignal) => AsyncIterable<Uint8Array>;

/**
 * Fetches the files the node needs from their catalog URLs, a bounded number at a
 * time (p-queue), under a global and a per-host bytes/s limit. Each file resumes
 * from its partial bytes with an HTTP Range request (restarting from zero when the
 * server ignores Range), is hashed on the way, and becomes visible only when its
 * full SHA-256 matches. Failures are retried with exponential backoff and jitter up
 * to a ceiling; a hash mismatch deletes the data. Nothing starts when the disk's
 * free space would fall below the reserve.
 */
export class Downloader {
  #queue = new PQueue({ concurrency: 4 });
  #inFlight = new Map<string, { bytesDone: number; size: number; abort: AbortController }>();
  #global = new RateLimit(0);
  #hosts = new Map<string, RateLimit>();
  #timer: NodeJS.Timeout | null = null;
  #stopped = true;
  #passRunning = false;
  #passAgain = false;
  #paused: string | null = null;
  #listeners = new Set<() => void>();

  constructor(
    private readonly orm: Orm,
    private readonly store: () => Promise<ContentStore>,
    private readonly settings: () => Promise<ContentSettings>,
    private readonly logger: Logger,
    /** Set on a child node: files come from the parent, never from the vendor. */
    private readonly upstream: UpstreamSource | null = null,
    /** Called once a file is verified and servable (agents' assignments may now include it). */
    private readonly onVerified: (sha256: string) => void = () => {},
    /** The time a file is stamped verified with (the node's clock). */
    private readonly now: () => number = Date.now,
  ) {}

  async start(): Promise<void> {
    this.#stopped = false;
    // A download cut by a crash or stop resumes from its partial bytes.
    await this.orm.update(contentFiles).set({ state: 'pending', updatedAt: Date.now() }).where(eq(contentFiles.state, 'downloading'));
    this.kick();
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    if (this.#timer) clearTimeout(this.#timer);
    this.#queue.clear();
    for (const f of this.#inFlight.values()) f.abort.abort(new Error('node stopping'));
    await this.#queue.onIdle();
  }

  /** The upstream reconnected (perhaps under new rules): files it deferred are asked for now. */
  async retryDeferred(): Promise<void> {
    const now = Date.now();
    await this.orm
      .update(contentFiles)
      .set({ nextAttemptAt: now })
      .where(and(eq(contentFiles.state, 'pending'), gt(contentFiles.nextAttemptAt, now)));
    this.kick();
  }

  /** Something changed (new needs, retry, settings): look for work now. */
  kick(): void {
    if (this.#stopped) return;
    if (this.#passRunning) {
      this.#passAgain = true;
      return;
    }
    this.#passRunning = true;
    this.#pass()
      .catch((err) => this.logger.error({ err }, 'download pass failed'))
      .finally(() => {
        this.#passRunning = false;
        if (this.#passAgain) {
          this.#passAgain = false;
          this.kick();
        }
      });
  }

  /** Called after every file settles (tests and the CLI's progress wait on it). */
  onChange(fn: () => void): () => void {
    this.#listeners.add(fn);
    return () => this.#listeners.delete(fn);
  }

  status(): DownloaderStatus {
    return {
      state: this.#stopped ? 'stopped' : this.#paused ? 'paused' : this.#inFlight.size > 0 ? 'downloading' : 'idle',
      reason: this.#paused,
      active: [...this.#inFlight].map(([sha256, f]) => ({ sha256, bytesDone: f.bytesDone, size: f.size })),
    };
  }

  #emit(): void {
    for (const fn of this.#listeners) fn();
  }

  #schedule(ms: number): void {
    if (this.#stopped) return;
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = setTimeout(() => this.kick(), Math.max(10, Math.min(ms, 60_000)));
    this.#timer.unref();
  }

  async #pass(): Promise<void> {
    const s = await this.settings();
    this.#queue.concurrency = s.concurrency;
    this.#global.rate = s.bytesPerSecond;
    for (const l of this.#hosts.values()) l.rate = s.perHostBytesPerSecond;
    const now = Date.now();
    const free = this.#queue.concurrency - this.#queue.pending - this.#queue.size;
    if (free > 0) {
      const rows = await this.orm
        .select()
        .from(contentFiles)
        .where(and(inArray(contentFiles.state, ['pending', 'failed']), lte(contentFiles.nextAttemptAt, now), lt(contentFiles.attempts, s.maxAttempts)))
        .orderBy(asc(contentFiles.nextAttemptAt), asc(contentFiles.sha256))
        .limit(free + this.#inFlight.size);
      for (const row of rows) {
        if (this.#inFlight.has(row.sha256) || this.#queue.pending + this.#queue.size >= this.#queue.concurrency) continue;
        const abort = new AbortController();
        this.#inFlight.set(row.sha256, { bytesDone: row.bytesDone, size: row.size, abort });
        void this.#queue.add(() =>
          this.#download(row, s, abort).finally(() => {
            this.#inFlight.delete(row.sha256);
            this.#emit();
            this.kick();
          }),
        );
      }
    }
    // Wake up for the next retry that falls due.
    const next = await this.orm
      .select({ at: sql<number>`min(${contentFiles.nextAttemptAt})` })
      .from(contentFiles)
      .where(and(inArray(contentFiles.state, ['pending', 'failed']), lt(contentFiles.attempts, s.maxAttempts)));
    const at = next[0]?.at;
    if (this.#paused) this.#schedule(5_000);
    else if (at !== null && at !== undefined) this.#schedule(Number(at) - Date.now());
  }

  #hostLimit(host: string, rate: number): RateLimit {
    let l = this.#hosts.get(host);
    if (!l) {
      l = new RateLimit(rate);
      this.#hosts.set(host, l);
    }
    return l;
  }

  async #download(row: typeof contentFiles.$inferSelect, s: ContentSettings, abort: AbortController): Promise<void> {
    const store = await this.store();
    await store.ensureDirs();
    const { sha256, size, url } = row;
    const part = store.partialPath(sha256);
    let offset = await store.partialSize(sha256);
    if (offset > size) {
      await truncate(part, 0);
      offset = 0;
    }
    const log = this.logger.child({ sha256, url });
    const setRow = (patch: Partial<typeof contentFiles.$inferInsert>) =>
      this.orm
        .update(contentFiles)
        .set({ ...patch, updatedAt: Date.now() })
        .where(eq(contentFiles.sha256, sha256));
    const flight = this.#inFlight.get(sha256)!;
    try {
      const freeBytes = await store.freeBytes();
      if (freeBytes - (size - offset) < s.reserveBytes) {
        throw new DiskShort(`free space ${freeBytes} bytes minus the remaining ${size - offset} would fall below the reserve of ${s.reserveBytes} bytes`);
      }
      this.#paused = null;
      flight.bytesDone = offset;
      await setRow({ state: 'downloading', bytesDone: offset });
      this.#emit();

      const hash = createHash('sha256');
      if (offset > 0) for await (const chunk of createReadStream(part, { end: offset - 1 })) hash.update(chunk as Buffer);
      let idle: NodeJS.Timeout | null = null;
      const armIdle = () => {
        if (idle) clearTimeout(idle);
        idle = setTimeout(() => abort.abort(new Error(`no data for ${s.idleTimeoutMs} ms`)), s.idleTimeoutMs);
      };
      armIdle();
      try {
        let body: AsyncIterable<Uint8Array>;
        let source: string;
        let restarted = false;
        if (this.upstream) {
          source = 'upstream';
          body = this.upstream(sha256, offset, abort.signal);
        } else {
          source = new URL(url).host;
          const res = await fetch(url, { headers: offset > 0 ? { range: `bytes=${offset}-` } : {}, signal: abort.signal, redirect: 'follow' });
          if (res.status === 206 && offset > 0) {
            const range = /^bytes (\d+)-/.exec(res.headers.get('content-range') ?? '');
            if (!range || Number(range[1]) !== offset) throw new Error(`the server answered Range ${offset}- with ${res.headers.get('content-range')}`);
          } else if (res.status === 200) {
            if (offset > 0) {
              // The server ignored Range: start over from zero.
              log.info({ offset }, 'server ignored Range; restarting from zero');
              offset = 0;
              restarted = true;
            }
          } else {
            await res.body?.cancel();
            throw new Error(`HTTP ${res.status} from ${source}`);
          }
          if (!res.body) throw new Error('empty response body');
          body = res.body as unknown as AsyncIterable<Uint8Array>;
        }
        const digest = restarted ? createHash('sha256') : hash;
        const out = createWriteStream(part, { flags: offset === 0 ? 'w' : 'a' });
        let done = offset;
        let lastSaved = Date.now();
        const limits = [this.#global, this.#hostLimit(source, s.perHostBytesPerSecond)];
        try {
          for await (const chunk of body) {
            armIdle();
            done += chunk.length;
            if (done > size) throw new Error(`the server sent more than the catalog's ${size} bytes`);
            await throttle(chunk.length, limits, abort.signal);
            digest.update(chunk);
            if (!out.write(chunk)) await once(out, 'drain');
            flight.bytesDone = done;
            if (Date.now() - lastSaved > 1000) {
              lastSaved = Date.now();
              await setRow({ bytesDone: done });
            }
          }
        } finally {
          out.end();
          await once(out, 'close');
        }
        if (done < size) throw new Error(`connection closed after ${done} of ${size} bytes`);
        const got = digest.digest('hex');
        if (got !== sha256) {
          await store.remove(sha256);
          await this.#fail(row, s, `sha256 mismatch: the file from ${source} hashes to ${got}`, 0);
          log.warn({ got }, 'download refused: sha256 mismatch');
          return;
        }
        await store.commit(sha256);
        await setRow({ state: 'verified', bytesDone: size, verifiedAt: this.now(), lastError: null });
        log.info({ size }, 'file verified');
        this.onVerified(sha256);
      } finally {
        if (idle) clearTimeout(idle);
      }
    } catch (err) {
      if (err instanceof DiskShort) {
        // Not a failed attempt: the file waits, and the check repeats in a few seconds.
        this.#paused = `insufficient-space: ${err.message}`;
        await setRow({ state: 'pending', nextAttemptAt: Date.now() + 5_000 });
        log.warn(err.message);
        return;
      }
      if (this.#stopped) {
        await setRow({ state: 'pending', bytesDone: await store.partialSize(sha256) });
        return;
      }
      if (err instanceof DeferredError) {
        await setRow({ state: 'pending', lastError: err.message.slice(0, 500), bytesDone: await store.partialSize(sha256), nextAttemptAt: err.retryAt });
        log.info({ until: new Date(err.retryAt).toISOString() }, err.message);
        return;
      }
      // With its cause: "fetch failed: getaddrinfo ENOTFOUND download.windowsupdate.com", not "fetch failed".
      const message = abort.signal.aborted && abort.signal.reason instanceof Error ? abort.signal.reason.message : describeError(err);
      await this.#fail(row, s, message, await store.partialSize(sha256));
      log.warn({ err: message, attempts: row.attempts + 1 }, 'download failed');
    }
  }

  async #fail(row: typeof contentFiles.$inferSelect, s: ContentSettings, message: string, bytesDone: number): Promise<void> {
    const attempts = row.attempts + 1;
    await this.orm
      .update(contentFiles)
      .set({
        state: 'failed',
        attempts,
        lastError: message.slice(0, 500),
        bytesDone,
        nextAttemptAt: Date.now() + backoffMs(attempts, { baseMs: s.retryBaseMs, maxMs: s.retryMaxMs }),
        updatedAt: Date.now(),
      })
      .where(eq(contentFiles.sha256, row.sha256));
  }
}
