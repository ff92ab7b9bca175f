import { fileURLToPath } from 'node:url';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import type { ProtoGrpcType } from '../gen/proto/replication.js';
import type { ReplicationClient, ReplicationDefinition, ReplicationHandlers } from '../gen/proto/patchtree/replication/v1/Replication.js';
import type { ServerMessage as ServerMessageIn, ServerMessage__Output } from '../gen/proto/patchtree/replication/v1/ServerMessage.js';
import type { SubscribeRequest__Output } from '../gen/proto/patchtree/replication/v1/SubscribeRequest.js';
import type { NodeReport, NodeReport__Output } from '../gen/proto/patchtree/replication/v1/NodeReport.js';
import type { Change } from '../changelog/index.js';

/**
 * The replication wire: its version, and the service's types generated from
 * proto/patchtree/replication/v1/replication.proto (src/gen/proto, `npm run
 * proto:types`), used by the parent's handlers and the child's client alike.
 *
 * Wire protocol version. Log of changes (docs/replication.md):
 *   1 - Join, Subscribe (hello, batches, heartbeats, resync), Ack, FetchFile.
 *       Added since, without a new version (an older parent answers UNIMPLEMENTED):
 *       Report (the compliance roll-up); change kind `policy`.
 *   2 - Update payloads in catalog format 2: each file has its `installer`, files in
 *       catalog order, `install` without `command`. A version-1 node could not store
 *       them, so parent and child must both speak 2 (upgrade the parent first).
 *       Added since, without a new version (a child asks; an older parent ignores the
 *       question): snapshot files, tail files, compressed batches.
 */
export const PROTOCOL_VERSION = 2;

/** Trailer of a deferred FetchFile refusal (UNAVAILABLE): milliseconds until the child should ask again. */
export const RETRY_AFTER_KEY = 'patchtree-retry-after-ms';
export const SUPPORTED_PROTOCOL_VERSIONS: readonly number[] = [2];

export const PROTO_DIR = fileURLToPath(new URL('../../../proto', import.meta.url));

export type { ReplicationClient, ReplicationHandlers };
/** A message a parent sends (longs as numbers or strings). */
export type ServerMessage = ServerMessageIn;
/** A message as a child receives it (longs as strings). */
export type ReceivedMessage = ServerMessage__Output;
export type SubscribeRequest = SubscribeRequest__Output;
/** One node's summary in a Report call, as a child sends it (JSON in `summary`; see reports/rollup.ts). */
export type WireNodeReport = Required<NodeReport>;
/** A node's summary as a parent receives it (longs as strings, bytes as Buffers). */
export type ReceivedNodeReport = NodeReport__Output;
/** One change on the wire: the change log's. */
export type WireChange = Change;

const ENCODED = Symbol('patchtree.encoded');

/** A message already encoded (a frame of a shared snapshot): written to the stream as these bytes (wire.ts). */
export function encoded(bytes: Buffer): ServerMessage {
  const m: ServerMessage = {};
  Object.defineProperty(m, ENCODED, { value: bytes });
  return m;
}

/** The bytes of a message made by `encoded`, else undefined. */
export function encodedBytes(m: unknown): Buffer | undefined {
  return (m as { [ENCODED]?: Buffer } | null)?.[ENCODED];
}

type ReplicationConstructor = ProtoGrpcType['patchtree']['replication']['v1']['Replication'];
let cached: ReplicationConstructor | null = null;

/** The Replication service: its client constructor and `service` definition, loaded from proto/ (longs as strings, bytes as Buffers). */
export function replicationService(): ReplicationConstructor {
  if (cached) return cached;
  const def = protoLoader.loadSync('patchtree/replication/v1/replication.proto', {
    includeDirs: [PROTO_DIR],
    keepCase: true,
    longs: String,
    enums: String,
    defaults: true,
    oneofs: true,
  });
  const pkg = grpc.loadPackageDefinition(def) as object as ProtoGrpcType;
  cached = pkg.patchtree.replication.v1.Replication;
  return cached;
}

/** The service definition, for a server. */
export function replicationDefinition(): ReplicationDefinition {
  return replicationService().service;
}
