import t from 'tap';
import { replicatedKinds } from '../../src/node/kinds.js';
import { createHash, randomBytes } from 'node:crypto';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { openDatabase } from '../../src/db/index.js';
import { ensureIdentity } from '../../src/replication/identity.js';
import { ReplicationChild } from '../../src/replication/child.js';
import { replicationService } from '../../src/replication/protocol.js';
import { createLogger } from '../../src/lib/log.js';
import { tempDir } from '../helpers.js';
import { waitFor } from '../vendor.js';

t.test('a corrupted chunk from the parent is refused before it reaches the disk', async (t) => {
  const data = randomBytes(600_000);
  const sha = createHash('sha256').update(data).digest('hex');
  const offsets: number[] = [];
  // A real gRPC server on port 0 standing in for a parent whose second chunk is damaged.
  const server = new grpc.Server();
  server.addService(replicationService().service, {
    Join: (_call: unknown, cb: grpc.sendUnaryData<unknown>) =>
      cb(null, { credential: 'ptc_fake', parent_id: '00000000-0000-4000-8000-00000000000a', parent_name: 'fake' }),
    Subscribe: (call: grpc.ServerWritableStream<unknown, unknown>) =>
      call.write({ hello: { parent_id: 'p', epoch: 'e', head_seq: 0, mode: 'tail', reason: '' } }),
    Ack: (_call: unknown, cb: grpc.sendUnaryData<unknown>) => cb(null, {}),
    FetchFile: (call: grpc.ServerWritableStream<{ offset: string }, unknown>) => {
      const start = Number(call.request.offset);
      offsets.push(start);
      for (let at = start, i = 0; at < data.length; at += 256 * 1024, i++) {
        const chunk = data.subarray(at, at + 256 * 1024);
        const damaged = i === 1 && start === 0 ? Buffer.from(chunk.map((b, j) => (j === 10 ? b ^ 1 : b))) : chunk;
        call.write({ offset: at, data: damaged, size: data.length, chunk_sha256: createHash('sha256').update(chunk).digest() });
      }
      call.end();
    },
  });
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (e, p) => (e ? reject(e) : resolve(p))),
  );
  t.teardown(() => server.forceShutdown());

  const dir = await tempDir(t);
  const db = await openDatabase(`file:${join(dir, 'child.db')}`);
  t.teardown(() => db.close());
  const child = new ReplicationChild({
    db,
    identity: await ensureIdentity(db.orm),
    name: 'kid',
    version: 'test',
    ownLanguages: ['en'],
    subtreeLanguages: async () => [],
    upstream: { address: `127.0.0.1:${port}`, joinToken: 'ptj_fake-token', credentials: grpc.credentials.createInsecure() },
    kinds: replicatedKinds(),
    logger: createLogger('silent'),
    onApplied: () => {},
  });
  await child.start();
  t.teardown(() => child.stop());
  await waitFor(async () => child.status().connected, 'joined and subscribed');

  const got: Buffer[] = [];
  await t.rejects(
    (async () => {
      for await (const chunk of child.fetchFile(sha, 0, new AbortController().signal)) got.push(Buffer.from(chunk));
    })(),
    { message: `corrupted chunk at offset ${256 * 1024} refused` },
  );
  t.equal(Buffer.concat(got).length, 256 * 1024, 'only the good first chunk was delivered');
  t.ok(Buffer.concat(got).equals(data.subarray(0, 256 * 1024)));

  // Resuming from the last good byte gets the rest intact.
  const rest: Buffer[] = [];
  for await (const chunk of child.fetchFile(sha, 256 * 1024, new AbortController().signal)) rest.push(Buffer.from(chunk));
  t.ok(Buffer.concat([...got, ...rest]).equals(data), 'resumed from its offset, the file is whole');
  t.same(offsets, [0, 256 * 1024]);
});
