import { createHash } from 'node:crypto';
import { connect } from 'node:net';
import { join, resolve } from 'node:path';

/** The running agent's control socket: a Unix socket in the state dir (a named pipe on Windows). */
export function controlPath(state: string): string {
  if (process.platform === 'win32') return `\\\\.\\pipe\\patchtree-agent-${createHash('sha256').update(resolve(state)).digest('hex').slice(0, 16)}`;
  return join(state, 'agent.sock');
}

export class NotRunning extends Error {}
/** The agent answered, and said no (an unknown task, one already running). */
export class Refused extends Error {}

/** Sends one command to the running agent; NotRunning when none listens. */
export function controlRequest<T>(state: string, req: Record<string, unknown>, timeoutMs = 120_000): Promise<T> {
  return new Promise((resolvePromise, reject) => {
    const sock = connect(controlPath(state));
    let buf = '';
    const timer = setTimeout(() => {
      sock.destroy();
      reject(new Error('the agent did not answer'));
    }, timeoutMs);
    sock.on('connect', () => sock.write(`${JSON.stringify(req)}\n`));
    sock.on('data', (d) => (buf += d.toString('utf8')));
    sock.on('end', () => {
      clearTimeout(timer);
      try {
        const r = JSON.parse(buf) as { ok: boolean; result?: T; error?: string };
        if (r.ok) resolvePromise(r.result as T);
        else reject(new Refused(r.error ?? 'failed'));
      } catch (err) {
        reject(err as Error);
      }
    });
    sock.on('error', (err: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      reject(err.code === 'ENOENT' || err.code === 'ECONNREFUSED' ? new NotRunning(`no agent is running with state ${state}`) : err);
    });
  });
}
