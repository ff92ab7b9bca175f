/**
 * Complete resyncs' snapshots are built once per language set and shared: two children
 * of one set read one snapshot (counted in the hierarchy status), a child of another
 * set gets its own, and a child that stops reading mid-snapshot holds nobody back.
 * Real node, real gRPC, raw clients that joined like children.
 */
import t from 'tap';
import * as grpc from '@grpc/grpc-js';
import { ADMIN_TOKEN as T, ackRaw, api, header, joinRaw, makeKeys, sampleUpdate, startNode, tempDir, uploadCatalog, writeSignedCatalog } from '../helpers.js';
import { PROTOCOL_VERSION, type ReceivedMessage } from '../../src/replication/protocol.js';
import type { CatalogUpdate } from '../../src/catalog/format.js';

const ids = [
  '00000000-0000-4000-8000-0000000000a1',
  '00000000-0000-4000-8000-0000000000a2',
  '00000000-0000-4000-8000-0000000000a3',
  '00000000-0000-4000-8000-0000000000a4',
];

const update = (n: number): CatalogUpdate =>
  sampleUpdate(n, {
    files: [
      { name: `kb${n}.msu`, url: `http://vendor.example/${n}.msu`, size: 10, sha256: `${n}`.padStart(64, 'b'), language: 'neutral' },
      {
        name: `kb${n}-${n % 2 ? 'de' : 'fr'}.cab`,
        url: `http://vendor.example/${n}.cab`,
        size: 5,
        sha256: `${n}`.padStart(64, 'c'),
        language: n % 2 ? 'de-de' : 'fr-fr',
      },
    ],
  });

/** Subscribes as a child with no cursor (a complete resync); the update ids it is sent, once the resync ends. */
function resync(client: any, md: grpc.Metadata, id: string, languages: string[], opts: { stall?: boolean } = {}) {
  const call = client.Subscribe(
    { protocol_version: PROTOCOL_VERSION, node_id: id, epoch: '', after_seq: 0, languages, applied_languages: [], name: id, version: 'test' },
    md,
  );
  const updates: string[] = [];
  let batches = 0;
  let epoch = '';
  const done = new Promise<{ updates: string[]; cursor: number }>((resolve, reject) => {
    call.on('data', (m: ReceivedMessage) => {
      if (m.hello) epoch = m.hello.epoch;
      if (m.batch) {
        batches++;
        for (const c of m.batch.changes) if (c.kind === 'update') updates.push(c.key);
        // A child that stops reading after its first batch: flow control holds its stream.
        if (opts.stall && batches === 1) call.pause();
      }
      if (m.resync_end) {
        call.cancel();
        // Applied: acknowledged as a child does (the resync is owed until then).
        const cursor = Number(m.resync_end.cursor);
        ackRaw(client, md, { id, cursor, epoch }).then(() => resolve({ updates: updates.sort(), cursor }), reject);
      }
    });
    call.on('error', (err: grpc.ServiceError) => (err.code === grpc.status.CANCELLED ? undefined : reject(err)));
  });
  return { done, call, batches: () => batches };
}

t.test('one snapshot per language set, shared; a stalled reader holds nobody back', async (t) => {
  const dir = await tempDir(t);
  const keys = await makeKeys(dir);
  const node = await startNode(t, { trustedKeys: [keys.pubFile], extra: ['--insecure'] });
  // Enough updates for many snapshot pages (500 updates each).
  const updates = Array.from({ length: 3000 }, (_, i) => update(i + 1));
  const { file, sig } = await writeSignedCatalog(dir, keys, 'v1.gz', header('v1', updates.length, new Date(Date.UTC(2024, 0, 1))), updates);
  t.equal((await uploadCatalog(node.url, T, file, sig)).status, 201);
  const stats = async () =>
    (await api(node.url, T, '/api/v1/hierarchy')).body.snapshots as { built: number; sets: number; readers: number; tailFiles: number; tailPages: number };
  t.same(await stats(), { built: 0, sets: 0, readers: 0, tailFiles: 0, tailPages: 0 }, 'nothing built before a child needs it');

  const kids = await Promise.all(ids.map((id, i) => joinRaw(t, node, { id, name: `kid-${i}`, languages: i === 2 ? ['fr'] : ['de'] })));
  // The first two children (German) at once, and a third that stalls after one batch.
  const stalled = resync(kids[3]!.client, kids[3]!.md, ids[3]!, ['de'], { stall: true });
  const a = resync(kids[0]!.client, kids[0]!.md, ids[0]!, ['de']);
  const b = resync(kids[1]!.client, kids[1]!.md, ids[1]!, ['de']);
  const [ra, rb] = await Promise.all([a.done, b.done]);
  t.equal(ra.updates.length, 3000, 'every update (each has a neutral file)');
  t.same(ra.updates, rb.updates, 'the same snapshot');
  t.equal(ra.cursor, rb.cursor, 'cut at the same head');
  t.equal(stalled.batches(), 1, 'the stalled child still holds one batch, and the others finished');
  t.match(await stats(), { built: 1, sets: 1 }, 'two children and a stalled one: one snapshot built');

  // Another language set: its own snapshot, with its own files.
  const c = resync(kids[2]!.client, kids[2]!.md, ids[2]!, ['fr']);
  const rc = await c.done;
  t.equal(rc.updates.length, 3000);
  t.match(await stats(), { built: 2, sets: 2 }, 'a child of another set gets its own');

  // The stalled child, resumed, gets the whole snapshot all the same.
  stalled.call.resume();
  const rs = await stalled.done;
  t.same(rs.updates, ra.updates, 'the stalled child, resumed, read the whole snapshot');
  t.match(await stats(), { readers: 0 }, 'no child reads a snapshot any more');

  // Live changes: two children of one set at the same cursor are sent one page, built once.
  const epoch = (await api(node.url, T, '/api/v1/hierarchy')).body.node.epoch as string;
  const tail = (k: number) =>
    new Promise<string[]>((resolve, reject) => {
      const call = kids[k]!.client.Subscribe(
        {
          protocol_version: PROTOCOL_VERSION,
          node_id: ids[k],
          epoch,
          after_seq: ra.cursor,
          languages: ['de'],
          applied_languages: ['de'],
          name: `kid-${k}`,
          version: 'test',
        },
        kids[k]!.md,
      );
      call.on('data', (m: ReceivedMessage) => {
        if (m.hello && m.hello.mode !== 'tail') reject(new Error(`mode ${m.hello.mode}`));
        const keys = (m.batch?.changes ?? []).filter((c) => c.kind === 'update').map((c) => c.key);
        if (keys.length) {
          call.cancel();
          resolve(keys.sort());
        }
      });
      call.on('error', (err: grpc.ServiceError) => (err.code === grpc.status.CANCELLED ? undefined : reject(err)));
    });
  const before = (await stats()).tailPages;
  const pa = tail(0);
  const pb = tail(1);
  await new Promise((r) => setTimeout(r, 300)); // both subscribed, waiting at the head
  const more = Array.from({ length: 10 }, (_, i) => update(5000 + i));
  const v2 = await writeSignedCatalog(dir, keys, 'v2.gz', header('v2', updates.length + 10, new Date(Date.UTC(2024, 0, 2))), [...updates, ...more]);
  t.equal((await uploadCatalog(node.url, T, v2.file, v2.sig)).status, 201);
  const [ta, tb] = await Promise.all([pa, pb]);
  t.same(ta, tb, 'the same live changes');
  t.ok(ta.length >= 10, 'the new updates');
  t.equal((await stats()).tailPages - before, 1, 'one page built for both');
});
