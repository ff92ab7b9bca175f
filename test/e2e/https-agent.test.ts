import t from 'tap';
import { createHash, X509Certificate } from 'node:crypto';
import { readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Agent, fetch as undiciFetch } from 'undici';
import {
  ADMIN_TOKEN as T,
  api,
  header,
  makeKeys,
  runCli,
  sampleUpdate,
  spawnNode,
  startAgent,
  tempDir,
  uploadCatalog,
  writeSignedCatalog,
} from '../helpers.js';
import { startVendor, waitFor } from '../vendor.js';

const W11 = 'Windows 11 Version 23H2 for x64-based Systems';

/**
 * TLS without a PKI for agents: the node makes its own CA and certificate, serves
 * HTTPS, and its enrolment tokens carry the CA's SHA-256; an agent given such a token
 * and the node's https:// address (no CA file, no other flag) trusts exactly that CA,
 * and refuses a node that presents another.
 */
t.test("a node's own CA, HTTPS, and an agent that pins the CA from its enrolment token", async (t) => {
  const dir = await tempDir(t, 'patchtree-https-');
  const keys = await makeKeys(dir);
  const vendor = await startVendor(t);
  const f = vendor.add('/kb1.msu', 3000);
  const upd = sampleUpdate(1, {
    files: [
      {
        name: 'kb1.msu',
        url: vendor.url(f.path),
        size: f.data.length,
        sha256: f.sha256,
        language: 'neutral',
        installer: { type: 'command', command: `sh -c 'exit 0' # "{file}"` },
      },
    ],
  });
  const cat = await writeSignedCatalog(dir, keys, 'c.gz', header('v1', 1), [upd]);
  const node = await spawnNode(t, ['--data', join(dir, 'node'), '--admin-token', T, '--trusted-key', keys.pubFile, '--name', 'site']);
  t.equal((await uploadCatalog(node.url, T, cat.file, cat.sig)).status, 201);

  // The node's own CA and certificate.
  const tlsDir = join(dir, 'node', 'tls');
  const caPem = readFileSync(join(tlsDir, 'ca.pem'), 'utf8');
  const ca = new X509Certificate(caPem);
  t.ok(ca.ca, 'a CA certificate');
  t.equal(ca.publicKey.asymmetricKeyDetails?.namedCurve, 'prime256v1', 'ECDSA P-256');
  for (const k of ['ca.key', 'node.key']) t.equal(statSync(join(tlsDir, k)).mode & 0o777, 0o600, `${k}: 0600`);
  const leaf = new X509Certificate(readFileSync(join(tlsDir, 'node.pem')));
  t.ok(leaf.verify(ca.publicKey), "the server certificate is signed by the node's CA");
  t.match(leaf.subjectAltName, /IP Address:127\.0\.0\.1/);
  t.match(leaf.subjectAltName, /DNS:localhost/);

  // HTTPS, verified against that CA alone.
  const pinned = new Agent({ connect: { ca: caPem } });
  const res = await undiciFetch(`${node.httpsUrl}/api/v1/node`, { headers: { authorization: `Bearer ${T}` }, dispatcher: pinned });
  t.equal(res.status, 200);

  const info = (await res.json()) as any;
  const caSha256 = createHash('sha256').update(ca.raw).digest('hex');
  t.equal(info.tls.caSha256, caSha256, "GET /api/v1/node shows the CA's SHA-256");
  t.equal(info.tls.certNotAfter, new Date(leaf.validTo).toISOString());
  t.ok(Date.parse(info.tls.certNotAfter) - Date.now() > 300 * 86_400_000, 'a year ahead');
  await t.rejects(fetch(`${node.httpsUrl}/healthz`), "the system's CAs do not know the node's own CA");

  // The enrolment token carries the pin.
  const et = (await api(node.url, T, '/api/v1/agents/enrollment-tokens', { method: 'POST', body: JSON.stringify({ name: 'lab' }) })).body.token as string;
  t.match(et, new RegExp(`^pte_[A-Za-z0-9_-]+\\.${caSha256}$`), '<token>.<ca sha256>');
  const inventory = join(dir, 'inventory.json');
  writeFileSync(
    inventory,
    JSON.stringify({ os: { family: 'windows', name: W11, version: '10.0.22631.2861', arch: 'x64', language: 'en-us' }, products: [{ name: W11 }], kbs: [] }),
  );

  // Another node's address with this node's token: refused, with a sentence saying why.
  const other = await spawnNode(t, ['--data', join(dir, 'other'), '--admin-token', T, '--name', 'other']);
  const wrong = await runCli([
    'agent',
    'run',
    '--server',
    other.httpsUrl,
    '--state',
    join(dir, 'wrong'),
    '--enrollment-token',
    et,
    '--inventory',
    `file:${inventory}`,
  ]);
  t.not(wrong.code, 0);
  t.match(
    wrong.stderr,
    /refusing 127\.0\.0\.1:\d+: its certificate chain \(CA [0-9a-f]{16}\.\.\.\) does not include the CA [0-9a-f]{16}\.\.\. that the enrolment token names/,
  );
  t.equal((await api(other.url, T, '/api/v1/agents')).body.items.length, 0, 'nothing enrolled there');
  const plain = await runCli([
    'agent',
    'run',
    '--server',
    node.url,
    '--state',
    join(dir, 'plain'),
    '--enrollment-token',
    et,
    '--inventory',
    `file:${inventory}`,
  ]);
  t.match(
    plain.stderr,
    /--server http:\/\/127\.0\.0\.1:\d+ is plain HTTP: give the node's HTTPS address \(https:\/\/127\.0\.0\.1:8443\), or --insecure for a lab/,
    'plain HTTP without --insecure: refused',
  );

  // The right node: enrolled over TLS with no CA file and no other flag; it scans, installs, reports.
  const state = join(dir, 'agent');
  startAgent(t, node.httpsUrl, state, et, inventory);
  const p = await api(node.url, T, '/api/v1/policies', {
    method: 'POST',
    body: JSON.stringify({ name: 'Now', updates: ['test-1'], targets: { all: true }, installation: { maintenance: { mode: 'any-time' } } }),
  });
  t.equal(p.status, 201);
  await waitFor(
    async () => (await api(node.url, T, `/api/v1/policies/${p.body.id}/delivery`)).body.items.find((i: any) => i.updateId === 'test-1')?.state === 'installed',
    'installed, reported over HTTPS',
    60_000,
  );
  t.equal(readFileSync(join(state, 'ca.pem'), 'utf8').trim(), caPem.trim(), "the agent keeps the node's CA");
  t.match(readFileSync(join(state, 'patch.log'), 'utf8'), new RegExp(`the node's CA matches the enrolment token \\(sha256 ${caSha256}\\)`));
  t.equal(JSON.parse(readFileSync(join(state, 'credentials.json'), 'utf8')).server, node.httpsUrl);
});
