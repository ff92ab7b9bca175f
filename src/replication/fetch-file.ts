import { createHash } from 'node:crypto';
import type * as grpc from '@grpc/grpc-js';
import { DeferredError } from '../content/downloader.js';
import { RETRY_AFTER_KEY, type ReplicationClient } from './protocol.js';

/**
 * Reads one file from the parent from `offset` (FetchFile), checking each chunk's
 * SHA-256: a corrupted chunk is refused before it reaches the disk, and the download
 * resumes from the last good byte. A parent that defers the file (its own copy not
 * there yet) ends it with a DeferredError carrying when to ask again.
 */
export async function* fetchFile(
  client: ReplicationClient,
  metadata: grpc.Metadata,
  sha256: string,
  offset: number,
  signal: AbortSignal,
): AsyncGenerator<Uint8Array> {
  const call = client.FetchFile({ sha256, offset }, metadata);
  const onAbort = () => call.cancel();
  signal.addEventListener('abort', onAbort, { once: true });
  let at = offset;
  try {
    for await (const chunk of call) {
      if (Number(chunk.offset) !== at) throw new Error(`chunk at ${chunk.offset}, expected ${at}`);
      if (!createHash('sha256').update(chunk.data).digest().equals(chunk.chunk_sha256)) throw new Error(`corrupted chunk at offset ${at} refused`);
      at += chunk.data.length;
      yield chunk.data;
    }
  } catch (err) {
    const e = err as { details?: string; metadata?: grpc.Metadata };
    const retry = Number(e.metadata?.get(RETRY_AFTER_KEY)[0] ?? NaN);
    if (Number.isFinite(retry)) throw new DeferredError(e.details ?? 'deferred by the upstream node', Date.now() + retry);
    throw new Error(e.details ?? (err as Error).message);
  } finally {
    signal.removeEventListener('abort', onAbort);
    call.cancel();
  }
}
