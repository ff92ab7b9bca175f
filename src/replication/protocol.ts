import { fileURLToPath } from 'node:url';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { anyLanguageMatches } from '../lib/languages.js';

/**
 * Wire protocol version. Log of changes (docs/replication.md):
 *   1 - Join, Subscribe (hello, batches, heartbeats, resync), Ack, FetchFile.
 *       Added since, without a new version (an older parent answers UNIMPLEMENTED):
 *       Report (the compliance roll-up); change kind `policy`.
 *   2 - Update payloads in catalog format 2: each file has its `installer`, files in
 *       catalog order, `install` without `command`. A version-1 node could not store
 *       them, so parent and child must both speak 2 (upgrade the parent first).
 */
export const PROTOCOL_VERSION = 2;

/** Trailer of a deferred FetchFile refusal (UNAVAILABLE): milliseconds until the child should ask again. */
export const RETRY_AFTER_KEY = 'patchtree-retry-after-ms';
export const SUPPORTED_PROTOCOL_VERSIONS: readonly number[] = [2];

export const PROTO_DIR = fileURLToPath(new URL('../../../proto', import.meta.url));

export interface SubscribeRequest {
  protocol_version: number;
  node_id: string;
  epoch: string;
  after_seq: string | number;
  languages: string[];
  name: string;
  version: string;
}

export interface WireChange {
  seq: string | number;
  kind: string;
  key: string;
  op: string;
  payload: Buffer;
}

export type ServerMessage =
  | { hello: { parent_id: string; epoch: string; head_seq: string | number; mode: string; reason: string } }
  | { batch: { changes: WireChange[]; cursor: string | number; snapshot: boolean } }
  | { heartbeat: { head_seq: string | number; time_ms: string | number; paused_until_ms?: string | number } }
  | { resync_start: { reason: string; full: boolean } }
  | { resync_end: { cursor: string | number; full: boolean } };

/** One node's summary in a Report call (JSON in `summary`; see reports/rollup.ts). */
export interface WireNodeReport {
  node_id: string;
  name: string;
  parent_id: string;
  age_ms: string | number;
  interval_ms: number;
  digest: string;
  summary: Buffer;
}

let cached: grpc.ServiceClientConstructor | null = null;

/** The Replication service definition, loaded from proto/ (longs as strings, bytes as Buffers). */
export function replicationService(): grpc.ServiceClientConstructor {
  if (cached) return cached;
  const def = protoLoader.loadSync('patchtree/replication/v1/replication.proto', {
    includeDirs: [PROTO_DIR],
    keepCase: true,
    longs: String,
    enums: String,
    defaults: true,
    oneofs: true,
  });
  cached = (grpc.loadPackageDefinition(def) as unknown as { patchtree: { replication: { v1: { Replication: grpc.ServiceClientConstructor } } } }).patchtree.replication.v1.Replication;
  return cached;
}

/**
 * A payload that lists updates as tuples with their file languages at `at` (a
 * policy's `[id, languages]`, a release's `[id, revision, languages, family]`), for a
 * subscriber: only the updates with files in its languages (or none). Sent as stored
 * when nothing is left out.
 */
export function filterUpdateList(payload: string, at: number, languages: readonly string[]): Buffer {
  const p = JSON.parse(payload) as { updates: unknown[][] };
  const updates = p.updates.filter((u) => anyLanguageMatches(u[at] as string, languages));
  return Buffer.from(updates.length === p.updates.length ? payload : JSON.stringify({ ...p, updates }));
}
