/**
 * A child that asks for compressed batches (SubscribeRequest.compressed_batches) gets
 * every batch of more than 64 KiB gzip-compressed in parts of at most 64 KiB, in a
 * complete resync's snapshot (shared by the children that asked the same) and in the
 * tail; unpacked, it is exactly what a child that did not ask gets plain. Real node,
 * real gRPC, raw clients that joined like children.
 */
import t from 'tap';
import * as grpc from '@grpc/grpc-js';
import { ADMIN_TOKEN as T, ackRaw, api, importUpdates, joinRaw, makeKeys, sampleUpdate, startNode, tempDir } from '../helpers.js';
import { PROTOCOL_VERSION, type ReceivedMessage, type WireChange } from '../../src/replication/protocol.js';
import { COMPRESS_OVER, Unpacker } from '../../src/replication/compressed.js';
import { inflatePiece } from '../../src/replication/pieces.js';
import type { CatalogUpdate } from '../../src/catalog/format.js';

const PLAIN = '00000000-0000-4000-8000-0000000000c1';
const GZIP = '00000000-0000-4000-8000-0000000000c2';
const BROTLI = '00000000-0000-4000-8000-0000000000c3';

const update = (n: number, title = `Update ${n}`): CatalogUpdate =>
  sampleUpdate(n, {
    title,
    files: [{ name: `kb${n}.msu`, url: `http://vendor.example/${n}.msu`, size: 10, sha256: `${n}`.padStart(64, 'b'), language: 'neutral' }],
  });

interface Got {
  epoch: string;
  changes: Omit<WireChange, 'payload'>[];
  payloads: string[];
  /** Largest message received, and how many came compressed. */
  largest: number;
  parts: number;
  end: number | null;
  /** A snapshot file's pieces: how many came in each compression, and the file inflated. */
  coded: { gzip: number; brotli: number };
  file: Buffer[];
}

/** Subscribes as child `id` from `after` (0: a complete resync) until `done`; what it applied, unpacked. */
function subscribe(
  client: any,
  md: grpc.Metadata,
  id: string,
  compressed: boolean,
  from: { epoch: string; after: number },
  done: (g: Got) => boolean,
  file?: { brotli: boolean },
) {
  const call = client.Subscribe(
    {
      protocol_version: PROTOCOL_VERSION,
      node_id: id,
      epoch: from.epoch,
      after_seq: from.after,
      languages: ['en'],
      applied_languages: from.after ? ['en'] : [],
      name: id,
      version: 'test',
      compressed_batches: compressed,
      snapshot_file: Boolean(file),
      brotli_pieces: file?.brotli ?? false,
    },
    md,
  );
  const got: Got = { epoch: from.epoch, changes: [], payloads: [], largest: 0, parts: 0, end: null, coded: { gzip: 0, brotli: 0 }, file: [] };
  const unpacker = new Unpacker();
  return new Promise<Got>((resolve, reject) => {
    call.on('data', (received: ReceivedMessage) => {
      const size = received.compressed?.gzip.length ?? received.batch?.changes.reduce((a, c) => a + c.payload.length, 0) ?? 0;
      got.largest = Math.max(got.largest, size);
      if (received.compressed) got.parts++;
      const piece = received.snapshot_file;
      if (piece) {
        for (const k of ['gzip', 'brotli'] as const) if (piece[k].length) got.coded[k]++;
        got.file.push(inflatePiece(piece, 16 * 1024 * 1024));
      }
      const m = unpacker.take(received);
      if (!m) return;
      if (m.hello) got.epoch = m.hello.epoch;
      for (const c of m.batch?.changes ?? []) {
        got.changes.push({ seq: c.seq, kind: c.kind, key: c.key, op: c.op });
        got.payloads.push(c.payload.toString());
      }
      if (m.resync_end) got.end = Number(m.resync_end.cursor);
      if (done(got)) {
        call.cancel();
        resolve(got);
      }
    });
    call.on('error', (err: grpc.ServiceError) => (err.code === grpc.status.CANCELLED ? undefined : reject(err)));
  });
}

t.test('large batches compressed for a child that asks, the same changes as plain', async (t) => {
  const dir = await tempDir(t);
  const keys = await makeKeys(dir);
  const node = await startNode(t, { trustedKeys: [keys.pubFile], extra: ['--insecure'] });
  const upload = async (version: string, day: number, updates: CatalogUpdate[]) =>
    t.equal((await importUpdates(node.url, dir, keys, version, day, updates)).status, 201, `import ${version}`);
  await upload(
    'v1',
    1,
    Array.from({ length: 2000 }, (_, i) => update(i + 1)),
  );
  const plain = await joinRaw(t, node, { id: PLAIN, name: 'plain', languages: ['en'] });
  const gzip = await joinRaw(t, node, { id: GZIP, name: 'gzip', languages: ['en'] });

  // A complete resync each (rows: neither asked for the snapshot file).
  const resynced = (g: Got) => g.end !== null;
  const [p, z] = await Promise.all([
    subscribe(plain.client, plain.md, PLAIN, false, { epoch: '', after: 0 }, resynced),
    subscribe(gzip.client, gzip.md, GZIP, true, { epoch: '', after: 0 }, resynced),
  ]);
  t.equal(p.parts, 0, 'nothing compressed for a child that did not ask');
  t.ok(p.largest > COMPRESS_OVER, `the plain child got a batch of ${p.largest} bytes`);
  t.ok(z.parts > 0, `${z.parts} compressed parts`);
  t.ok(z.largest <= COMPRESS_OVER, `no message of more than 64 KiB (largest ${z.largest})`);
  t.equal(z.end, p.end, 'cut at the same head');
  t.equal(p.changes.filter((c) => c.kind === 'update').length, 2000);
  t.same(z.changes, p.changes, 'the same changes');
  t.same(z.payloads, p.payloads, 'the same payloads');
  t.match((await api(node.url, T, '/api/v1/hierarchy')).body.snapshots, { built: 2, sets: 2 }, 'a snapshot for each way of sending');
  await ackRaw(plain.client, plain.md, { id: PLAIN, cursor: p.end!, epoch: p.epoch });
  await ackRaw(gzip.client, gzip.md, { id: GZIP, cursor: z.end!, epoch: z.epoch });

  // The tail: a release that changes every update goes out in pages of rows.
  await upload(
    'v2',
    2,
    Array.from({ length: 2000 }, (_, i) => ({ ...update(i + 1, `Update ${i + 1}, revised`), revision: 2 })),
  );
  const revised = (g: Got) => g.changes.filter((c) => c.kind === 'update').length >= 2000 && g.changes.some((c) => c.kind === 'release');
  const [pt, zt] = await Promise.all([
    subscribe(plain.client, plain.md, PLAIN, false, { epoch: p.epoch, after: p.end! }, revised),
    subscribe(gzip.client, gzip.md, GZIP, true, { epoch: z.epoch, after: z.end! }, revised),
  ]);
  t.equal(pt.parts, 0);
  t.ok(zt.parts > 0, `${zt.parts} compressed parts in the tail`);
  t.ok(zt.largest <= COMPRESS_OVER, `no message of more than 64 KiB in the tail (largest ${zt.largest})`);
  t.same(zt.changes, pt.changes, 'the same tail');
  t.same(zt.payloads, pt.payloads);
  t.ok(zt.payloads.filter((x) => x.includes('revised')).length >= 2000, 'the revised updates');
});

t.test("a snapshot file's pieces in Brotli for a child that asks, gzip for one that does not: the same file", async (t) => {
  const dir = await tempDir(t);
  const keys = await makeKeys(dir);
  const node = await startNode(t, { trustedKeys: [keys.pubFile], extra: ['--insecure'] });
  t.equal(
    (
      await importUpdates(
        node.url,
        dir,
        keys,
        'v1',
        1,
        Array.from({ length: 3000 }, (_, i) => update(i + 1)),
      )
    ).status,
    201,
  );
  const gzip = await joinRaw(t, node, { id: GZIP, name: 'gzip', languages: ['en'] });
  const brotli = await joinRaw(t, node, { id: BROTLI, name: 'brotli', languages: ['en'] });
  const resynced = (g: Got) => g.end !== null;
  const [z, b] = await Promise.all([
    subscribe(gzip.client, gzip.md, GZIP, true, { epoch: '', after: 0 }, resynced, { brotli: false }),
    subscribe(brotli.client, brotli.md, BROTLI, true, { epoch: '', after: 0 }, resynced, { brotli: true }),
  ]);
  t.ok(z.coded.gzip > 0, `${z.coded.gzip} gzip pieces`);
  t.equal(z.coded.brotli, 0, 'none in Brotli for the child that did not ask');
  t.ok(b.coded.brotli > 0, `${b.coded.brotli} Brotli pieces`);
  t.equal(b.coded.gzip, 0, 'none in gzip for the child that asked');
  const [zf, bf] = [Buffer.concat(z.file), Buffer.concat(b.file)];
  t.ok(zf.length > 100_000, `a file of ${zf.length} bytes`);
  t.ok(zf.equals(bf), 'the same file, inflated');
  t.same(b.changes, z.changes, 'and the same changes around it');
  t.match((await api(node.url, T, '/api/v1/hierarchy')).body.snapshots, { built: 2, sets: 2 }, 'a snapshot for each compression');
});
