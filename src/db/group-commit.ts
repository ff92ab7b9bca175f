import type PQueue from 'p-queue';
import type { Write } from './exec.js';

/** What one item adds to a shared transaction. */
export interface Prepared<R> {
  writes: readonly Write[];
  result: R;
  /** Applied to the drain's shared context once the item is accepted (not for a refused one). */
  accept?: () => void;
}

interface Pending<I, R> {
  item: I;
  resolve: (r: R) => void;
  reject: (err: unknown) => void;
}

/**
 * Group commit on a single writer: items that arrive together (inventory reports,
 * agents' event batches) are checked one by one and written in one transaction, so
 * many callers share one fsync. The drain waits for the end of the current turn of
 * the event loop: a commit's fsync blocks the thread, and the requests read meanwhile
 * are all taken by the next drain. An item that fails its checks is refused alone and
 * adds nothing; a failed write refuses the items it carried.
 */
export class GroupCommit<I, R, C> {
  #pending: Pending<I, R>[] = [];

  constructor(
    private readonly o: {
      /** The writer's queue (concurrency 1): drains run in it, between its other work. */
      queue: PQueue;
      /** Items per transaction at most. */
      max: number;
      /** Shared by the items of one drain (what earlier items of the same transaction did). */
      context: () => C | Promise<C>;
      prepare: (item: I, ctx: C) => Promise<Prepared<R>>;
      write: (w: Write[]) => Promise<unknown>;
      /** After the commit, with the accepted items. */
      committed?: (done: [I, R][]) => void;
    },
  ) {}

  add(item: I): Promise<R> {
    return new Promise<R>((resolve, reject) => {
      this.#pending.push({ item, resolve, reject });
      if (this.#pending.length === 1) setImmediate(() => void this.o.queue.add(() => this.#drain()));
    });
  }

  /** Refuses every item not yet taken by a drain (the node is stopping). */
  rejectPending(err: unknown): void {
    for (const p of this.#pending.splice(0)) p.reject(err);
  }

  async #drain(): Promise<void> {
    const batch = this.#pending.splice(0, this.o.max);
    if (this.#pending.length) void this.o.queue.add(() => this.#drain());
    if (!batch.length) return;
    const ctx = await this.o.context();
    const w: Write[] = [];
    const done: [Pending<I, R>, R][] = [];
    for (const p of batch) {
      try {
        const prepared = await this.o.prepare(p.item, ctx);
        w.push(...prepared.writes);
        prepared.accept?.();
        done.push([p, prepared.result]);
      } catch (err) {
        p.reject(err);
      }
    }
    try {
      await this.o.write(w);
    } catch (err) {
      for (const [p] of done) p.reject(err);
      return;
    }
    for (const [p, r] of done) p.resolve(r);
    if (done.length) this.o.committed?.(done.map(([p, r]) => [p.item, r]));
  }
}
