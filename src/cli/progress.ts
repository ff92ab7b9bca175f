/**
 * One line of progress on stderr, rewritten in place, when stderr is a terminal; nothing
 * at all in a pipe or a log (the command's result, on stdout, is all a script sees).
 */
export class Progress {
  #shown = false;
  #last = 0;

  constructor(readonly enabled = Boolean(process.stderr.isTTY)) {}

  /** Shows `text` (at most ten times a second unless `force`). */
  show(text: string, force = false): void {
    if (!this.enabled) return;
    const now = Date.now();
    if (!force && now - this.#last < 100) return;
    this.#last = now;
    process.stderr.write(`\r${text.slice(0, Math.max(20, (process.stderr.columns ?? 100) - 1))}\x1b[K`);
    this.#shown = true;
  }

  /** Clears the line. */
  done(): void {
    if (this.#shown) process.stderr.write('\r\x1b[K');
    this.#shown = false;
  }
}
