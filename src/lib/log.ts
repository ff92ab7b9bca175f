import { pino, type Logger, type DestinationStream } from 'pino';

export type { Logger };

export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];

/**
 * The root logger of a process. Modules receive it (or a `child({ module })` of it)
 * from the wiring in node/, never import a global one. Secrets are redacted by path
 * so that a config or request object logged by mistake does not leak them.
 */
export function createLogger(level: LogLevel, destination?: DestinationStream): Logger {
  return pino(
    {
      level,
      base: { pid: process.pid },
      redact: {
        paths: ['adminToken', 'config.adminToken', 'databaseAuthToken', 'config.databaseAuthToken', 'req.headers.authorization', 'token', 'secret'],
        censor: '[redacted]',
      },
    },
    destination ?? pino.destination({ fd: 1, sync: false }),
  );
}
