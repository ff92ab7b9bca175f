/**
 * A complete resync stays owed until the child acknowledges its end: a raw client that
 * loses its link anywhere before (mid-snapshot, or after the end was written but
 * before it was applied) and comes back claiming the epoch and a cursor from that
 * snapshot gets the complete resync again, not a tail that would skip what it never
 * applied. Only an ack of the end's cursor, in the parent's epoch, settles it.
 * Real node, real gRPC, a raw client that joined like a child.
 */
import t, { type Test } from 'tap';
import * as grpc from '@grpc/grpc-js';
import { ADMIN_TOKEN as T, ackRaw, api, header, joinRaw, makeKeys, sampleUpdate, startNode, tempDir, uploadCatalog, writeSignedCatalog } from '../helpers.js';
import { PROTOCOL_VERSION, type ReceivedMessage } from '../../src/replication/protocol.js';
import { ACK_WRITE_MS } from '../../src/replication/parent.js';
import { waitFor } from '../vendor.js';

const ID = '00000000-0000-4000-8000-0000000000c1';

interface Seen {
  mode: string;
  reason: string;
  epoch: string;
  head: number;
  end: number | null;
}

/** Subscribes from (epoch, cursor) and reads until `stop` says so (or the resync's end); the link is then cut. */
function subscribe(client: any, md: grpc.Metadata, epoch: string, cursor: number, stop: (m: ReceivedMessage) => boolean): Promise<Seen> {
  const call = client.Subscribe(
    { protocol_version: PROTOCOL_VERSION, node_id: ID, epoch, after_seq: cursor, languages: ['en'], applied_languages: ['en'], name: 'raw', version: 'test' },
    md,
  );
  const seen: Seen = { mode: '', reason: '', epoch: '', head: 0, end: null };
  return new Promise((resolve, reject) => {
    call.on('data', (m: ReceivedMessage) => {
      if (m.hello) Object.assign(seen, { mode: m.hello.mode, reason: m.hello.reason, epoch: m.hello.epoch, head: Number(m.hello.head_seq) });
      if (m.resync_end) seen.end = Number(m.resync_end.cursor);
      if (stop(m) || m.resync_end) {
        call.cancel();
        resolve(seen);
      }
    });
    call.on('error', (err: grpc.ServiceError) => (err.code === grpc.status.CANCELLED ? undefined : reject(err)));
  });
}

const ack = (client: any, md: grpc.Metadata, cursor: number, epoch: string) => ackRaw(client, md, { id: ID, cursor, epoch });

/** A node holding `n` updates (no files), and a raw client joined to it as a child. */
async function joined(t: Test, n: number) {
  const dir = await tempDir(t);
  const keys = await makeKeys(dir);
  const node = await startNode(t, { trustedKeys: [keys.pubFile], extra: ['--insecure'] });
  const updates = Array.from({ length: n }, (_, i) => sampleUpdate(i + 1, { files: [] }));
  const { file, sig } = await writeSignedCatalog(dir, keys, 'v1.gz', header('v1', updates.length, new Date(Date.UTC(2024, 0, 1))), updates);
  t.equal((await uploadCatalog(node.url, T, file, sig)).status, 201);
  return { node, ...(await joinRaw(t, node, { id: ID, name: 'raw', languages: ['en'] })) };
}

t.test('a complete resync is owed until the child acks its end', async (t) => {
  const { node, client, md } = await joined(t, 1200);
  const cursor = async () => (await api(node.url, T, '/api/v1/hierarchy')).body.children.find((c: { id: string }) => c.id === ID).cursor as number;
  const owed = async () => (await api(node.url, T, '/api/v1/hierarchy')).body.children.find((c: { id: string }) => c.id === ID).resyncOwed as boolean;

  // Cut mid-snapshot, right after its first batch; back with the hello's epoch and head.
  const first = await subscribe(client, md, '', 0, (m) => Boolean(m.batch));
  t.equal(first.mode, 'resync');
  t.equal(first.end, null, 'cut before the end');
  const again = await subscribe(client, md, first.epoch, first.head, () => false);
  t.equal(again.mode, 'resync', 'claiming the snapshot head after a cut mid-snapshot: a complete resync again');
  t.match(again.reason, /owed/);

  // The end written, not applied (no ack): back with the end's cursor.
  t.ok(again.end !== null && again.end >= first.head, 'this time the end arrived');
  t.equal(await owed(), true, 'still owed: nothing acknowledged it');
  const third = await subscribe(client, md, again.epoch, again.end!, () => false);
  t.equal(third.mode, 'resync', 'claiming the end cursor without having acked it: a complete resync again');

  // An ack of another epoch, or of a cursor short of the end, settles nothing.
  await t.rejects(ack(client, md, third.end!, 'x'.repeat(101)), { code: grpc.status.INVALID_ARGUMENT }, 'an epoch of over 100 characters is refused');
  await ack(client, md, third.end!, 'some-other-epoch');
  t.equal(await owed(), true, 'an ack in another epoch does not settle it');
  await ack(client, md, third.end! - 1, third.epoch);
  t.equal(await owed(), true, 'an ack short of the end does not settle it');
  await ack(client, md, third.end!, third.epoch);
  t.equal(await owed(), false, "the ack of the end's cursor settles it");
  // Acks are written together a moment later; the settling one at once, and the one
  // short of the end still waiting then is dropped, not written after it.
  await new Promise((r) => setTimeout(r, 3 * ACK_WRITE_MS));
  t.equal(await cursor(), third.end, 'the cursor stays at the end: the older queued ack did not move it back');
  const tail = await subscribe(client, md, third.epoch, third.end!, (m) => Boolean(m.hello));
  t.equal(tail.mode, 'tail', 'then the child is tailed from its cursor');

  // A resync requested by the admin is owed again until acked.
  t.equal((await api(node.url, T, `/api/v1/hierarchy/children/${ID}/resync`, { method: 'POST' })).status < 300, true);
  t.equal(await owed(), true);
  const requested = await subscribe(client, md, third.epoch, third.end!, (m) => Boolean(m.hello));
  t.equal(requested.mode, 'resync');
});

t.test("a child's acks in a burst are written together, the newest kept", async (t) => {
  const { node, client, md } = await joined(t, 300);
  const s = await subscribe(client, md, '', 0, () => false);
  await ack(client, md, s.end!, s.epoch); // settles the first resync
  const child = async () => (await api(node.url, T, '/api/v1/hierarchy')).body.children.find((c: { id: string }) => c.id === ID) as { cursor: number };
  // Forty acks at once, in order, each answered at once; the stored cursor ends at the last.
  const cursors = Array.from({ length: 40 }, (_, i) => s.end! - 40 + i + 1);
  for (const c of cursors) await ack(client, md, c, s.epoch);
  await waitFor(async () => (await child()).cursor === cursors[cursors.length - 1], 'the newest ack stored', 5_000);
  await new Promise((r) => setTimeout(r, 3 * ACK_WRITE_MS));
  t.equal((await child()).cursor, cursors[cursors.length - 1], 'and nothing older written after it');
  // An ack beyond the head is still refused at once, before anything is queued.
  await t.rejects(ack(client, md, s.head + 10_000, s.epoch), { code: grpc.status.INVALID_ARGUMENT });
  t.equal((await child()).cursor, cursors[cursors.length - 1]);
});
