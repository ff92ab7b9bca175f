import t from 'tap';
import { createHash } from 'node:crypto';
import * as grpc from '@grpc/grpc-js';
import { ADMIN_TOKEN as T, api, joinRaw, startNode } from '../helpers.js';
import { waitFor } from '../vendor.js';
import { isStale, sumSummaries } from '../../src/reports/summary.js';

/**
 * The receiving end of the roll-up over real gRPC: a node on port 0, a client that
 * joined it as a child, Report calls good and bad.
 */

const CHILD = '00000000-0000-4000-8000-0000000000c1';
const GRANDCHILD = '00000000-0000-4000-8000-0000000000c2';

function summaryOf(computers: number, compliant: number, critical: number) {
  return {
    summary: {
      computers,
      compliant,
      compliantPercent: 0,
      required: critical,
      requiredBySeverity: { Critical: critical, Important: 0, Moderate: 0, Low: 0, Unrated: 0 },
      urgentComputers: critical ? 1 : 0,
      stale: 0,
    },
    updates: [['u-1', 0, 0, critical, 0]],
    policies: { 'p-1': { name: 'P', origin: 'x', totals: { computers: computers, installed: compliant } } },
  };
}

function report(id: string, name: string, parent: string, body: unknown, o: { ageMs?: number; whole?: boolean; digest?: string } = {}) {
  const json = Buffer.from(typeof body === 'string' ? body : JSON.stringify(body));
  return {
    node_id: id,
    name,
    parent_id: parent,
    age_ms: o.ageMs ?? 0,
    interval_ms: 1000,
    digest: o.digest ?? createHash('sha256').update(json).digest('hex'),
    summary: o.whole === false ? Buffer.alloc(0) : json,
  };
}

t.test('Report: stored per node, unchanged ones by digest, bad ones refused whole', async (t) => {
  const node = await startNode(t, { extra: ['--insecure'] });
  const rootId = (await api(node.url, T, '/api/v1/hierarchy')).body.node.id as string;
  const { client, md } = await joinRaw(t, node, { id: CHILD, name: 'site', languages: ['en'] });
  const call = (reports: unknown[], gone: string[] = []) =>
    new Promise<{ err: grpc.ServiceError | null; resend: string[] }>((resolve) =>
      client.Report({ reports, gone }, md, (err: grpc.ServiceError | null, r: any) => resolve({ err, resend: r?.resend ?? [] })),
    );
  const tree = async () => (await api(node.url, T, '/api/v1/reports/compliance?scope=tree')).body;

  const noAuth = await new Promise<any>((resolve) => client.Report({ reports: [] }, (err: any) => resolve(err)));
  t.equal(noAuth.code, grpc.status.UNAUTHENTICATED, 'a credential is needed');

  const first = await call([report(CHILD, 'site', rootId, summaryOf(10, 4, 3)), report(GRANDCHILD, 'branch', CHILD, summaryOf(5, 5, 0), { ageMs: 1500 })]);
  t.equal(first.err, null);
  t.same(first.resend, []);
  let tr = await tree();
  t.same(
    tr.nodes.map((n: any) => n.name),
    ['test-node', 'branch', 'site'],
    'this node first, then every node below',
  );
  t.same(tr.summary.computers, 15);
  t.same(tr.summary.compliant, 9);
  t.equal(tr.summary.compliantPercent, 60);
  t.same(tr.summary.requiredBySeverity.Critical, 3);
  const branch = tr.nodes.find((n: any) => n.name === 'branch');
  t.equal(branch.parentId, CHILD);
  t.ok(Date.now() - Date.parse(branch.reportedAt) >= 1500, 'stamped with its age as the chain reported it');

  // Per update over the subtree: the nodes' counts added up.
  const byUpdate = (await api(node.url, T, '/api/v1/reports/compliance?scope=tree&view=updates')).body;
  t.match(byUpdate.items, [{ id: 'u-1', required: 3, installed: 0, applicable: 3, nodesRequiring: 1 }]);
  t.equal(byUpdate.summary.computers, 15);
  t.equal((await api(node.url, T, '/api/v1/reports/compliance?scope=tree&view=computers')).status, 400, "computers are each node's own");

  // Unchanged: only the digest travels; a digest the parent does not have is asked for again.
  const same = report(CHILD, 'site', rootId, summaryOf(10, 4, 3), { whole: false });
  const unknown = report(GRANDCHILD, 'branch', CHILD, summaryOf(5, 4, 1), { whole: false });
  const r2 = await call([same, unknown]);
  t.equal(r2.err, null);
  t.same(r2.resend, [GRANDCHILD], 'the changed summary must be sent whole');
  t.equal((await tree()).summary.computers, 15, 'nothing changed by a digest alone');

  // Bad input: refused with INVALID_ARGUMENT, and nothing of the call is stored.
  const before = JSON.stringify((await tree()).nodes.map((n: any) => [n.id, n.summary]));
  const bads: [string, unknown[]][] = [
    [
      'digest mismatch',
      [report(CHILD, 'site', rootId, summaryOf(1, 1, 0)), report(GRANDCHILD, 'branch', CHILD, summaryOf(9, 9, 0), { digest: 'a'.repeat(64) })],
    ],
    ['not JSON', [report(CHILD, 'site', rootId, summaryOf(1, 1, 0)), report(GRANDCHILD, 'branch', CHILD, '{nope')]],
    ['bad shape', [report(CHILD, 'site', rootId, summaryOf(1, 1, 0)), report(GRANDCHILD, 'branch', CHILD, { summary: { computers: -1 } })]],
    ['bad id', [report('not-a-uuid', 'x', rootId, summaryOf(1, 1, 0))]],
  ];
  for (const [what, reports] of bads) {
    const r = await call(reports);
    t.equal(r.err?.code, grpc.status.INVALID_ARGUMENT, `${what}: INVALID_ARGUMENT`);
    t.ok(r.err?.details.length, `${what}: ${r.err?.details}`);
  }
  t.equal(JSON.stringify((await tree()).nodes.map((n: any) => [n.id, n.summary])), before, 'nothing of a refused call was stored');

  // This node's own id coming back round is ignored; a node gone below is removed.
  t.equal((await call([report(rootId, 'loop', CHILD, summaryOf(99, 0, 0))])).err, null);
  t.equal((await tree()).nodes.length, 3, 'this node is never stored as its own descendant');
  t.equal((await call([], [GRANDCHILD])).err, null);
  tr = await tree();
  t.same(
    tr.nodes.map((n: any) => n.name),
    ['test-node', 'site'],
    'gone below, gone here',
  );

  // Delivery totals per node, for a policy this node has.
  const deliveryTree = await api(node.url, T, '/api/v1/reports/delivery?policy=p-1&scope=tree');
  t.equal(deliveryTree.status, 404, 'a policy this node does not have');

  // Removing the child removes its subtree's summaries.
  t.equal((await api(node.url, T, `/api/v1/hierarchy/children/${CHILD}`, { method: 'DELETE' })).status, 204);
  await waitFor(async () => (await tree()).nodes.length === 1, "the subtree's summaries removed");
  t.same(
    (await tree()).nodes.map((n: any) => n.name),
    ['test-node'],
  );
});

t.test('stale judgement and sums', async (t) => {
  t.equal(isStale(4_999, 1_000), false);
  t.equal(isStale(5_001, 1_000), true, 'three intervals and two seconds');
  t.equal(isStale(180_000, 60_000), false);
  t.equal(isStale(182_001, 60_000), true);
  const s = sumSummaries([summaryOf(3, 1, 2).summary, summaryOf(1, 1, 0).summary]);
  t.match(s, { computers: 4, compliant: 2, compliantPercent: 50, required: 2, urgentComputers: 1, requiredBySeverity: { Critical: 2 } });
  t.equal(sumSummaries([]).compliantPercent, 100, 'no computers: nothing to be non-compliant');
});
