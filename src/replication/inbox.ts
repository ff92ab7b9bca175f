import type * as grpc from '@grpc/grpc-js';
import type { Logger } from '../lib/log.js';
import type { ReceivedMessage } from './protocol.js';
import { Unpacker } from './compressed.js';

/** Changes applied in one transaction at most, when batches queue up. */
const MAX_TX_CHANGES = 4_000;
/** Messages received and not yet applied before the stream is paused. */
const MAX_QUEUED_MESSAGES = 32;

type Batch = NonNullable<ReceivedMessage['batch']>;

/**
 * A child's side of one subscription's messages. They are applied in order from a
 * queue drained after the I/O that brought them, one per turn of the event loop (HTTP
 * and acks get their turn between): consecutive batches that arrived while the
 * previous transaction ran are applied as one (up to MAX_TX_CHANGES, `merge`), so a
 * busy child commits less often, not less durably. A full queue pauses the stream
 * (HTTP/2 flow control then holds the parent back). What arrived before the stream
 * ended is applied before `ended` is called: it is as good as ever. A message whose
 * handling throws ends the stream (`ended` with that error). A batch that comes
 * compressed, in parts (compressed.ts), is queued once whole.
 */
export class Inbox {
  readonly #queue: ReceivedMessage[] = [];
  #scheduled = false;
  #paused = false;
  #ended = false;

  constructor(
    private readonly call: grpc.ClientReadableStream<ReceivedMessage>,
    private readonly handle: (msg: ReceivedMessage) => void,
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

  /** Applies one message (with the batches merged into it); true while more wait. */
  #step(): boolean {
    const msg = this.#queue.shift();
    if (!msg || this.#ended || this.stopped()) return false;
    try {
      this.handle(msg);
    } catch (err) {
      this.#fail(err);
      return false;
    }
    return this.#queue.length > 0;
  }

  /** A message that cannot be applied (or unpacked): what is queued is dropped and the stream ends with `err`. */
  #fail(err: unknown): void {
    this.logger.error({ err }, 'applying a batch failed; reconnecting');
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
      else if (this.#paused && !this.#ended) {
        this.#paused = false;
        this.call.resume();
      }
    });
  }

  #flushThen(err: unknown): void {
    while (this.#step());
    this.#end(err);
  }

  #end(err: unknown): void {
    if (this.#ended) return;
    this.#ended = true;
    this.ended(err);
  }
}
