import { readFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { resolve, join } from 'node:path';
import { parseArgs } from 'node:util';
import { usageOf } from '../lib/args.js';
import { z } from 'zod';
import { LOG_FORMATS, LOG_LEVELS } from '../lib/log.js';
import { LANGUAGE_TAG } from '../lib/languages.js';

/**
 * Node configuration: parsed and validated once at start from, in rising order of
 * precedence, the embedded defaults, an optional JSON config file, `PATCHTREE_*`
 * environment variables and command-line flags. The result is frozen and passed
 * down; nothing else reads flags or the environment.
 */

const port = z.coerce.number().int().min(0).max(65535);
const languages = z
  .array(z.string().trim().toLowerCase().regex(LANGUAGE_TAG, 'expected language tags like en, de, pt-br'))
  .min(1, 'at least one language')
  .transform((l) => [...new Set(l)].sort());

/** Every option: its schema, its flag (kebab-case), whether it repeats, its help text. */
export const OPTIONS = {
  data: { schema: z.string().min(1), help: 'Data directory: database, admin token, content store.', default: './data' },
  databaseUrl: {
    schema: z.string().regex(/^(file:|libsql:\/\/|https?:\/\/|wss?:\/\/)/, 'expected a file:, libsql://, http(s):// or ws(s):// URL'),
    help: 'Database URL. Default file:<data>/patchtree.db; libsql://, http(s):// reach a libsql server.',
  },
  databaseAuthToken: { schema: z.string().min(1), help: 'Auth token for a remote libsql server.', secret: true },
  httpHost: { schema: z.string().min(1), help: 'HTTP listen address.', default: '0.0.0.0' },
  httpPort: { schema: port, help: 'HTTP listen port (0 picks a free one).', default: 8080 },
  httpsPort: {
    schema: port,
    help: "HTTPS listen port (0 picks a free one): the API, console and agent API over TLS with the node's certificate.",
    default: 8443,
  },
  tlsSan: {
    schema: z.array(z.string().regex(/^[A-Za-z0-9.:*-]{1,253}$/, 'a host name or address')),
    help: "Another name or address for the node's own certificate (repeatable); it always covers the host name, localhost, 127.0.0.1 and ::1.",
    default: [] as string[],
    list: true,
    multiple: true,
  },
  grpcHost: { schema: z.string().min(1), help: 'gRPC listen address.', default: '0.0.0.0' },
  grpcPort: { schema: port, help: 'gRPC listen port (0 picks a free one).', default: 50051 },
  name: { schema: z.string().trim().min(1).max(100), help: 'Node name shown in the hierarchy. Default: the host name.' },
  languages: { schema: languages, help: 'Languages this node manages, comma separated (e.g. en,de).', default: ['en'], list: true },
  trustedKey: {
    schema: z.array(z.string().min(1)),
    help: 'Trusted catalog publisher public key file (repeatable).',
    default: [] as string[],
    list: true,
    multiple: true,
  },
  adminToken: {
    schema: z.string().min(16, 'at least 16 characters').max(200),
    help: 'Bootstrap admin token. Default: generated on first start and written to <data>/admin-token.',
    secret: true,
  },
  logLevel: { schema: z.enum(LOG_LEVELS), help: `Log level: ${LOG_LEVELS.join(', ')}.`, default: 'info' },
  logFormat: {
    schema: z.enum(LOG_FORMATS),
    help: 'Log format: pretty (one readable line per record, colours), json (one JSON object per line, for journald, files and log shippers), or auto: pretty on a terminal, json otherwise.',
    default: 'auto',
  },
  catalogUrl: {
    schema: z.url({ protocol: /^https?$/ }),
    help: 'Catalog feed URL to follow (its signature at <url>.sig); checked every --catalog-interval.',
  },
  catalogInterval: {
    schema: z.coerce
      .number()
      .int()
      .min(10)
      .max(7 * 86400),
    help: 'Seconds between catalog feed checks.',
    default: 3600,
  },
  maxCatalogBytes: {
    schema: z.coerce.number().int().min(1024),
    help: 'Largest catalog file accepted for import, in bytes.',
    default: 2 * 1024 ** 3,
  },
  upstream: {
    schema: z.string().regex(/^[A-Za-z0-9.\-_[\]:]+:\d{1,5}$/, 'expected HOST:PORT'),
    help: "The parent node's gRPC address (HOST:PORT); makes this node a child.",
  },
  joinToken: {
    schema: z.string().min(10).max(200),
    help: 'One-time join token from the parent (POST /api/v1/hierarchy/join-tokens); needed on the first start only.',
    secret: true,
  },
  insecure: {
    schema: z.union([z.boolean(), z.enum(['true', 'false', '1', '0']).transform((v) => v === 'true' || v === '1')]),
    help: 'Allow plaintext gRPC replication (no TLS). Only for labs and tests.',
    default: false,
    boolean: true,
  },
  insecureHttp: {
    schema: z.union([z.boolean(), z.enum(['true', 'false', '1', '0']).transform((v) => v === 'true' || v === '1')]),
    help: 'Serve the API, the agent API and the console on plain HTTP too (labs, tests, a TLS-terminating proxy in front). Without it plain HTTP serves /healthz, /metrics, /openapi.json and /docs only: the console redirects to HTTPS, /api and /agent answer 403.',
    default: false,
    boolean: true,
  },
  tlsCert: { schema: z.string().min(1), help: "PEM certificate of this node's gRPC server (and its client certificate upstream)." },
  tlsKey: { schema: z.string().min(1), help: 'PEM private key for --tls-cert.' },
  tlsCa: { schema: z.string().min(1), help: 'PEM CA bundle: verifies the parent, and when set on a parent, requires client certificates (mutual TLS).' },
  changeLogRetention: {
    schema: z.coerce.number().int().min(10),
    help: 'Change-log entries kept for children; a child further behind gets a complete resync.',
    default: 1_000_000,
  },
  initialSync: {
    schema: z.enum(['file', 'rows']),
    help: "How a child that holds no update yet asks for its parent's complete resync: file (the catalog as SQLite files in parts, each checked by its SHA-256 and its tables, then copied in one transaction: fastest) or rows (batches of changes).",
    default: 'file',
  },
  catchUp: {
    schema: z.enum(['file', 'rows']),
    help: 'How a child takes a long run of new or changed updates from its parent (an import on its way down, 256 or more): file (up to 10,000 updates as an SQLite file, checked by its SHA-256 and applied in one transaction: fastest) or rows (batches of changes).',
    default: 'file',
  },
  reportInterval: {
    schema: z.coerce.number().min(1).max(86_400),
    help: 'Seconds between compliance reports to the parent (also sent soon after a change); the parent shows a node stale after three missed.',
    default: 60,
  },
  clockFile: {
    schema: z.string().min(1),
    help: "Testing only: read the node's clock for catalog freshness (ms since the epoch, or ISO 8601) from this file; the system clock when unset.",
  },
  config: { schema: z.string().min(1), help: 'JSON config file with any of these options (camelCase keys).' },
} as const satisfies Record<string, OptionSpec>;

interface OptionSpec {
  schema: z.ZodType;
  help: string;
  default?: unknown;
  list?: boolean;
  multiple?: boolean;
  secret?: boolean;
  boolean?: boolean;
}

type Key = keyof typeof OPTIONS;

export interface NodeConfig {
  readonly data: string;
  readonly databaseUrl: string;
  readonly databaseAuthToken: string | undefined;
  readonly httpHost: string;
  readonly httpPort: number;
  readonly httpsPort: number;
  readonly tlsSan: readonly string[];
  readonly grpcHost: string;
  readonly grpcPort: number;
  readonly name: string;
  readonly languages: readonly string[];
  readonly trustedKeys: readonly string[];
  readonly adminToken: string | undefined;
  readonly logLevel: (typeof LOG_LEVELS)[number];
  readonly logFormat: (typeof LOG_FORMATS)[number];
  readonly catalogUrl: string | undefined;
  readonly catalogInterval: number;
  readonly maxCatalogBytes: number;
  readonly upstream: string | undefined;
  readonly joinToken: string | undefined;
  readonly insecure: boolean;
  readonly insecureHttp: boolean;
  readonly tlsCert: string | undefined;
  readonly tlsKey: string | undefined;
  readonly tlsCa: string | undefined;
  readonly changeLogRetention: number;
  readonly initialSync: 'file' | 'rows';
  readonly catchUp: 'file' | 'rows';
  readonly reportInterval: number;
  readonly clockFile: string | undefined;
}

export class ConfigError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ConfigError';
  }
}

const kebab = (k: string): string => k.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`);
const envName = (k: string): string => `PATCHTREE_${kebab(k).replace(/-/g, '_').toUpperCase()}`;

/** `--help` text for `patchtree serve`: every option with its flag, env variable and default. */
export function configHelp(): string {
  const lines = ['Options (flag / environment variable; flags win over env, env over --config file):', ''];
  for (const [key, spec] of Object.entries(OPTIONS) as [Key, OptionSpec][]) {
    const def = 'default' in spec && spec.default !== undefined ? ` [default: ${JSON.stringify(spec.default)}]` : '';
    lines.push(
      `  --${kebab(key)}${spec.multiple ? ' (repeatable)' : ''}${spec.boolean ? ' (flag)' : ''}  /  ${envName(key === 'trustedKey' ? 'trustedKeys' : key)}`,
    );
    lines.push(`      ${spec.help}${def}`);
  }
  return lines.join('\n');
}

function splitList(v: unknown): unknown {
  return typeof v === 'string'
    ? v
        .split(',')
        .map((s) => s.trim())
        .filter(Boolean)
    : v;
}

/**
 * Parses argv (without the command word), env and the optional config file into a
 * frozen NodeConfig. Throws ConfigError naming the offending option on any bad value.
 * `extraFlags` lets a command accept flags of its own beside the node's options.
 */
export function loadConfig(argv: readonly string[], env: NodeJS.ProcessEnv = process.env): NodeConfig {
  const parseOptions: Record<string, { type: 'string' | 'boolean'; multiple?: boolean }> = {};
  for (const [key, spec] of Object.entries(OPTIONS) as [Key, OptionSpec][]) {
    parseOptions[kebab(key)] = { type: spec.boolean ? 'boolean' : 'string', ...(spec.multiple ? { multiple: true } : {}) };
  }
  let flags: Record<string, string | string[] | undefined>;
  try {
    flags = parseArgs({ args: [...argv], options: parseOptions, strict: true, allowPositionals: false }).values as Record<
      string,
      string | string[] | undefined
    >;
    for (const [k, v] of Object.entries(flags)) if (typeof v === 'boolean') flags[k] = String(v);
  } catch (err) {
    throw new ConfigError(usageOf(err, Object.keys(parseOptions), 'patchtree serve').message);
  }

  const configPath = (flags.config as string | undefined) ?? env[envName('config')];
  let fileValues: Record<string, unknown> = {};
  if (configPath) {
    try {
      const parsed: unknown = JSON.parse(readFileSync(configPath, 'utf8'));
      if (!parsed || typeof parsed !== 'object' || Array.isArray(parsed)) throw new Error('expected a JSON object');
      fileValues = parsed as Record<string, unknown>;
    } catch (err) {
      throw new ConfigError(`config: cannot read ${configPath}: ${(err as Error).message}`);
    }
    for (const k of Object.keys(fileValues)) {
      const key = k === 'trustedKeys' ? 'trustedKey' : k;
      if (!(key in OPTIONS) || key === 'config') throw new ConfigError(`config: unknown option "${k}" in ${configPath}`);
    }
  }

  const raw: Record<string, unknown> = {};
  for (const [key, spec] of Object.entries(OPTIONS) as [Key, OptionSpec][]) {
    if (key === 'config') continue;
    const fromFlag = flags[kebab(key)];
    const envKey = key === 'trustedKey' ? envName('trustedKeys') : envName(key);
    const fromEnv = env[envKey];
    const fromFile = key === 'trustedKey' ? (fileValues.trustedKeys ?? fileValues.trustedKey) : fileValues[key];
    let value: unknown =
      fromFlag !== undefined && !(Array.isArray(fromFlag) && fromFlag.length === 0)
        ? fromFlag
        : fromEnv !== undefined && fromEnv !== ''
          ? fromEnv
          : fromFile !== undefined
            ? fromFile
            : spec.default;
    if (spec.list) value = Array.isArray(value) ? value.flatMap((v) => splitList(v) as unknown[]) : splitList(value);
    if (value === undefined) continue;
    const result = spec.schema.safeParse(value);
    if (!result.success) {
      const issue = result.error.issues[0];
      throw new ConfigError(`invalid --${kebab(key)} (${envKey}): ${issue?.message ?? 'invalid value'}${spec.secret ? '' : ` (got ${JSON.stringify(value)})`}`);
    }
    raw[key] = result.data;
  }

  const data = resolve(raw.data as string);
  const config: NodeConfig = {
    data,
    databaseUrl: (raw.databaseUrl as string | undefined) ?? `file:${join(data, 'patchtree.db')}`,
    databaseAuthToken: raw.databaseAuthToken as string | undefined,
    httpHost: raw.httpHost as string,
    httpPort: raw.httpPort as number,
    httpsPort: raw.httpsPort as number,
    tlsSan: Object.freeze(raw.tlsSan as string[]),
    grpcHost: raw.grpcHost as string,
    grpcPort: raw.grpcPort as number,
    name: (raw.name as string | undefined) ?? hostname(),
    languages: Object.freeze(raw.languages as string[]),
    trustedKeys: Object.freeze((raw.trustedKey as string[]).map((p) => resolve(p))),
    adminToken: raw.adminToken as string | undefined,
    logLevel: raw.logLevel as NodeConfig['logLevel'],
    logFormat: raw.logFormat as NodeConfig['logFormat'],
    catalogUrl: raw.catalogUrl as string | undefined,
    catalogInterval: raw.catalogInterval as number,
    maxCatalogBytes: raw.maxCatalogBytes as number,
    upstream: raw.upstream as string | undefined,
    joinToken: raw.joinToken as string | undefined,
    insecure: raw.insecure as boolean,
    insecureHttp: raw.insecureHttp as boolean,
    tlsCert: raw.tlsCert as string | undefined,
    tlsKey: raw.tlsKey as string | undefined,
    tlsCa: raw.tlsCa as string | undefined,
    changeLogRetention: raw.changeLogRetention as number,
    initialSync: raw.initialSync as NodeConfig['initialSync'],
    catchUp: raw.catchUp as NodeConfig['catchUp'],
    reportInterval: raw.reportInterval as number,
    clockFile: raw.clockFile === undefined ? undefined : resolve(raw.clockFile as string),
  };
  if ((config.tlsCert === undefined) !== (config.tlsKey === undefined)) throw new ConfigError('invalid --tls-cert / --tls-key: give both or neither');
  if (config.upstream && config.joinToken && !config.insecure && !config.tlsCa && !/\.[0-9a-f]{64}$/.test(config.joinToken))
    throw new ConfigError(
      "invalid --join-token: replication needs TLS: give the join token as the parent hands it out (<token>.<sha256 of the parent's CA>) so that this node verifies its parent, or --tls-ca, or --insecure for a lab",
    );
  if (config.upstream && !config.databaseUrl.startsWith('file:'))
    throw new ConfigError('invalid --upstream: a child node applies what it receives to a local SQLite file; --database-url must be a file: URL on a child');

  return Object.freeze(config);
}
