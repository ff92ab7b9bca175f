/**
 * A bytes-per-second limit as a virtual clock: each chunk reserves the time its
 * bytes take at the configured rate, after whatever was reserved before it, and
 * waits until then. FIFO and fair between the transfers sharing the limit. A small
 * burst (`burstMs` worth of bytes) may pass at once, so short idle gaps are not
 * lost to rounding. A rate of 0 means unlimited.
 */
export class RateLimit {
  #next = 0;

  constructor(
    public rate: number,
    private readonly burstMs = 50,
    private readonly now: () => number = () => performance.now(),
  ) {}

  /** Reserves `bytes` and returns the time (in `now()` ms) at which they may pass. */
  reserve(bytes: number): number {
    if (this.rate <= 0) return 0;
    const t = this.now();
    const start = Math.max(this.#next, t - this.burstMs);
    this.#next = start + (bytes / this.rate) * 1000;
    return this.#next - this.burstMs;
  }
}

/** Waits until every limit lets `bytes` pass: the slowest decides, delays do not add up. */
export async function throttle(bytes: number, limits: readonly RateLimit[], signal?: AbortSignal): Promise<void> {
  let until = 0;
  for (const l of limits) until = Math.max(until, l.reserve(bytes));
  const wait = until - performance.now();
  if (wait <= 1) return;
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, wait);
    const onAbort = () => {
      clearTimeout(timer);
      reject(signal!.reason);
    };
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}
