import { appendFileSync, existsSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

/**
 * The patch log: human-readable lines, append-only, `<ISO time>  <message>`, in
 * `patch.log` in the state directory. Past `maxBytes` it is rotated to patch.log.1
 * (up to `keep` old files). Every task start and stop, scan result, download,
 * install and error is a line here.
 */
export class PatchLog {
  readonly file: string;

  constructor(
    state: string,
    private readonly maxBytes = 1024 * 1024,
    private readonly keep = 3,
    private readonly now: () => Date = () => new Date(),
  ) {
    this.file = join(state, 'patch.log');
  }

  write(message: string): void {
    const line = `${this.now().toISOString()}  ${message.replace(/\r?\n/g, ' | ')}\n`;
    if (existsSync(this.file) && statSync(this.file).size + line.length > this.maxBytes) this.#rotate();
    appendFileSync(this.file, line);
  }

  #rotate(): void {
    rmSync(`${this.file}.${this.keep}`, { force: true });
    for (let i = this.keep - 1; i >= 1; i--) if (existsSync(`${this.file}.${i}`)) renameSync(`${this.file}.${i}`, `${this.file}.${i + 1}`);
    renameSync(this.file, `${this.file}.1`);
  }

  read(): string {
    return existsSync(this.file) ? readFileSync(this.file, 'utf8') : '';
  }

  /** Empties the log (older rotated files too), leaving one line that says so. */
  clear(by: string): void {
    for (let i = 1; i <= this.keep; i++) rmSync(`${this.file}.${i}`, { force: true });
    writeFileSync(this.file, '');
    this.write(`patch log cleared (${by})`);
  }
}
