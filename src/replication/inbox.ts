import type * as grpc from '@grpc/grpc-js';
import type { Logger } from '../lib/log.js';
import type { ReceivedMessage } from './protocol.js';
import { Unpacker } from './compressed.js';

/** Changes applied in one transaction at most, when batches queue up. */
const MAX_TX_CHANGES = 4_000;
/** Messages received and not yet applied before the stream is paused. */
const MAX_QUEUED_MESSAGES = 32;
/** Snapshot parts handed to the part loader's thread and not loaded yet, at most: one loading, the next one waiting. */
const MAX_LOADING = 2;

type Batch = NonNullable<ReceivedMessage['batch']>;

/**
 * A child's side of one subscription's messages. They are applied in order from a
 * queue drained after the I/O that brought them, one per turn of the event loop (HTTP
 * and acks get their turn between): consecutive batches that arrived while the
 * previous transaction ran are applied as one (up to MAX_TX_CHANGES, `merge`), so a
 * busy child commits less often, not less durably. A full queue pauses the stream
 * (HTTP/2 flow control then holds the parent back). A message whose handling returns
 * a promise (a snapshot part loaded on the part loader's thread) is applied when it
 * settles: meanwhile only the next part's pieces are taken (a second part waits for
 * the first), anything else waits, heartbeats included. What arrived before the stream ended is applied
 * before `ended` is called, loads included: it is as good as ever. A message whose
 * handling throws (or rejects) ends the stream (`ended` with that error), once the
 * loads under way have ended. A batch that comes compressed, in parts
 * (compressed.ts), is queued once whole.
 */
export class Inbox {
  readonly #queue: ReceivedMessage[] = [];
  #scheduled = false;
  #paused = false;
  #ended = false;
  /** Loads under way (each after the one before it), and the last one. */
  #loading = 0;
  #loaded: Promise<unknown> = Promise.resolve();
  /** The stream ended (null: as it should) while loads were under way. */
  #closing: { err: unknown } | null = null;

  constructor(
    private readonly call: grpc.ClientReadableStream<ReceivedMessage>,
    private readonly handle: (msg: ReceivedMessage) => void | Promise<void>,
    /** The node is stopping: nothing more is applied. */
    private readonly stopped: () => boolean,
    private readonly ended: (err: unknown) => void,
    private readonly logger: Logger,
  ) {
    const unpacker = new Unpacker();
    call.on('data', (received: ReceivedMessage) => {
      if (this.#ended) return;
      let msg: ReceivedMessage | null;
      try {
        msg = unpacker.take(received);
      } catch (err) {
        this.#fail(err);
        return;
      }
      if (!msg) return;
      this.#queue.push(msg);
      if (this.#queue.length >= MAX_QUEUED_MESSAGES && !this.#paused) {
        this.#paused = true;
        call.pause();
      }
      this.#schedule();
    });
    call.on('error', (err) => this.#flushThen(err));
    call.on('end', () => this.#flushThen(null));
  }

  /** `first` with the batches of the same sort (snapshot or not) queued right behind it, while they fit one transaction. */
  merge(first: Batch): { changes: Batch['changes']; last: Batch } {
    let changes = first.changes;
    let last = first;
    for (
      let next = this.#queue[0];
      next?.batch && next.batch.snapshot === first.snapshot && changes.length + next.batch.changes.length <= MAX_TX_CHANGES;
      next = this.#queue[0]
    ) {
      this.#queue.shift();
      changes = changes.concat(next.batch.changes);
      last = next.batch;
    }
    return { changes, last };
  }

  /** Applies one message (with the batches merged into it); true while more wait and may be applied now. */
  #step(): boolean {
    const next = this.#queue[0];
    if (!next || this.#ended || this.stopped()) return false;
    // While parts load: the next part's pieces only, and not past a second part.
    if (this.#loading > 0 && !(next.snapshot_file && this.#loading < MAX_LOADING)) return false;
    this.#queue.shift();
    let r: void | Promise<void>;
    try {
      r = this.handle(next);
    } catch (err) {
      this.#fail(err);
      return false;
    }
    if (r) this.#track(r);
    return this.#queue.length > 0;
  }

  #track(load: Promise<void>): void {
    this.#loading++;
    this.#loaded = load.then(
      () => {
        this.#loading--;
        if (this.#closing && this.#loading === 0) this.#flushThen(this.#closing.err);
        else this.#schedule();
      },
      (err: unknown) => {
        this.#loading--;
        this.#fail(err);
      },
    );
  }

  /** A message that cannot be applied (or unpacked): what is queued is dropped and the stream ends with `err`. */
  #fail(err: unknown): void {
    if (this.#ended) return;
    if (!this.stopped()) this.logger.error({ err }, 'applying a batch failed; reconnecting');
    this.#queue.length = 0;
    this.call.cancel();
    this.#end(err);
  }

  #schedule(): void {
    if (this.#scheduled) return;
    this.#scheduled = true;
    setImmediate(() => {
      this.#scheduled = false;
      if (this.#step()) this.#schedule();
      else if (this.#paused && !this.#ended && this.#queue.length < MAX_QUEUED_MESSAGES) {
        this.#paused = false;
        this.call.resume();
      }
    });
  }

  #flushThen(err: unknown): void {
    if (this.#ended) return;
    while (this.#step());
    // Loads under way (and what waits behind them) are applied first.
    if (this.#loading > 0) this.#closing ??= { err };
    else this.#end(err);
  }

  /** `ended`, once no load is under way (a part being copied ends first, loaded or refused). */
  #end(err: unknown): void {
    if (this.#ended) return;
    this.#ended = true;
    void this.#loaded.then(() => this.ended(err)).catch((e: unknown) => this.logger.error({ err: e }, 'ending a subscription failed'));
  }
}
