import { Worker } from 'node:worker_threads';
import type { LoadAnswer, LoadJob } from './load-worker.js';

/**
 * A child's thread for the large parts of a snapshot (load-worker.ts): one part at a
 * time, in the order asked. The main thread checks a part, hands it here and takes the
 * next part's pieces (inflated, hashed, written) while this one is copied: over a
 * 100,000-update snapshot (13-MB parts), the copies are the main thread's work no more
 * (bench/README.md). The thread starts with the first part and ends `idleMs` after
 * the last. A part that fails (refused, or the thread died) fails every part handed
 * over after it, unloaded, until `reset` (the next resync): the stream ends, and the
 * child asks for rows. So do the parts not started yet when the node stops.
 */
export class PartLoader {
  #worker: Worker | null = null;
  #current: { resolve: (n: number) => void; reject: (err: Error) => void } | null = null;
  #chain: Promise<unknown> = Promise.resolve();
  #timer: NodeJS.Timeout | null = null;
  #pending = 0;
  /** Why the parts handed over from now on fail without being loaded (a part before them failed, or the node stops). */
  #failed: Error | null = null;

  constructor(private readonly idleMs = 5_000) {}

  /** Loads a part after those asked before it; resolves with its count. */
  load(job: LoadJob): Promise<number> {
    this.#pending++;
    const run = this.#chain
      .then(() => {
        if (this.#failed) throw this.#failed;
        return this.#run(job);
      })
      .catch((err: Error) => {
        this.#failed ??= new Error(`a part before this one failed: ${err.message}`);
        throw err;
      })
      .finally(() => this.#pending--);
    this.#chain = run.catch(() => {});
    return run;
  }

  /** A new resync: parts are loaded again (after a failure). */
  reset(): void {
    if (!this.#pending) this.#failed = null;
  }

  /** Whether parts handed over are not loaded yet (a part that follows them goes here too, to keep their order). */
  get busy(): boolean {
    return this.#pending > 0;
  }

  /** Whether the thread is running (for tests). */
  get running(): boolean {
    return this.#worker !== null;
  }

  #run(job: LoadJob): Promise<number> {
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = null;
    return new Promise<number>((resolve, reject) => {
      this.#current = { resolve, reject };
      (this.#worker ??= this.#start()).postMessage(job);
    }).finally(() => {
      this.#current = null;
      this.#timer = setTimeout(() => this.#end(), this.idleMs);
      this.#timer.unref();
    });
  }

  #start(): Worker {
    const w = new Worker(new URL('./load-worker.js', import.meta.url));
    w.unref();
    w.on('message', (a: LoadAnswer) => {
      if ('error' in a) this.#current?.reject(new Error(a.error));
      else this.#current?.resolve(a.count);
    });
    const gone = (err: Error) => {
      if (this.#worker !== w) return;
      this.#worker = null;
      this.#current?.reject(err);
    };
    w.on('error', gone);
    w.on('exit', (code) => gone(new Error(`the part loader's thread ended (exit ${code})`)));
    return w;
  }

  #end(): void {
    const w = this.#worker;
    this.#worker = null;
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = null;
    w?.postMessage('close');
  }

  /** Ends the thread once the part being copied is (the node stops): those not started fail. */
  async close(): Promise<void> {
    this.#failed ??= new Error('the node is stopping');
    await this.#chain;
    this.#end();
  }
}
