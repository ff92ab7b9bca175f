import { gunzipSync, gzipSync } from 'node:zlib';
import { replicationDefinition, type ReceivedMessage, type ServerMessage } from './protocol.js';

/** An encoded batch larger than this goes compressed, in parts of at most this much (CompressedPart). */
export const COMPRESS_OVER = 64 * 1024;
/** A compressed batch's size at most, before and after inflating: the child's limit for one message. */
export const MAX_MESSAGE_BYTES = 64 * 1024 * 1024;

/**
 * A message as the frames a child gets, encoded: one, or when `compress` (the child
 * asked for it) and it is a batch of more than COMPRESS_OVER, the batch compressed
 * (gzip level 1: one pass, built once per language set and shared) in parts of at
 * most COMPRESS_OVER. A stream's unsent messages are then small whatever the batch's
 * size: grpc-js copies each message it is given and holds it until the child's flow
 * control lets it go, and a catalog's first release is about 1 MB per 20,000 updates.
 */
export function encodeFrames(msg: ServerMessage, compress: boolean): Buffer[] {
  const serialize = replicationDefinition().Subscribe.responseSerialize;
  const bytes = serialize(msg);
  if (!compress || !msg.batch || bytes.length <= COMPRESS_OVER) return [bytes];
  const gz = gzipSync(bytes, { level: 1 });
  const frames: Buffer[] = [];
  for (let at = 0; at < gz.length; at += COMPRESS_OVER) {
    const end = Math.min(gz.length, at + COMPRESS_OVER);
    frames.push(serialize({ compressed: { gzip: gz.subarray(at, end), last: end === gz.length } }));
  }
  return frames;
}

/**
 * A child's side of compressed batches: each part is kept until the last, then the
 * whole is inflated and decoded. Throws on anything out of place (a message other than
 * a heartbeat between parts, one too large, a whole that is not a batch): the stream
 * is then ended.
 */
export class Unpacker {
  #parts: Buffer[] = [];
  #bytes = 0;

  /** The message to apply: `msg` itself, null while a compressed batch is incomplete, or the batch once whole. */
  take(msg: ReceivedMessage): ReceivedMessage | null {
    const part = msg.compressed;
    if (!part) {
      // A parent whose schedule closes mid-snapshot sends heartbeats meanwhile.
      if (this.#parts.length && !msg.heartbeat) throw new Error(`a ${msg.body ?? 'message'} message between the parts of a compressed batch`);
      return msg;
    }
    this.#bytes += part.gzip.length;
    if (this.#bytes > MAX_MESSAGE_BYTES) throw new Error(`a compressed batch of more than ${MAX_MESSAGE_BYTES} bytes`);
    this.#parts.push(part.gzip);
    if (!part.last) return null;
    const gz = Buffer.concat(this.#parts);
    this.#parts = [];
    this.#bytes = 0;
    let out: ReceivedMessage;
    try {
      out = replicationDefinition().Subscribe.responseDeserialize(gunzipSync(gz, { maxOutputLength: MAX_MESSAGE_BYTES })) as ReceivedMessage;
    } catch (err) {
      throw new Error(`a compressed batch that does not inflate and decode: ${(err as Error).message}`);
    }
    if (!out.batch) throw new Error(`a compressed ${out.body ?? 'empty'} message, not a batch`);
    return out;
  }
}
