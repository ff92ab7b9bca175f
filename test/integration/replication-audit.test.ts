import t from 'tap';
import { createHash } from 'node:crypto';
import * as grpc from '@grpc/grpc-js';
import { ADMIN_TOKEN as T, api, joinRaw, startNode } from '../helpers.js';
import { PROTOCOL_VERSION, replicationService } from '../../src/replication/protocol.js';

/**
 * What an audit found a hostile child could do over gRPC, each refused with a
 * status naming the field, and each checked to have changed nothing.
 */

const A = '00000000-0000-4000-8000-0000000000a1';
const B = '00000000-0000-4000-8000-0000000000b1';
const BELOW_A = '00000000-0000-4000-8000-0000000000a2';

const unary = (client: any, method: string, req: unknown, md?: grpc.Metadata) =>
  new Promise<{ err: grpc.ServiceError | null; res: any }>((resolve) =>
    md ? client[method](req, md, (err: any, res: any) => resolve({ err, res })) : client[method](req, (err: any, res: any) => resolve({ err, res })),
  );

function report(id: string, parent: string) {
  const json = Buffer.from(
    JSON.stringify({
      summary: {
        computers: 1,
        compliant: 1,
        compliantPercent: 100,
        required: 0,
        requiredBySeverity: { Critical: 0, Important: 0, Moderate: 0, Low: 0, Unrated: 0 },
        urgentComputers: 0,
        stale: 0,
      },
      updates: [],
      policies: {},
    }),
  );
  return {
    node_id: id,
    name: id.slice(-2),
    parent_id: parent,
    age_ms: 0,
    interval_ms: 1000,
    digest: createHash('sha256').update(json).digest('hex'),
    summary: json,
  };
}

t.test('gRPC input is checked against its meaning, and a refusal changes nothing', async (t) => {
  const node = await startNode(t, { extra: ['--insecure'] });
  const rootId = (await api(node.url, T, '/api/v1/hierarchy')).body.node.id as string;
  const a = await joinRaw(t, node, { id: A, name: 'site-a', languages: ['de'] });
  const b = await joinRaw(t, node, { id: B, name: 'site-b', languages: ['fr'] });
  const child = async (id: string) => (await api(node.url, T, '/api/v1/hierarchy')).body.children.find((c: any) => c.id === id);
  const head = Number((await api(node.url, T, '/api/v1/hierarchy')).body.node.headSeq ?? 0);

  // Ack: a cursor past the head (2^64-1 once became a float), another node's id, a fractional count.
  for (const [req, code, field] of [
    [{ node_id: A, cursor: '18446744073709551615', files_pending: 0 }, grpc.status.INVALID_ARGUMENT, 'cursor'],
    [{ node_id: A, cursor: String(head + 1), files_pending: 0 }, grpc.status.INVALID_ARGUMENT, 'cursor'],
    [{ node_id: B, cursor: '0', files_pending: 0 }, grpc.status.PERMISSION_DENIED, 'node_id'],
    [{ node_id: '-'.repeat(36), cursor: '0', files_pending: 0 }, grpc.status.INVALID_ARGUMENT, 'node_id'],
  ] as const) {
    const before = await child(A);
    const r = await unary(a.client, 'Ack', req, a.md);
    t.equal(r.err?.code, code, `Ack ${JSON.stringify(req).slice(0, 60)}: ${r.err?.details}`);
    t.match(r.err?.details, new RegExp(`^${field}: `), 'the status names the field');
    t.same((await child(A)).cursor, before.cursor, 'the cursor is unchanged');
  }
  t.equal((await unary(a.client, 'Ack', { node_id: A, cursor: String(head), files_pending: 3 }, a.md)).err, null, 'its own cursor within the head is taken');

  // On the wire: a field with another wire type, invalid UTF-8. Raw bytes, as a hostile client sends them.
  const rawCall = (method: string, bytes: Buffer, md?: grpc.Metadata) =>
    new Promise<grpc.ServiceError | null>((resolve) =>
      a.client.makeUnaryRequest(
        `/patchtree.replication.v1.Replication/${method}`,
        (b: Buffer) => b,
        (b: Buffer) => b,
        bytes,
        md ?? new grpc.Metadata(),
        (err: grpc.ServiceError | null) => resolve(err),
      ),
    );
  const str = (field: number, b: Buffer) => Buffer.concat([Buffer.from([(field << 3) | 2, b.length]), b]);
  const cursorBefore = (await child(A)).cursor;
  // node_id as it should be, then cursor (a uint64, wire type 0) sent length-delimited (wire type 2).
  const wrongType = await rawCall('Ack', Buffer.concat([str(1, Buffer.from(A)), str(2, Buffer.from([0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f]))]), a.md);
  t.equal(wrongType?.code, grpc.status.INVALID_ARGUMENT, String(wrongType?.details));
  t.match(wrongType?.details, /^cursor: sent with wire type 2, expected 0/);
  t.same((await child(A)).cursor, cursorBefore, 'the cursor is unchanged');
  const badUtf8 = await rawCall(
    'Join',
    Buffer.concat([str(2, Buffer.from('00000000-0000-4000-8000-0000000000e9')), str(3, Buffer.from([0x61, 0xff, 0xfe, 0x62]))]),
  );
  t.equal(badUtf8?.code, grpc.status.INVALID_ARGUMENT, String(badUtf8?.details));
  t.match(badUtf8?.details, /^name: not valid UTF-8/);

  // Join: a malformed id, too many or malformed languages, a control character: refused, the token not used up.
  const tok = async () => (await api(node.url, T, '/api/v1/hierarchy/join-tokens', { method: 'POST', body: '{}' })).body.token as string;
  const raw = new (replicationService())(`127.0.0.1:${node.node.grpcPort}`, grpc.credentials.createInsecure()) as any;
  t.teardown(() => raw.close());
  const token = await tok();
  const join = (over: Record<string, unknown>) =>
    unary(raw, 'Join', {
      join_token: token,
      node_id: '00000000-0000-4000-8000-0000000000e1',
      name: 'new',
      languages: ['en'],
      protocol_version: PROTOCOL_VERSION,
      ...over,
    });
  const many = Array.from({ length: 1000 }, (_, i) =>
    `x${String.fromCharCode(97 + (i % 26))}${String.fromCharCode(97 + (Math.floor(i / 26) % 26))}-${String(i).padStart(4, '0')}`.slice(1),
  );
  for (const [over, field] of [
    [{ node_id: '-'.repeat(36) }, 'node_id'],
    [{ node_id: '0000000G-0000-4000-8000-0000000000e1' }, 'node_id'],
    [{ languages: many }, 'languages'],
    [{ languages: ['en', 'not a tag'] }, 'languages'],
    [{ name: 'evil\u0000name' }, 'name'],
    [{ name: 'bad \ufffd utf-8' }, 'name'],
  ] as const) {
    const r = await join(over);
    t.equal(r.err?.code, grpc.status.INVALID_ARGUMENT, `Join ${JSON.stringify(over).slice(0, 50)}: ${r.err?.details}`);
    t.match(r.err?.details, new RegExp(`^${field}: `));
  }
  t.equal((await api(node.url, T, '/api/v1/hierarchy')).body.children.length, 2, 'no child was stored');
  // A fresh token cannot take over an existing child's id.
  const takeover = await join({ node_id: A });
  t.equal(takeover.err?.code, grpc.status.ALREADY_EXISTS, String(takeover.err?.details));
  t.match(takeover.err?.details, /already a child .* remove it there first/);
  t.equal((await unary(a.client, 'Ack', { node_id: A, cursor: String(head), files_pending: 0 }, a.md)).err, null, 'the real child still works');
  t.equal((await join({})).err, null, 'the token was not used up by the refused calls');

  // Subscribe with a thousand languages: refused before anything is stored; the parent keeps working.
  const sub = a.client.Subscribe(
    { protocol_version: PROTOCOL_VERSION, node_id: A, epoch: '', after_seq: '0', languages: many, applied_languages: [], name: 'site-a', version: 'x' },
    a.md,
  );
  const err = await new Promise<any>((resolve) => {
    sub.on('error', resolve);
    sub.on('data', () => {});
  });
  t.equal(err.code, grpc.status.INVALID_ARGUMENT);
  t.match(err.details, /^languages: at most 200/);
  t.same((await child(A)).languages, ['de'], 'the stored languages are unchanged');
  const dl = await api(node.url, T, '/api/v1/content/downloads', { method: 'POST', body: JSON.stringify({ updates: [] }) });
  t.ok(dl.status < 500, `the parent's own routes still answer (${dl.status})`);

  // Report: for itself and its own subtree only; what a child claims beyond that is dropped, the rest kept.
  const sibling = await unary(a.client, 'Report', { reports: [report(B, rootId)], gone: [] }, a.md);
  t.equal(sibling.err, null, 'answered');
  const mixed = await unary(a.client, 'Report', { reports: [report(A, rootId), report(rootId, rootId)], gone: [] }, a.md);
  t.equal(mixed.err, null, "this node's own id coming back round is ignored, as before");
  const tree = async () => (await api(node.url, T, '/api/v1/reports/compliance?scope=tree')).body.nodes.map((n: any) => n.id).sort();
  t.same(await tree(), [rootId, A].sort(), "nothing stored for B: a sibling's report is dropped");
  t.equal((await unary(a.client, 'Report', { reports: [report(BELOW_A, A), report(A, rootId)], gone: [] }, a.md)).err, null, 'a node below A, listed before A');
  t.same(await tree(), [rootId, A, BELOW_A].sort());
  const steal = await unary(b.client, 'Report', { reports: [report(B, rootId), report(BELOW_A, B)], gone: [] }, b.md);
  t.equal(steal.err, null);
  const nodes = (await api(node.url, T, '/api/v1/reports/compliance?scope=tree')).body.nodes;
  t.same(nodes.map((n: any) => n.id).sort(), [rootId, A, B, BELOW_A].sort(), "B's own report kept");
  t.equal(nodes.find((n: any) => n.id === BELOW_A).parentId, A, "B cannot claim a node of A's subtree: it stays under A");
});
