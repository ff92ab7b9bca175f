/**
 * A parent whose snapshot file does not check out (here: a SHA-256 that is not the
 * file's) cannot stop a child: the child refuses the file with the reason, applies
 * nothing of it, and asks for rows from its next subscription on. The parent is a
 * hostile gRPC server speaking the real protocol (our proto, grpc-js); the child is a
 * real node process.
 */
import t from 'tap';
import { gzipSync } from 'node:zlib';
import * as grpc from '@grpc/grpc-js';
import { ADMIN_TOKEN as T, api, spawnNode, tempDir } from '../helpers.js';
import { waitFor } from '../vendor.js';
import { replicationDefinition, type SubscribeRequest } from '../../src/replication/protocol.js';

t.test('a snapshot file that does not check out is refused, then rows are asked for', async (t) => {
  const dir = await tempDir(t);
  const requests: SubscribeRequest[] = [];
  const server = new grpc.Server();
  server.addService(replicationDefinition(), {
    Join: (_call: unknown, cb: grpc.sendUnaryData<unknown>) =>
      cb(null, { credential: 'c'.repeat(43), parent_id: '00000000-0000-4000-8000-00000000000f', parent_name: 'hostile' }),
    Subscribe: (call: grpc.ServerWritableStream<SubscribeRequest, unknown>) => {
      requests.push(call.request);
      call.write({ hello: { parent_id: '00000000-0000-4000-8000-00000000000f', epoch: 'e1', head_seq: 1, mode: 'resync', reason: 'test' } });
      call.write({ resync_start: { reason: 'test', full: true } });
      if (call.request.snapshot_file) {
        // A whole file whose hash is not the one said.
        const data = Buffer.from('SQLite format 3\u0000 but not really');
        call.write({ snapshot_file: { kind: 'update', format: 1, offset: 0, gzip: gzipSync(data), last: true, size: data.length, sha256: 'a'.repeat(64) } });
      } else {
        call.write({ resync_end: { cursor: 1, full: true } });
      }
    },
    Ack: (_call: unknown, cb: grpc.sendUnaryData<unknown>) => cb(null, {}),
    FetchFile: (call: grpc.ServerWritableStream<unknown, unknown>) => call.destroy(new Error('no files here')),
    Report: (_call: unknown, cb: grpc.sendUnaryData<unknown>) => cb(null, { resend: [] }),
  });
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (err, p) => (err ? reject(err) : resolve(p))),
  );
  t.teardown(() => server.forceShutdown());

  const child = await spawnNode(t, [
    '--data',
    `${dir}/child`,
    '--admin-token',
    T,
    '--insecure',
    '--upstream',
    `127.0.0.1:${port}`,
    '--join-token',
    'join-token-for-the-hostile-parent',
  ]);
  await waitFor(async () => requests.length >= 2, 'a second subscription', 30_000);
  t.equal(requests[0]!.snapshot_file, true, 'an empty child asks for the file first');
  t.equal(requests[1]!.snapshot_file, false, 'and for rows once a file was refused');
  const refusal = child.logs.find((l) => l.msg === 'applying a batch failed; reconnecting') as { err?: { message?: string } } | undefined;
  t.match(refusal?.err?.message, /the snapshot file's SHA-256 is [0-9a-f]{64}, the parent said a{64}/, 'the reason in the log');
  await waitFor(async () => (await api(child.url, T, '/api/v1/hierarchy')).body.upstream?.cursor === 1, 'the rows resync applied');
  t.equal((await api(child.url, T, '/api/v1/updates')).body.items.length, 0, 'nothing of the refused file applied');
});
