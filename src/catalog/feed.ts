import { createHash, randomUUID } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { mkdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable, Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { ReadableStream as WebReadableStream } from 'node:stream/web';
import type { Logger } from '../lib/log.js';
import { AppError } from '../lib/errors.js';
import type { CatalogImporter } from './importer.js';
import type { ImportResult } from './import-core.js';

export interface FeedState {
  url: string;
  etag: string | null;
  lastModified: string | null;
  lastCheckedAt: string | null;
  lastChangedAt: string | null;
  lastVersion: string | null;
  lastError: string | null;
}

export interface FeedStore {
  get(): Promise<FeedState | undefined>;
  put(s: FeedState): Promise<void>;
}

/**
 * Follows a catalog URL: on every interval one conditional GET (If-None-Match /
 * If-Modified-Since), so an unchanged feed costs one round trip and a 304. A
 * changed feed is downloaded to disk with its `<url>.sig` and imported. The
 * validators are saved only after a successful import, so a failed one is retried.
 */
export class CatalogFeed {
  #timer: NodeJS.Timeout | null = null;
  #running: Promise<void> | null = null;
  #stopped = false;

  constructor(
    private readonly url: string,
    private readonly intervalMs: number,
    private readonly importer: CatalogImporter,
    private readonly store: FeedStore,
    private readonly tmpDir: string,
    private readonly maxBytes: number,
    private readonly logger: Logger,
  ) {}

  start(): void {
    this.#stopped = false;
    const tick = () => {
      this.#running = this.check()
        .then(
          () => undefined,
          (err) => this.logger.warn({ err: (err as Error).message }, 'catalog feed check failed'),
        )
        .finally(() => {
          this.#running = null;
          if (!this.#stopped) this.#timer = setTimeout(tick, this.intervalMs);
        });
    };
    this.#timer = setTimeout(tick, 0);
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    if (this.#timer) clearTimeout(this.#timer);
    await this.#running;
  }

  /** One check; returns the import result when the feed changed. */
  async check(): Promise<ImportResult | null> {
    const prev = (await this.store.get()) ?? {
      url: this.url,
      etag: null,
      lastModified: null,
      lastCheckedAt: null,
      lastChangedAt: null,
      lastVersion: null,
      lastError: null,
    };
    const same = prev.url === this.url;
    const headers: Record<string, string> = {};
    if (same && prev.etag) headers['if-none-match'] = prev.etag;
    if (same && prev.lastModified) headers['if-modified-since'] = prev.lastModified;
    const now = new Date().toISOString();
    const state: FeedState = { ...prev, url: this.url, lastCheckedAt: now };
    let file: string | null = null;
    try {
      const res = await fetch(this.url, { headers, signal: AbortSignal.timeout(10 * 60_000) });
      if (res.status === 304) {
        await res.body?.cancel();
        state.lastError = null;
        await this.store.put(state);
        return null;
      }
      if (!res.ok || !res.body) throw new Error(`GET ${this.url}: HTTP ${res.status}`);
      await mkdir(this.tmpDir, { recursive: true });
      file = join(this.tmpDir, `feed-${randomUUID()}.gz`);
      const hash = createHash('sha256');
      let size = 0;
      const meter = new Transform({
        transform: (chunk: Buffer, _enc, cb) => {
          size += chunk.length;
          if (size > this.maxBytes) return cb(new Error(`the feed is larger than ${this.maxBytes} bytes`));
          hash.update(chunk);
          cb(null, chunk);
        },
      });
      await pipeline(Readable.fromWeb(res.body as unknown as WebReadableStream), meter, createWriteStream(file));
      const sigRes = await fetch(`${this.url}.sig`, { signal: AbortSignal.timeout(60_000) });
      if (!sigRes.ok) throw new Error(`GET ${this.url}.sig: HTTP ${sigRes.status}`);
      const signature = Buffer.from(await sigRes.arrayBuffer());
      const result = await this.importer.import({ catalogFile: file, signature, fileSha256: hash.digest('hex'), importedBy: 'catalog feed', source: 'feed' });
      Object.assign(state, {
        etag: res.headers.get('etag'),
        lastModified: res.headers.get('last-modified'),
        lastChangedAt: now,
        lastVersion: result.version,
        lastError: null,
      });
      await this.store.put(state);
      return result;
    } catch (err) {
      state.lastError = err instanceof AppError ? `${err.code}: ${err.message}` : (err as Error).message;
      await this.store.put(state);
      throw err;
    } finally {
      if (file) await rm(file, { force: true });
    }
  }
}
