import t from 'tap';
import { readFileSync, writeFileSync } from 'node:fs';
import { X509Certificate } from 'node:crypto';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { ADMIN_TOKEN as T, buildRealCatalog, makeKeys, runCli, spawnNode, startAgent, tempDir, type NodeProcess } from '../helpers.js';
import { Agent, fetch as undiciFetch } from 'undici';
import { waitFor } from '../vendor.js';
import { PROTOCOL_VERSION, replicationService } from '../../src/replication/protocol.js';
import { upstreamTls } from '../../src/tls/upstream.js';

/**
 * A tree with no TLS flag at all: each node makes its own CA; a child joins with a
 * token that pins its parent's CA, gets a client certificate signed by it, and talks
 * mutual TLS from then on. Plaintext, a wrong CA and a removed child's certificate are
 * refused.
 */
t.test('a three-level tree over TLS with no TLS flag: pinned join tokens, certificates signed at the join', async (t) => {
  const dir = await tempDir(t, 'patchtree-tree-tls-');
  const keys = await makeKeys(dir);
  // No TLS flag, and no --insecure-http: the API is reached over HTTPS, verified against each node's own CA.
  const cas = new Map<NodeProcess, Agent>();
  const api = async (n: NodeProcess, token: string | null, path: string, init: RequestInit = {}) => {
    const res = await undiciFetch(`${n.httpsUrl}${path}`, {
      ...(init as object),
      headers: { ...(token ? { authorization: `Bearer ${token}` } : {}), 'content-type': 'application/json' },
      dispatcher: cas.get(n)!,
    } as never);
    const text = await res.text();
    return { status: res.status, body: text ? JSON.parse(text) : null };
  };
  const node = async (name: string, languages: string, upstream?: NodeProcess): Promise<NodeProcess> => {
    const args = ['--data', join(dir, name), '--name', name, '--languages', languages, '--trusted-key', keys.pubFile, '--admin-token', T];
    if (upstream)
      args.push(
        '--upstream',
        `127.0.0.1:${upstream.grpcPort}`,
        '--join-token',
        (await api(upstream, T, '/api/v1/hierarchy/join-tokens', { method: 'POST', body: '{}' })).body.token,
      );
    const n = await spawnNode(t, args, {}, { plainHttp: false });
    cas.set(n, new Agent({ connect: { ca: readFileSync(join(dir, name, 'tls', 'ca.pem')) } }));
    return n;
  };
  const root = await node('root', 'en');
  const rootCa = (await api(root, T, '/api/v1/node')).body.tls.caSha256 as string;
  const tok = (await api(root, T, '/api/v1/hierarchy/join-tokens', { method: 'POST', body: '{}' })).body.token as string;
  t.match(tok, new RegExp(`^ptj_[A-Za-z0-9_-]+\\.${rootCa}$`), "a join token carries the SHA-256 of the parent's CA");
  const mid = await node('mid', 'de', root);
  const leaf = await node('leaf', 'de', mid);
  for (const n of [mid, leaf])
    t.notOk(
      n.logs.some((l) => String(l.msg).includes('INSECURE')),
      'no plaintext anywhere',
    );
  await waitFor(
    async () => (await api(leaf, T, '/api/v1/hierarchy')).body.upstream?.connected && (await api(mid, T, '/api/v1/hierarchy')).body.upstream?.connected,
    'both children connected',
  );
  const der = (f: string) => new X509Certificate(readFileSync(f)).raw;
  t.ok(der(join(dir, 'mid', 'tls', 'upstream-ca.pem')).equals(der(join(dir, 'root', 'tls', 'ca.pem'))), "mid trusts root's CA");
  t.ok(
    new X509Certificate(readFileSync(join(dir, 'mid', 'tls', 'upstream-client.pem'))).checkIssued(
      new X509Certificate(readFileSync(join(dir, 'root', 'tls', 'ca.pem'))),
    ),
    "mid's client certificate is signed by root's CA",
  );

  // The catalog flows down the whole tree.
  const cat = await buildRealCatalog(dir, keys);
  const form = new FormData();
  form.set('catalog', new Blob([readFileSync(cat.file)]), 'catalog.ndjson.gz');
  form.set('signature', new Blob([readFileSync(cat.sig)]), 'catalog.ndjson.gz.sig');
  const imported = await undiciFetch(`${root.httpsUrl}/api/v1/catalog/imports`, {
    method: 'POST',
    headers: { authorization: `Bearer ${T}` },
    body: form as never,
    dispatcher: cas.get(root)!,
  } as never);
  t.equal(imported.status, 201, 'imported at the root over HTTPS');
  await imported.arrayBuffer();
  await waitFor(async () => (await api(leaf, T, '/api/v1/updates?limit=1')).body.items.length > 0, 'updates at the leaf', 60_000);

  // An agent at the leaf, with no TLS flag: its enrolment token pins the leaf's CA.
  const et = (await api(leaf, T, '/api/v1/agents/enrollment-tokens', { method: 'POST', body: JSON.stringify({ name: 'lab' }) })).body.token as string;
  const inventory = join(dir, 'inventory.json');
  writeFileSync(
    inventory,
    JSON.stringify({
      os: { family: 'windows', name: 'Windows 11 Version 23H2 for x64-based Systems', version: '10.0.22631.2861', arch: 'x64', language: 'de-de' },
      products: [{ name: 'Windows 11 Version 23H2 for x64-based Systems' }],
      kbs: [],
    }),
  );
  startAgent(t, leaf.httpsUrl, join(dir, 'agent'), et, inventory);
  await waitFor(async () => (await api(leaf, T, '/api/v1/computers')).body.items.length === 1, 'the agent enrolled and reported over HTTPS', 30_000);
  // Plain HTTP carries no secret: the agent API and the API answer 403, the console redirects to HTTPS.
  const plainAgent = await fetch(`${leaf.url}/agent/v1/assignments`, { headers: { authorization: 'Bearer pta_whatever' } });
  t.equal(plainAgent.status, 403, 'the agent API on plain HTTP');
  t.match(await plainAgent.text(), /plain HTTP carries no tokens or agent secrets: use https:\/\/127\.0\.0\.1:\d+\/agent\/v1\/assignments/);
  t.equal((await fetch(`${leaf.url}/api/v1/node`, { headers: { authorization: `Bearer ${T}` } })).status, 403, 'API tokens on plain HTTP');
  const page = await fetch(`${leaf.url}/policies?x=1`, { redirect: 'manual' });
  t.equal(page.status, 308);
  t.equal(page.headers.get('location'), `${leaf.httpsUrl}/policies?x=1`, 'the console: the same page on HTTPS');
  t.equal((await fetch(`${leaf.url}/healthz`)).status, 200, 'health stays on plain HTTP');
  const hsts = await undiciFetch(`${leaf.httpsUrl}/healthz`, { dispatcher: cas.get(leaf)! } as never);
  t.match(hsts.headers.get('strict-transport-security'), /^max-age=\d+$/, 'HSTS on HTTPS');

  // Plaintext on the gRPC port: refused.
  const plain = new (replicationService())(`127.0.0.1:${root.grpcPort}`, grpc.credentials.createInsecure()) as any;
  t.teardown(() => plain.close());
  const joinReq = {
    join_token: tok.split('.')[0],
    node_id: '00000000-0000-4000-8000-0000000000f1',
    name: 'x',
    languages: ['en'],
    protocol_version: PROTOCOL_VERSION,
  };
  const perr = await new Promise<any>((resolve) => plain.Join(joinReq, { deadline: Date.now() + 5000 }, (err: any) => resolve(err)));
  t.equal(perr?.code, grpc.status.UNAVAILABLE, `a plaintext client is refused: ${perr?.details}`);

  // A token whose CA is not the server's: refused with a sentence saying so (mid's token, root's address).
  const midTok = (await api(mid, T, '/api/v1/hierarchy/join-tokens', { method: 'POST', body: '{}' })).body.token as string;
  const wrong = await runCli([
    'serve',
    '--data',
    join(dir, 'wrong'),
    '--http-port',
    '0',
    '--https-port',
    '0',
    '--grpc-port',
    '0',
    '--upstream',
    `127.0.0.1:${root.grpcPort}`,
    '--join-token',
    midTok,
  ]);
  t.not(wrong.code, 0, 'the node does not start');
  t.match(
    wrong.stdout + wrong.stderr,
    /refusing 127\.0\.0\.1:\d+: its certificate chain \(CA [0-9a-f]{16}\.\.\.\) does not include the CA [0-9a-f]{16}\.\.\. that the join token names/,
  );

  // A certificate works for its own node only, and a removed child's stops working.
  const leafId = (await api(leaf, T, '/api/v1/hierarchy')).body.node.id as string;
  const creds = grpc.credentials.createSsl(
    readFileSync(join(dir, 'leaf', 'tls', 'upstream-ca.pem')),
    readFileSync(join(dir, 'leaf', 'tls', 'upstream-client.key')),
    readFileSync(join(dir, 'leaf', 'tls', 'upstream-client.pem')),
  );
  const withLeafCert = new (replicationService())(`127.0.0.1:${mid.grpcPort}`, creds) as any;
  t.teardown(() => withLeafCert.close());
  // Another node joins mid honestly; with the leaf's certificate its credential is refused.
  const other = (await api(mid, T, '/api/v1/hierarchy/join-tokens', { method: 'POST', body: '{}' })).body.token.split('.')[0];
  const otherId = '00000000-0000-4000-8000-0000000000f2';
  const joined = await new Promise<any>((resolve) =>
    withLeafCert.Join({ ...joinReq, join_token: other, node_id: otherId, csr: '' }, (err: any, r: any) => resolve(err ?? r)),
  );
  t.equal(joined.code, grpc.status.FAILED_PRECONDITION, 'a join without a certificate request is refused where the parent signs');
  t.match(joined.details, /^csr: /);
  const otherTok = (await api(mid, T, '/api/v1/hierarchy/join-tokens', { method: 'POST', body: '{}' })).body.token as string;
  const up = await upstreamTls({
    data: join(dir, 'other'),
    address: `127.0.0.1:${mid.grpcPort}`,
    joinToken: otherTok,
    nodeId: otherId,
    insecure: false,
    tlsCa: undefined,
    tlsCert: undefined,
    tlsKey: undefined,
  });
  const { csr } = await up.prepareJoin!();
  const res = await new Promise<any>((resolve, reject) =>
    withLeafCert.Join({ ...joinReq, join_token: otherTok, node_id: otherId, csr }, (err: any, r: any) => (err ? reject(err) : resolve(r))),
  );
  t.match(res.client_certificate, /BEGIN CERTIFICATE/, "mid signed the other node's request");
  const md = new grpc.Metadata();
  md.set('authorization', `Bearer ${res.credential}`);
  const ack = await new Promise<any>((resolve) => withLeafCert.Ack({ node_id: otherId, cursor: '0', files_pending: 0 }, md, (err: any) => resolve(err)));
  t.equal(ack?.code, grpc.status.PERMISSION_DENIED, "its credential with the leaf's certificate: refused");
  t.match(ack?.details, new RegExp(`this certificate is not the one mid signed for node ${otherId}`));
  await api(mid, T, `/api/v1/hierarchy/children/${leafId}`, { method: 'DELETE' });
  await waitFor(async () => /removed/.test((await api(leaf, T, '/api/v1/hierarchy')).body.upstream?.lastError ?? ''), 'the removed leaf is refused', 30_000);
  t.notOk((await api(leaf, T, '/api/v1/hierarchy')).body.upstream.connected, 'and stays disconnected');

  // Joined again with a new token: a new certificate, and it replicates again.
  const oldSerial = new X509Certificate(readFileSync(join(dir, 'leaf', 'tls', 'upstream-client.pem'))).serialNumber;
  leaf.child.kill('SIGTERM');
  await leaf.exited;
  const again = await spawnNode(
    t,
    [
      '--data',
      join(dir, 'leaf'),
      '--name',
      'leaf',
      '--languages',
      'de',
      '--trusted-key',
      keys.pubFile,
      '--admin-token',
      T,
      '--upstream',
      `127.0.0.1:${mid.grpcPort}`,
      '--join-token',
      (await api(mid, T, '/api/v1/hierarchy/join-tokens', { method: 'POST', body: '{}' })).body.token,
    ],
    {},
    { plainHttp: false },
  );
  cas.set(again, cas.get(leaf)!);
  await waitFor(async () => (await api(again, T, '/api/v1/hierarchy')).body.upstream?.connected, 'the leaf joined again', 30_000);
  t.not(new X509Certificate(readFileSync(join(dir, 'leaf', 'tls', 'upstream-client.pem'))).serialNumber, oldSerial, 'with a new certificate');
  t.match(
    (await api(mid, T, '/api/v1/hierarchy')).body.children.find((c: any) => c.id === leafId),
    { removed: false },
    'a child of mid again',
  );
});
