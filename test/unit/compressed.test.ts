/**
 * Compressed batches (replication/compressed.ts): a parent sends a large batch to a
 * child that asked for it gzip-compressed, in parts of at most 64 KiB; the child joins
 * and inflates them into the same batch, and refuses anything out of place. Real
 * protobuf encoding, as on the wire.
 */
import t from 'tap';
import { randomBytes } from 'node:crypto';
import { gzipSync } from 'node:zlib';
import { COMPRESS_OVER, MAX_MESSAGE_BYTES, Unpacker, encodeFrames } from '../../src/replication/compressed.js';
import { replicationDefinition, type ReceivedMessage, type ServerMessage } from '../../src/replication/protocol.js';

/** A frame as a child decodes it. */
const decode = (frame: Buffer) => replicationDefinition().Subscribe.responseDeserialize(frame) as ReceivedMessage;
const encode = (msg: ServerMessage) => replicationDefinition().Subscribe.responseSerialize(msg);

/** A batch of `n` changes with payloads of random text (about 1.3 KB each; compresses about 2:1). */
const batch = (n: number): ServerMessage => ({
  batch: {
    changes: Array.from({ length: n }, (_, i) => ({
      seq: i + 1,
      kind: 'update',
      key: `u-${i}`,
      op: 'upsert',
      payload: Buffer.from(JSON.stringify({ id: `u-${i}`, hash: randomBytes(500).toString('hex') })),
    })),
    cursor: 0,
    snapshot: true,
    more: true,
  },
});

/** What a child applies of the frames: each message the unpacker gives back. */
function unpack(frames: Buffer[]): ReceivedMessage[] {
  const u = new Unpacker();
  return frames.map((f) => u.take(decode(f))).filter((m): m is ReceivedMessage => m !== null);
}

t.test('a large batch goes compressed in parts and comes back the same', async (t) => {
  const msg = batch(300);
  const plain = encode(msg);
  t.ok(plain.length > 3 * COMPRESS_OVER, `the batch is ${plain.length} bytes encoded`);
  const frames = encodeFrames(msg, true);
  const parts = frames.map(decode);
  t.ok(frames.length >= 2, `in ${frames.length} parts`);
  t.ok(
    parts.every((p) => p.compressed && p.compressed.gzip.length <= COMPRESS_OVER),
    'each part is compressed and at most 64 KiB',
  );
  t.same(
    parts.map((p) => p.compressed!.last),
    [...Array(frames.length - 1).fill(false), true],
    'only the last says so',
  );
  t.ok(frames.reduce((a, f) => a + f.length, 0) < plain.length * 0.7, 'smaller than the batch itself');
  const out = unpack(frames);
  t.equal(out.length, 1, 'one message once the last part is in');
  t.same(out[0], decode(plain), 'the batch exactly as sent plain');
});

t.test('what goes as it is: a small batch, a child that did not ask, a message that is not a batch', async (t) => {
  const small = batch(10);
  t.ok(encode(small).length <= COMPRESS_OVER);
  t.same(encodeFrames(small, true), [encode(small)], 'a small batch');
  const large = batch(300);
  t.same(encodeFrames(large, false), [encode(large)], 'a large batch to a child that did not ask');
  const piece: ServerMessage = { snapshot_file: { kind: 'update', format: 1, offset: 0, gzip: randomBytes(200_000), last: true, size: 1, sha256: 'x' } };
  t.same(encodeFrames(piece, true), [encode(piece)], 'a snapshot file piece (compressed already)');
  t.same(unpack(encodeFrames(small, true)), [decode(encode(small))], 'the child takes a plain batch as it is');
});

t.test('a heartbeat may come between the parts, nothing else', async (t) => {
  const frames = encodeFrames(batch(300), true);
  const heartbeat = encode({ heartbeat: { head_seq: 7, time_ms: 1 } });
  const out = unpack([frames[0]!, heartbeat, ...frames.slice(1)]);
  t.same(
    out.map((m) => m.body),
    ['heartbeat', 'batch'],
    'the heartbeat, then the whole batch',
  );
  const u = new Unpacker();
  u.take(decode(frames[0]!));
  t.throws(() => u.take(decode(encode(batch(1)))), /a batch message between the parts of a compressed batch/);
  const v = new Unpacker();
  v.take(decode(frames[0]!));
  t.throws(() => v.take(decode(encode({ resync_end: { cursor: 5, full: true } }))), /a resync_end message between the parts/);
});

t.test('a compressed whole that is not a batch, or not gzip, or too large, is refused', async (t) => {
  const part = (gzip: Buffer, last = true) => decode(encode({ compressed: { gzip, last } }));
  t.throws(() => new Unpacker().take(part(gzipSync(encode({ heartbeat: { head_seq: 1, time_ms: 1 } })))), /a compressed heartbeat message, not a batch/);
  t.throws(() => new Unpacker().take(part(gzipSync(encode({ compressed: { gzip: Buffer.from('x'), last: true } })))), /a compressed compressed message/);
  t.throws(() => new Unpacker().take(part(Buffer.from('not gzip at all'))), /a compressed batch that does not inflate and decode/);
  t.throws(() => new Unpacker().take(part(gzipSync(randomBytes(100)))), /does not inflate and decode/, 'gzip of something that is not a message');
  // 65 MB of zeros inflate from 66 KB: refused while inflating, not held.
  const bomb = gzipSync(Buffer.alloc(MAX_MESSAGE_BYTES + 1024 * 1024));
  t.ok(bomb.length < 1024 * 1024, `the bomb is ${bomb.length} bytes`);
  t.throws(() => new Unpacker().take(part(bomb)), /does not inflate and decode/);
  // Parts that add up to more than a message may be: refused before the last arrives.
  const u = new Unpacker();
  const big = Buffer.alloc(MAX_MESSAGE_BYTES / 2);
  t.equal(u.take(part(big, false)), null);
  t.equal(u.take(part(big, false)), null);
  t.throws(() => u.take(part(Buffer.alloc(1), false)), /a compressed batch of more than 67108864 bytes/);
});
