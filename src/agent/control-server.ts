import { chmodSync, rmSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { createInterface } from 'node:readline';
import { controlPath } from './control.js';

/**
 * The agent's control socket (a named pipe on Windows, a Unix socket elsewhere,
 * mode 0600): one JSON command a line, one JSON answer, for `patchtree agent`'s
 * status, tasks, run, stop, update-data and clear-retries.
 */

export interface ControlHandlers {
  status(): unknown;
  tasks(): unknown;
  runTask(name: string): unknown;
  stopTask(): unknown;
  updateData(): Promise<unknown>;
  clearRetries(by: string): Promise<unknown>;
}

export async function listenControl(state: string, h: ControlHandlers): Promise<Server> {
  const path = controlPath(state);
  if (process.platform !== 'win32') rmSync(path, { force: true });
  const server = createServer((sock) => {
    createInterface({ input: sock }).once('line', (line) => {
      void (async () => {
        let out: unknown;
        try {
          const req = JSON.parse(line) as { cmd: string; task?: string; by?: string };
          switch (req.cmd) {
            case 'status':
              out = h.status();
              break;
            case 'tasks':
              out = h.tasks();
              break;
            case 'run':
              out = h.runTask(req.task ?? '');
              break;
            case 'stop':
              out = h.stopTask();
              break;
            case 'update-data':
              out = await h.updateData();
              break;
            case 'clear-retries':
              out = await h.clearRetries(req.by ?? 'by hand');
              break;
            default:
              throw new Error(`unknown command ${req.cmd}`);
          }
          sock.end(`${JSON.stringify({ ok: true, result: out })}\n`);
        } catch (err) {
          sock.end(`${JSON.stringify({ ok: false, error: (err as Error).message })}\n`);
        }
      })();
    });
    sock.on('error', () => {});
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(path, () => resolve());
  });
  if (process.platform !== 'win32') chmodSync(path, 0o600);
  return server;
}
