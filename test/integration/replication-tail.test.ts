/**
 * What a parent sends over real gRPC, read by a raw client that joined like a
 * child: the snapshot built by SQL, and the tail of state entries (an update upsert
 * logged without a payload goes out as the update is when it is sent).
 */
import t from 'tap';
import * as grpc from '@grpc/grpc-js';
import { ackRaw, importUpdates, joinRaw, makeKeys, sampleUpdate, startNode, tempDir } from '../helpers.js';
import { PROTOCOL_VERSION, type ReceivedMessage, type WireChange } from '../../src/replication/protocol.js';
import type { CatalogUpdate } from '../../src/catalog/format.js';

const CHILD = '00000000-0000-4000-8000-0000000000d1';

const de = (n: number): CatalogUpdate =>
  sampleUpdate(n, {
    files: [
      { name: `kb${n}.msu`, url: `http://vendor.example/${n}.msu`, size: 10, sha256: `${n}`.padStart(64, 'b'), language: 'neutral' },
      { name: `kb${n}-de.cab`, url: `http://vendor.example/${n}-de.cab`, size: 5, sha256: `${n}`.padStart(64, 'c'), language: 'de-de' },
      { name: `kb${n}-fr.cab`, url: `http://vendor.example/${n}-fr.cab`, size: 5, sha256: `${n}`.padStart(64, 'd'), language: 'fr-fr' },
    ],
  });
const frOnly = (n: number): CatalogUpdate =>
  sampleUpdate(n, { files: [{ name: `lp${n}.cab`, url: `http://vendor.example/lp${n}.cab`, size: 7, sha256: `${n}`.padStart(64, 'e'), language: 'fr-fr' }] });
const noFiles = (n: number): CatalogUpdate => sampleUpdate(n, { files: [] });

interface Received {
  hello: { epoch: string; mode: string };
  changes: WireChange[];
  end: number | null;
}

/** Subscribes and collects until `done` says so (a resync's end, or enough tail entries). */
function subscribe(client: any, md: grpc.Metadata, req: { epoch: string; after: number }, done: (r: Received) => boolean): Promise<Received> {
  const call = client.Subscribe(
    {
      protocol_version: PROTOCOL_VERSION,
      node_id: CHILD,
      epoch: req.epoch,
      after_seq: req.after,
      languages: ['de'],
      applied_languages: ['de'],
      name: 'kid',
      version: 'test',
    },
    md,
  );
  const got: Received = { hello: { epoch: '', mode: '' }, changes: [], end: null };
  return new Promise((resolve, reject) => {
    call.on('data', (m: ReceivedMessage) => {
      if ('hello' in m && m.hello) got.hello = m.hello;
      if ('batch' in m && m.batch) got.changes.push(...m.batch.changes);
      if ('resync_end' in m && m.resync_end) got.end = Number(m.resync_end.cursor);
      if (done(got)) {
        call.cancel();
        resolve(got);
      }
    });
    call.on('error', (err: grpc.ServiceError) => (err.code === grpc.status.CANCELLED ? undefined : reject(err)));
  });
}

const updatesOf = (r: Received) => r.changes.filter((c) => c.kind === 'update');
const parse = (c: WireChange) => JSON.parse(c.payload.toString()) as Record<string, any>;

t.test('snapshot and tail: filtered by language, state entries sent as the update is now', async (t) => {
  const dir = await tempDir(t);
  const keys = await makeKeys(dir);
  const node = await startNode(t, { trustedKeys: [keys.pubFile], extra: ['--insecure'] });
  const upload = async (version: string, at: number, updates: CatalogUpdate[]) =>
    t.equal((await importUpdates(node.url, dir, keys, version, at, updates)).status, 201, `import ${version}`);
  await upload('v1', 1, [de(1), frOnly(2), noFiles(3)]);

  const { client, md } = await joinRaw(t, node, { id: CHILD, name: 'kid', languages: ['de'] });

  const snap = await subscribe(client, md, { epoch: '', after: 0 }, (r) => r.end !== null);
  t.equal(snap.hello.mode, 'resync');
  t.same(
    updatesOf(snap).map((c) => c.key),
    ['test-1', 'test-3'],
    'the French-only update is left out; metadata-only goes everywhere',
  );
  const one = parse(updatesOf(snap)[0]!);
  t.same(
    one.files.map((f: any) => f.language),
    ['neutral', 'de-de'],
    "only the files of the child's languages, in catalog order",
  );
  t.match(one, { id: 'test-1', revision: 1, expired: false, releaseVersion: 'v1', firstVersion: 'v1', customSeverity: null, contentHash: /^[0-9a-f]{64}$/ });
  t.same(parse(updatesOf(snap)[1]!).files, []);
  // Applied: acknowledged as a child does (the complete resync is owed until then).
  await ackRaw(client, md, { id: CHILD, cursor: snap.end!, epoch: snap.hello.epoch });

  // Two releases while the child is away: test-1 changes twice, test-3 leaves (expires), test-4 arrives.
  await upload('v2', 2, [{ ...de(1), title: 'second' }, frOnly(2), de(4)]);
  await upload('v3', 3, [{ ...de(1), title: 'third' }, frOnly(2), de(4)]);
  const tail = await subscribe(
    client,
    md,
    { epoch: snap.hello.epoch, after: snap.end! },
    (r) => updatesOf(r).filter((c) => c.key === 'test-1').length >= 2 && updatesOf(r).some((c) => c.key === 'test-4'),
  );
  t.equal(tail.hello.mode, 'tail');
  const ones = updatesOf(tail).filter((c) => c.key === 'test-1');
  t.same(
    ones.map((c) => [c.op, parse(c).title, parse(c).revision]),
    [
      ['upsert', 'third', 3],
      ['upsert', 'third', 3],
    ],
    'both state entries go out as the update is now',
  );
  t.ok(
    ones.every((c) => Number(c.seq) > snap.end!),
    'in log order after the cursor',
  );
  t.same(
    updatesOf(tail)
      .filter((c) => c.key === 'test-3')
      .map((c) => [c.op, parse(c)]),
    [['expire', { id: 'test-3', revision: 2 }]],
    'the expiry as its own small entry',
  );
  t.notOk(
    updatesOf(tail).some((c) => c.key === 'test-2'),
    'the French-only update never reaches a German child',
  );
  t.same(
    parse(updatesOf(tail).find((c) => c.key === 'test-4')!).files.map((f: any) => f.language),
    ['neutral', 'de-de'],
  );
});
