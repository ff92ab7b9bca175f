import { pino, type Logger, type DestinationStream } from 'pino';
import pretty from 'pino-pretty';

export type { Logger };

export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];
export const LOG_FORMATS = ['auto', 'pretty', 'json'] as const;
export type LogFormat = (typeof LOG_FORMATS)[number];

/**
 * Where a node's log goes: JSON lines on stdout (for journald, files and log shippers),
 * or, on a terminal (`auto`) or when asked (`pretty`), one readable line per record:
 * the time, the level, the module and the message, then the other fields.
 */
export function logDestination(format: LogFormat, tty = Boolean(process.stdout.isTTY)): DestinationStream | undefined {
  if (format === 'json' || (format === 'auto' && !tty)) return undefined;
  return pretty({
    colorize: tty,
    translateTime: 'SYS:HH:MM:ss.l',
    ignore: 'pid,hostname,module',
    messageFormat: '{if module}[{module}] {end}{msg}',
    singleLine: true,
    sync: true,
  });
}

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
