import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import type * as grpc from '@grpc/grpc-js';
import type { Logger } from '../lib/log.js';
import { AppError } from '../lib/errors.js';
import * as check from './validate.js';
import { parseRules, closedUntil } from './rules.js';
import { StreamClosed, firstOf } from './stream.js';
import type { Child } from './auth.js';
import type { FetchFileRequest__Output } from '../gen/proto/patchtree/replication/v1/FetchFileRequest.js';
import type { FileChunk } from '../gen/proto/patchtree/replication/v1/FileChunk.js';

/** How soon a child asks again for files this parent does not serve it. */
const FILES_OFF_RETRY_MS = 10 * 60_000;

/** What serving a file needs of the parent. */
export interface FileDeps {
  name: string;
  logger: Logger;
  /** A file this node holds verified, to serve (content/service.ts). */
  verifiedFile: (sha256: string) => Promise<{ size: number; path: string } | null>;
}

/**
 * FetchFile: one update file this node holds verified, from an offset, in chunks each
 * with its own SHA-256, with backpressure; refused (deferred, with when to ask again)
 * while the child's rules serve it no files or its window is closed.
 */
export async function serveFile(d: FileDeps, child: Child, call: grpc.ServerWritableStream<FetchFileRequest__Output, FileChunk>): Promise<void> {
  check.wire(call.request);
  const sha256 = call.request.sha256;
  if (!/^[0-9a-f]{64}$/.test(sha256)) throw check.invalid('sha256', 'must be 64 lowercase hex digits');
  const rules = parseRules(child.rules);
  if (!rules.files)
    throw new AppError('deferred', `${d.name} does not serve update files to this node (replication rules)`, { retryAfterMs: FILES_OFF_RETRY_MS });
  const closed = closedUntil(rules, new Date());
  if (closed) {
    const retryAfterMs = closed.until ? closed.until.getTime() - Date.now() : FILES_OFF_RETRY_MS;
    throw new AppError('deferred', `outside this node's replication window${closed.until ? `; it opens at ${closed.until.toISOString()}` : ''}`, {
      retryAfterMs,
    });
  }
  const row = await d.verifiedFile(sha256);
  if (!row) throw new AppError('unavailable', `file ${sha256} is not available on ${d.name} yet`);
  const offset = Number(call.request.offset);
  if (!Number.isInteger(offset) || offset < 0 || offset > row.size) throw new AppError('out-of-range', `offset ${offset} is outside 0..${row.size}`);
  const path = row.path;
  d.logger.info({ child: child.id, childName: child.name, sha256, offset, size: row.size }, 'sending a file');
  let at = offset;
  if (offset === row.size) return void call.end();
  for await (const chunk of createReadStream(path, { start: offset, highWaterMark: 256 * 1024 })) {
    const data = chunk as Buffer;
    const msg = { offset: at, data, size: row.size, chunk_sha256: createHash('sha256').update(data).digest() };
    at += data.length;
    if (call.cancelled) throw new StreamClosed();
    if (!call.write(msg)) await firstOf(call, ['drain', 'cancelled', 'close']);
  }
  call.end();
}
