import type { EventEmitter } from 'node:events';
import type * as grpc from '@grpc/grpc-js';
import type { Logger } from '../lib/log.js';
import { AppError } from '../lib/errors.js';
import { changelog, type Change, type KindRegistry, type LogRow, type ReplicatedKind, type SourceContext } from '../changelog/index.js';
import { encoded, encodedBytes, type ServerMessage, type SubscribeRequest } from './protocol.js';
import type { SnapshotForm, Snapshots } from './snapshots.js';
import type { PieceCoding } from './pieces.js';
import { closedUntil, type ReplicationRules } from './rules.js';

/** Log entries read and sent per tail batch (a page of updates is about 1.5 MB). */
const BATCH = 1024;
const HEARTBEAT_MS = 5_000;
/** Bytes of encoded messages a stream has handed to grpc-js and not yet to the transport, past its first (#send). */
const SEND_BYTES = 256 * 1024;
/** Encoded tail pages kept for other subscribers of the same language set: the newest 16, at most 64 MB. */
const TAIL_PAGES = 16;
const TAIL_BYTES = 64 * 1024 * 1024;
/**
 * A run of at least this many state entries of a kind that has a file (the updates of
 * an import on its way down) goes to a child that takes tail files as one file, of at
 * most TAIL_FILE_MAX entries (about 12-18 MB before compression at 10,000 updates).
 */
const TAIL_FILE_MIN = 256;
const TAIL_FILE_MAX = 10_000;

/** A tail page as sent: its encoded messages (one batch, in parts if compressed, or a tail file's pieces) and the cursor after it. */
interface Page {
  frames: Buffer[];
  next: number;
}

export type Call = grpc.ServerWritableStream<SubscribeRequest, ServerMessage>;

/** The stream ended from the child's side: nothing to report. */
export class StreamClosed extends Error {}

/**
 * Resolves with the first of `events` (or 'timeout'), then removes every listener
 * it added: a subscription waits thousands of times, and listeners left behind by
 * a race would pile up for as long as the stream lives.
 */
export function firstOf(emitter: EventEmitter, events: string[], timeoutMs?: number): Promise<string> {
  return new Promise((resolve) => {
    const handlers = new Map<string, () => void>();
    let timer: NodeJS.Timeout | undefined;
    const done = (name: string) => {
      for (const [ev, h] of handlers) emitter.off(ev, h);
      if (timer) clearTimeout(timer);
      resolve(name);
    };
    for (const ev of events) {
      const h = () => done(ev);
      handlers.set(ev, h);
      emitter.on(ev, h);
    }
    if (timeoutMs !== undefined) timer = setTimeout(() => done('timeout'), timeoutMs);
  });
}

/** What a subscription is: the child, what it asked for (checked), and its rules. */
export interface Subscriber {
  id: string;
  name: string;
  /** The languages of the child's subtree now, and those its data reflects. */
  languages: readonly string[];
  applied: readonly string[];
  epoch: string;
  cursor: number;
  forceResync: boolean;
  rules: ReplicationRules;
  /** What the child can load a complete resync as: `file` when it holds nothing yet. */
  snapshotForm: SnapshotForm;
  /** The child loads runs of state entries in the tail as files (SubscribeRequest.tail_files). */
  tailFiles: boolean;
  /** The child takes a large batch compressed, in parts (SubscribeRequest.compressed_batches). */
  compressed: boolean;
  /** How the child reads a file's pieces (SubscribeRequest.brotli_pieces). */
  pieces: PieceCoding;
}

/**
 * The parent's side of the subscriptions: each child's stream, fed in order from this
 * node's change log by the registered kinds. What a child lacks is sent from its
 * cursor (or, for a new child, an unknown epoch or a cursor older than the log keeps,
 * as a complete resync: each kind's snapshot); then live changes as they commit. Every
 * batch is filtered to the child's languages. The stream reads the log from the
 * database, so a slow child costs a cursor, not memory; `write()` backpressure is
 * honoured.
 */
export class Streams {
  readonly #streams = new Map<string, Call>();
  readonly #inFlight = new WeakMap<Call, { writes: Promise<void>[]; bytes: number }>();
  readonly #closedP = new WeakMap<Call, Promise<string>>();
  /** Encoded tail pages by language set and cursor (see #page). */
  readonly #pages = new Map<string, Promise<Page | null>>();
  readonly #sizes = new Map<string, number>();
  /** After a tail file failed to build: rows until then. */
  #tailFilesOffUntil = 0;
  /** Tail pages built (each shared by the subscribers of its set at its cursor). */
  tailPagesBuilt = 0;

  constructor(
    private readonly kinds: KindRegistry,
    private readonly source: SourceContext,
    private readonly snapshots: Snapshots,
    /** A message's encoding on the wire (a tail page is encoded once for every subscriber of its set). */
    private readonly encode: (msg: ServerMessage, compress: boolean) => Buffer[],
    /** Emits 'appended' when the change log grows. */
    private readonly events: EventEmitter,
    private readonly epoch: string,
    private readonly logger: Logger,
    /**
     * A complete resync is owed to the child (recorded as it starts, `endSeq` null) and
     * its end will bring it to `endSeq` (recorded before the end is sent): only the
     * child's ack of that cursor settles it, so a child cut off anywhere before it has
     * applied the end gets the complete resync again, whatever cursor it claims.
     */
    private readonly owe: (childId: string, endSeq: number | null) => Promise<void>,
    /** This node is itself catching up from its parent: its batches say more is coming. */
    private readonly upstreamBusy: () => boolean,
  ) {}

  connected(id: string): boolean {
    return this.#streams.has(id);
  }

  /** Ends a child's stream with `err` (removed, rules changed, a resync requested): it reconnects or stops. */
  close(id: string, err: AppError): void {
    this.#streams.get(id)?.emit('patchtree-close', err);
  }

  /** One promise per stream that settles when it closes (listeners added once). */
  #closed(call: Call): Promise<string> {
    let p = this.#closedP.get(call);
    if (!p) {
      p = firstOf(call, ['close', 'cancelled']);
      this.#closedP.set(call, p);
    }
    return p;
  }

  /**
   * Writes one message with backpressure. grpc-js counts its buffer in messages, and
   * copies each message it is given (a frame shared by many streams too) until the
   * child's flow control lets it go; so besides `drain` each stream keeps at most
   * three messages, and SEND_BYTES, not yet handed to the transport (their write
   * callbacks pending): what a parent holds for its children grows with their number,
   * not with the size of what they are sent.
   */
  async #send(call: Call, msg: ServerMessage): Promise<void> {
    if (call.cancelled || call.destroyed) throw new StreamClosed();
    let pending = this.#inFlight.get(call);
    if (!pending) this.#inFlight.set(call, (pending = { writes: [], bytes: 0 }));
    const p = pending;
    const size = encodedBytes(msg)?.length ?? 0;
    let done!: () => void;
    const written = new Promise<void>((r) => (done = r));
    p.writes.push(written);
    p.bytes += size;
    void written.then(() => {
      p.writes.splice(p.writes.indexOf(written), 1);
      p.bytes -= size;
    });
    const ok = call.write(msg, () => done());
    if (!ok) await firstOf(call, ['drain', 'close', 'cancelled']);
    while ((p.writes.length > 2 || (p.writes.length > 0 && p.bytes > SEND_BYTES)) && !call.cancelled && !call.destroyed) {
      await Promise.race([p.writes[0], this.#closed(call)]);
    }
    if (call.cancelled || call.destroyed) throw new StreamClosed();
  }

  /** Runs a child's stream until it closes; another stream of the same child is ended first. */
  async run(call: Call, sub: Subscriber): Promise<void> {
    this.close(sub.id, new AppError('aborted', 'replaced by a newer subscription'));
    this.#streams.set(sub.id, call);
    let closing: AppError | null = null;
    const wake = () => call.emit('patchtree-wake');
    call.on('patchtree-close', (err: AppError) => {
      closing = err;
      wake();
    });
    this.events.on('appended', wake);
    const log = this.logger.child({ child: sub.id, childName: sub.name });
    const gate = () => this.#gate(call, sub.rules, () => closing);
    try {
      const { head, min } = await changelog.bounds(this.source.reads);
      const { languages, applied, rules } = sub;
      let cursor = sub.cursor;
      let mode: 'tail' | 'resync' | 'backfill' = 'tail';
      let reason = 'up to date from the cursor';
      if (sub.forceResync) [mode, reason] = ['resync', 'a complete resync is owed (a new child, one requested, or one not acknowledged whole)'];
      else if (sub.epoch !== this.epoch) [mode, reason] = ['resync', sub.epoch ? `unknown epoch ${sub.epoch}` : 'no cursor yet'];
      else if (cursor > head) [mode, reason] = ['resync', `cursor ${cursor} is ahead of this node's log (${head})`];
      else if (min > 0 && cursor < min - 1) [mode, reason] = ['resync', `cursor ${cursor} is older than the log keeps (from ${min})`];
      else if (applied.join(',') !== languages.join(',')) [mode, reason] = ['backfill', `languages ${applied.join(',') || '(none)'} -> ${languages.join(',')}`];
      await this.#send(call, { hello: { parent_id: this.source.self.nodeId, epoch: this.epoch, head_seq: head, mode, reason } });
      log.info({ mode, reason, cursor, head, languages }, 'child subscribed');

      const kinds = this.kinds.all().filter((k) => rules.catalog || !k.catalog);
      const snapshot = async (pages: AsyncIterable<Change[]>) => {
        for await (const changes of pages) {
          await gate();
          for (const frame of this.encode({ batch: { changes, cursor: 0, snapshot: true } }, sub.compressed)) await this.#send(call, encoded(frame));
        }
      };
      if (mode === 'resync') {
        // The snapshot of this language set, shared with every child that has it; the
        // child's cursor is the head it was cut at, and the tail sends what came since.
        await this.owe(sub.id, null);
        const shared = await this.snapshots.acquire(languages, rules.catalog, sub.snapshotForm, sub.compressed, sub.pieces);
        try {
          await gate();
          await this.#send(call, { resync_start: { reason, full: true } });
          for await (const frame of shared.frames()) {
            await gate();
            await this.#send(call, encoded(frame));
          }
          cursor = shared.head;
        } finally {
          this.snapshots.release(shared);
        }
        await this.owe(sub.id, cursor);
        // Without the catalog, the child's updates are left as they are (not swept).
        await this.#send(call, { resync_end: { cursor, full: rules.catalog } });
      } else if (mode === 'backfill') {
        // What the language change moves, kind by kind.
        await gate();
        await this.#send(call, { resync_start: { reason, full: false } });
        for (const k of kinds) {
          if (k.source.backfill) await snapshot(k.source.backfill(this.source, applied, languages));
          else if (k.byLanguage) await snapshot(k.source.snapshot(this.source, languages));
        }
        await this.#send(call, { resync_end: { cursor, full: false } });
      }
      await this.#tail(call, sub, cursor, gate, () => closing);
    } finally {
      this.events.off('appended', wake);
      if (this.#streams.get(sub.id) === call) this.#streams.delete(sub.id);
    }
  }

  /** Everything after the cursor, in order, then live changes as they commit. */
  async #tail(call: Call, sub: Subscriber, from: number, gate: () => Promise<void>, closing: () => AppError | null): Promise<void> {
    let cursor = from;
    let lastSent = Date.now();
    for (;;) {
      const c = closing();
      if (c) throw c;
      const page = await this.#page(sub, cursor);
      if (page) {
        // The schedule is checked once a page: a tail file goes whole or not at all.
        await gate();
        for (const frame of page.frames) await this.#send(call, encoded(frame));
        cursor = page.next;
        lastSent = Date.now();
        continue;
      }
      const waitMs = Math.max(0, HEARTBEAT_MS - (Date.now() - lastSent));
      const woke = await firstOf(call, ['patchtree-wake', 'cancelled', 'close'], waitMs);
      if (woke === 'cancelled' || woke === 'close') throw new StreamClosed();
      if (woke === 'timeout') {
        await this.#send(call, { heartbeat: { head_seq: cursor, time_ms: Date.now() } });
        lastSent = Date.now();
      }
    }
  }

  /**
   * The page of the log after `cursor` as a subscriber of these languages (and catalog
   * rule, and form) gets it, encoded: built once and shared by every subscriber of the
   * set at that cursor (live changes reach them all at once). A page cut short at the
   * head is as good as a whole one (the next starts where it ends); null when nothing
   * is after it. A long run of state entries of a kind with a file goes to a child that
   * takes tail files as one file (#tailFile).
   */
  #page(sub: Subscriber, cursor: number): Promise<Page | null> {
    const fileKind = sub.tailFiles ? this.#fileKind(sub) : null;
    const key = `${fileKind ? `file:${sub.pieces}` : 'rows'}:${sub.rules.catalog ? 1 : 0}:${sub.compressed ? 'gzip' : 'plain'}:${sub.languages.join(',')}:${cursor}`;
    const cached = this.#pages.get(key);
    if (cached) return cached;
    const made = (async (): Promise<Page | null> => {
      if (fileKind && Date.now() >= this.#tailFilesOffUntil) {
        try {
          const file = await this.#tailFile(fileKind, sub.languages, cursor, sub.pieces);
          if (file) return file;
        } catch (err) {
          // Rows serve as well (a full disk, a builder thread that died): no tail files for a minute.
          this.#tailFilesOffUntil = Date.now() + 60_000;
          this.logger.warn({ err, cursor }, 'building a tail file failed; sending rows for a minute');
        }
      }
      // One entry more than a page: whether more waits behind it.
      const read = await changelog.after(this.source.reads, cursor, BATCH + 1);
      const rows = read.slice(0, BATCH);
      if (!rows.length) return null;
      const next = rows[rows.length - 1]!.seq;
      this.tailPagesBuilt++;
      const changes = await this.#changes(
        rows.filter((r) => this.kinds.sends(r, sub.languages, sub.rules.catalog)),
        sub.languages,
      );
      // More waiting behind the page, here or on its way from this node's own parent: the child is catching up.
      return {
        frames: this.encode({ batch: { changes, cursor: next, snapshot: false, more: read.length > BATCH || this.upstreamBusy() } }, sub.compressed),
        next,
      };
    })();
    this.#pages.set(key, made);
    // Nothing at the head yet, or a failure: not kept. Else the newest pages are (TAIL_PAGES, TAIL_BYTES).
    // (Only while this promise is still the key's: a trimmed page may settle after a newer one took its place.)
    const mine = () => this.#pages.get(key) === made;
    void made.then(
      (p) => {
        if (!mine()) return;
        if (!p) return void this.#pages.delete(key);
        this.#sizes.set(
          key,
          p.frames.reduce((a, f) => a + f.length, 0),
        );
        this.#trimPages();
      },
      () => mine() && this.#pages.delete(key),
    );
    return made;
  }

  /** The kind whose runs a subscriber that takes tail files gets as files: one with a file, sent under its rules, from a local database. */
  #fileKind(sub: Subscriber): ReplicatedKind | null {
    if (this.snapshots.form('file') !== 'file') return null;
    return this.kinds.all().find((k) => k.file && (sub.rules.catalog || !k.catalog)) ?? null;
  }

  /**
   * The run of `k`'s state entries right after `cursor` as one file (at least
   * TAIL_FILE_MIN entries; else null and the page is rows): the entities as they are
   * now, for these languages (one deleted since, or no longer in them, is not in it:
   * the entry that did that follows, as with rows).
   */
  async #tailFile(k: ReplicatedKind, languages: readonly string[], cursor: number, coding: PieceCoding): Promise<Page | null> {
    const run = await changelog.stateRun(this.source.reads, cursor, k.kind, TAIL_FILE_MAX);
    if (run.count < TAIL_FILE_MIN) return null;
    const more = (await changelog.head(this.source.reads)) > run.upTo || this.upstreamBusy();
    return { frames: await this.snapshots.tailFile(k, languages, cursor, run.upTo, more, coding), next: run.upTo };
  }

  /** Keeps the newest pages, at most TAIL_PAGES of them and TAIL_BYTES together (a page still being built counts nothing yet). */
  #trimPages(): void {
    let n = 0;
    let bytes = 0;
    for (const k of [...this.#pages.keys()].reverse()) {
      n++;
      bytes += this.#sizes.get(k) ?? 0;
      if (n > TAIL_PAGES || bytes > TAIL_BYTES) {
        this.#pages.delete(k);
        this.#sizes.delete(k);
      }
    }
  }

  /** One page of the log as a subscriber gets it: each kind builds the payloads of its entries, in log order. */
  async #changes(rows: LogRow[], languages: readonly string[]): Promise<Change[]> {
    const byKind = new Map<string, LogRow[]>();
    for (const r of rows) {
      const list = byKind.get(r.kind);
      if (list) list.push(r);
      else byKind.set(r.kind, [r]);
    }
    const payloads = new Map<number, Buffer | null>();
    for (const [kind, list] of byKind) {
      const out = await this.kinds.get(kind)!.source.tail(this.source, list, languages);
      for (const [i, r] of list.entries()) payloads.set(r.seq, out[i] ?? null);
    }
    const changes: Change[] = [];
    for (const r of rows) {
      const payload = payloads.get(r.seq);
      if (payload) changes.push({ seq: r.seq, kind: r.kind, key: r.key, op: r.op, payload });
    }
    return changes;
  }

  /**
   * Holds a stream while the child's schedule is closed: heartbeats (saying until
   * when) keep it alive and the child's status honest; the stream resumes when a
   * window opens. Rules changes end the stream, so `rules` is fixed for its life.
   */
  async #gate(call: Call, rules: ReplicationRules, closing: () => AppError | null): Promise<void> {
    for (;;) {
      const closed = closedUntil(rules, new Date());
      if (!closed) return;
      const c = closing();
      if (c) throw c;
      const until = closed.until?.getTime() ?? 0;
      await this.#send(call, { heartbeat: { head_seq: await changelog.head(this.source.reads), time_ms: Date.now(), paused_until_ms: until } });
      const wait = Math.max(1_000, Math.min(HEARTBEAT_MS, until ? until - Date.now() : HEARTBEAT_MS));
      const woke = await firstOf(call, ['patchtree-close', 'cancelled', 'close'], wait);
      if (woke === 'cancelled' || woke === 'close') throw new StreamClosed();
    }
  }
}
