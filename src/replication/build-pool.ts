import { Worker } from 'node:worker_threads';
import type { BuildJob, Built } from './build-worker.js';

type Answer = { id: number; ok: boolean; built?: Built; message?: string };

/** A worker and the jobs it has been handed and not answered yet. */
interface Slot {
  worker: Worker;
  jobs: Map<number, { resolve: (b: Built) => void; reject: (e: Error) => void }>;
  idle: NodeJS.Timeout | null;
}

/**
 * The worker threads that build a parent's files (build-worker.ts): at most `size`
 * at once, each kept between jobs and ended after `idleMs` without one (its memory with it), so a snapshot
 * in parts, or a run of tail files, pays for one thread's start (about 0.1 s of CPU)
 * rather than one per file. A job goes to the least loaded thread; one that fails or
 * exits rejects what it held. Threads do not keep the process alive.
 */
export class BuildPool {
  readonly #slots: Slot[] = [];
  #next = 0;

  constructor(
    private readonly size = 2,
    private readonly idleMs = 5_000,
  ) {}

  /** Makes one file; resolves with its count and compressed pieces. */
  run(job: BuildJob): Promise<Built> {
    const slot = this.#slot();
    if (slot.idle) clearTimeout(slot.idle);
    slot.idle = null;
    const id = this.#next++;
    return new Promise<Built>((resolve, reject) => {
      slot.jobs.set(id, { resolve, reject });
      slot.worker.postMessage({ id, job });
    });
  }

  #slot(): Slot {
    const free = this.#slots.reduce<Slot | null>((best, s) => (!best || s.jobs.size < best.jobs.size ? s : best), null);
    if (free && (free.jobs.size === 0 || this.#slots.length >= this.size)) return free;
    const worker = new Worker(new URL('./build-worker.js', import.meta.url));
    worker.unref();
    const slot: Slot = { worker, jobs: new Map(), idle: null };
    const fail = (err: Error) => {
      this.#drop(slot);
      for (const j of slot.jobs.values()) j.reject(err);
      slot.jobs.clear();
    };
    worker.on('message', (m: Answer) => {
      const j = slot.jobs.get(m.id);
      if (!j) return;
      slot.jobs.delete(m.id);
      if (m.ok) j.resolve(m.built!);
      else j.reject(new Error(m.message));
      if (slot.jobs.size === 0) {
        slot.idle = setTimeout(() => this.#drop(slot), this.idleMs);
        slot.idle.unref();
      }
    });
    worker.on('error', fail);
    worker.on('exit', (code) => fail(new Error(`a file builder thread ended (exit ${code}) before it answered`)));
    this.#slots.push(slot);
    return slot;
  }

  #drop(slot: Slot): void {
    const i = this.#slots.indexOf(slot);
    if (i < 0) return;
    this.#slots.splice(i, 1);
    if (slot.idle) clearTimeout(slot.idle);
    void slot.worker.terminate();
  }

  /** Threads running now (for tests and status). */
  get threads(): number {
    return this.#slots.length;
  }

  /** Ends every thread (what they held is rejected). */
  close(): void {
    for (const s of [...this.#slots]) this.#drop(s);
  }
}
