import { Worker } from 'node:worker_threads';

/** What a checkpoint did: frames in the WAL and frames copied (-1, -1 and busy: another checkpoint ran), and its time. */
export interface CheckpointResult {
  busy: number;
  log: number;
  checkpointed: number;
  ms: number;
}

/** A checkpoint that readers held back is asked again this often, this many times at most (then SQLite's own checkpoints take over). */
const RETRY_MS = 200;
const RETRIES = 50;

/**
 * Checkpoints of a database's WAL on a thread of its own (checkpoint-worker.ts), for
 * a connection that commits large transactions: a child loading a snapshot's parts
 * (about 25 MB of pages each) turns its own automatic checkpoint off meanwhile and
 * asks here after each commit. Otherwise SQLite's checkpoint after such a commit
 * copies every page again into the database file and syncs it on the committing
 * thread (60-90 ms a part, measured: bench/README.md), which is the node's main
 * thread. The thread starts on the first request and ends `idleMs` after the last
 * one is done, truncating a large WAL then (not between a load's parts: that takes
 * the write lock); a checkpoint that readers held back is asked again until the WAL
 * is copied whole. A failure costs nothing but the thread: the connections' own
 * checkpoints, back on after the large commit, copy the pages on their next commit.
 * So may another connection's commit that comes first (the node's client pool keeps
 * SQLite's checkpoint): then that commit copies them, as before, on its thread.
 */
export class Checkpointer {
  #worker: Worker | null = null;
  #inFlight = false;
  #again = false;
  #retries = 0;
  #timer: NodeJS.Timeout | null = null;
  /** Checkpoints run, and the last one's outcome (for tests and status). */
  runs = 0;
  last: CheckpointResult | null = null;
  lastError: Error | null = null;

  constructor(
    private readonly file: string,
    private readonly idleMs = 5_000,
  ) {}

  /** Checkpoint now (after a large commit); one that runs is followed by another. */
  request(): void {
    this.#retries = 0;
    if (this.#inFlight) this.#again = true;
    else this.#send();
  }

  /** Whether the thread is running (for tests). */
  get running(): boolean {
    return this.#worker !== null;
  }

  #send(): void {
    this.#clearTimer();
    this.#inFlight = true;
    (this.#worker ??= this.#start()).postMessage('checkpoint');
  }

  #start(): Worker {
    const w = new Worker(new URL('./checkpoint-worker.js', import.meta.url), { workerData: { file: this.file } });
    w.unref();
    w.on('message', (r: CheckpointResult) => {
      if (this.#worker !== w) return; // ended meanwhile
      this.#inFlight = false;
      this.runs++;
      this.last = r;
      const whole = r.busy === 0 && r.checkpointed === r.log;
      if (this.#again) {
        this.#again = false;
        this.#send();
      } else if (!whole && this.#retries++ < RETRIES) this.#later(RETRY_MS, () => this.#send());
      else this.#later(this.idleMs, () => this.#end());
    });
    const gone = (err: Error | null) => {
      if (this.#worker !== w) return;
      this.#worker = null;
      this.#inFlight = false;
      this.#again = false;
      this.#clearTimer();
      if (err) this.lastError = err;
    };
    w.on('error', gone);
    w.on('exit', () => gone(null));
    return w;
  }

  #later(ms: number, fn: () => void): void {
    this.#clearTimer();
    this.#timer = setTimeout(fn, ms);
    this.#timer.unref();
  }

  #clearTimer(): void {
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = null;
  }

  /** Ends the thread (it closes its connection first). */
  #end(): void {
    const w = this.#worker;
    this.#worker = null;
    this.#inFlight = false;
    this.#clearTimer();
    w?.postMessage('close');
  }

  close(): void {
    this.#again = false;
    this.#end();
  }
}
