import protobuf from 'protobufjs';
import * as grpc from '@grpc/grpc-js';
import { AppError } from '../lib/errors.js';
import { PROTO_DIR, RETRY_AFTER_KEY, encodedBytes } from './protocol.js';

/** A gRPC status error as grpc-js sends it: code, details and trailers. */
export type StatusError = Error & { code: number; details: string; metadata?: grpc.Metadata };

/**
 * An error as the status a call ends with, the gRPC side of the error catalogue
 * (lib/errors.ts; the HTTP side is http/app.ts): an AppError by its code (a
 * `deferred` one with its retry-after trailer), a status from another call as it
 * is, anything else INTERNAL.
 */
export function toStatus(err: unknown): StatusError {
  if (err instanceof AppError) {
    const metadata = new grpc.Metadata();
    const retry = err.extra.retryAfterMs;
    if (typeof retry === 'number') metadata.set(RETRY_AFTER_KEY, String(Math.max(1_000, Math.round(retry))));
    return Object.assign(new Error(err.message), { code: err.grpcStatus, details: err.message, metadata });
  }
  const e = err as { code?: unknown; details?: unknown; message?: string; metadata?: grpc.Metadata };
  if (typeof e.code === 'number' && typeof e.details === 'string')
    return Object.assign(new Error(e.details), { code: e.code, details: e.details, ...(e.metadata ? { metadata: e.metadata } : {}) });
  const details = e.message ?? String(err);
  return Object.assign(new Error(details), { code: grpc.status.INTERNAL, details });
}

/**
 * The wire itself, checked before a message is decoded: protobufjs reads a field sent
 * with another wire type as some other value, and invalid UTF-8 as U+FFFD. A message
 * with either is marked (`invalidField`) and the handler refuses it with
 * `INVALID_ARGUMENT` naming the field (replication/validate.ts), so nothing of it is
 * acted on.
 */

const VARINT = new Set(['int32', 'int64', 'uint32', 'uint64', 'sint32', 'sint64', 'bool', 'enum']);
const FIXED64 = new Set(['fixed64', 'sfixed64', 'double']);
const FIXED32 = new Set(['fixed32', 'sfixed32', 'float']);
const utf8 = new TextDecoder('utf-8', { fatal: true });

function expected(f: protobuf.Field): number {
  if (f.resolvedType instanceof protobuf.Enum) return 0;
  if (VARINT.has(f.type)) return 0;
  if (FIXED64.has(f.type)) return 1;
  if (FIXED32.has(f.type)) return 5;
  return 2; // string, bytes, messages
}

/** The first field whose wire type or text is wrong (`reports[].name`), or null. */
export function wireProblem(type: protobuf.Type, buf: Uint8Array, path = ''): string | null {
  const r = protobuf.Reader.create(buf);
  while (r.pos < r.len) {
    const tag = r.uint32();
    const wt = tag & 7;
    const f = type.fieldsById[tag >>> 3];
    if (!f) {
      r.skipType(wt);
      continue;
    }
    const name = `${path}${f.name}${f.repeated ? '[]' : ''}`;
    const want = expected(f);
    // Repeated numbers may come packed (length-delimited).
    if (wt !== want && !(f.repeated && want !== 2 && wt === 2)) return `${name}: sent with wire type ${wt}, expected ${want}`;
    if (wt !== 2) {
      r.skipType(wt);
      continue;
    }
    const bytes = r.bytes();
    if (f.type === 'string') {
      try {
        utf8.decode(bytes);
      } catch {
        return `${name}: not valid UTF-8`;
      }
    } else if (f.resolvedType instanceof protobuf.Type) {
      const inner = wireProblem(f.resolvedType, bytes, `${name}.`);
      if (inner) return inner;
    }
  }
  return null;
}

let root: protobuf.Root | null = null;

/**
 * The service definition with each request checked on the wire before it is decoded;
 * a message with a problem carries it as a non-enumerable `invalidField`.
 */
export function checkedService(def: grpc.ServiceDefinition): grpc.ServiceDefinition {
  if (!root) {
    root = protobuf.loadSync(`${PROTO_DIR}/patchtree/replication/v1/replication.proto`);
    root.resolveAll();
  }
  const r = root;
  const out: Record<string, unknown> = {};
  for (const [name, m] of Object.entries(def)) {
    const type = r.lookupType(`patchtree.replication.v1.${name}Request`);
    const decode = m.requestDeserialize;
    const serialize = m.responseSerialize;
    out[name] = {
      ...m,
      // A message encoded once for many streams (a shared snapshot's frame) goes out as it is.
      responseSerialize: (v: unknown) => encodedBytes(v) ?? serialize(v),
      requestDeserialize: (buf: Buffer) => {
        let problem: string | null;
        try {
          problem = wireProblem(type, buf);
        } catch (err) {
          problem = `(message): not a ${name}Request: ${(err as Error).message}`;
        }
        // Not decoded at all when the wire is wrong: the handler sees only the problem.
        if (problem) return Object.defineProperty({}, 'invalidField', { value: problem, enumerable: false });
        return decode(buf);
      },
    };
  }
  return out as grpc.ServiceDefinition;
}
