import t from 'tap';
import { execFileSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { api, ADMIN_TOKEN, runCli, spawnNode, tempDir } from '../helpers.js';
import { waitFor } from '../vendor.js';

const T = ADMIN_TOKEN;

/** A CA, a server certificate for localhost/127.0.0.1, and a client certificate, made with openssl. */
function makePki(dir: string) {
  const ossl = (...args: string[]) => execFileSync('openssl', args, { cwd: dir, stdio: 'pipe' });
  ossl(
    'req',
    '-x509',
    '-newkey',
    'ec',
    '-pkeyopt',
    'ec_paramgen_curve:P-256',
    '-nodes',
    '-keyout',
    'ca.key',
    '-out',
    'ca.pem',
    '-days',
    '2',
    '-subj',
    '/CN=patchtree test CA',
  );
  writeFileSync(join(dir, 'server.ext'), 'subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n');
  writeFileSync(join(dir, 'client.ext'), 'extendedKeyUsage=clientAuth\n');
  for (const who of ['server', 'client']) {
    ossl('req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', `${who}.key`, '-out', `${who}.csr`, '-subj', `/CN=${who}`);
    ossl(
      'x509',
      '-req',
      '-in',
      `${who}.csr`,
      '-CA',
      'ca.pem',
      '-CAkey',
      'ca.key',
      '-CAcreateserial',
      '-out',
      `${who}.pem`,
      '-days',
      '2',
      '-extfile',
      `${who}.ext`,
    );
  }
  const p = (f: string) => join(dir, f);
  return { ca: p('ca.pem'), serverCert: p('server.pem'), serverKey: p('server.key'), clientCert: p('client.pem'), clientKey: p('client.key') };
}

t.test('mutual TLS between a parent and a child', async (t) => {
  const dir = await tempDir(t);
  const pki = makePki(dir);
  const root = await spawnNode(t, [
    '--data',
    join(dir, 'root'),
    '--name',
    'root',
    '--admin-token',
    T,
    '--tls-cert',
    pki.serverCert,
    '--tls-key',
    pki.serverKey,
    '--tls-ca',
    pki.ca,
  ]);
  const token = async () => (await api(root.url, T, '/api/v1/hierarchy/join-tokens', { method: 'POST', body: '{}' })).body.token;

  const child = await spawnNode(t, [
    '--data',
    join(dir, 'child'),
    '--name',
    'child',
    '--admin-token',
    T,
    '--upstream',
    `localhost:${root.grpcPort}`,
    '--join-token',
    await token(),
    '--tls-ca',
    pki.ca,
    '--tls-cert',
    pki.clientCert,
    '--tls-key',
    pki.clientKey,
  ]);
  await waitFor(async () => (await api(child.url, T, '/api/v1/hierarchy')).body.upstream.connected, 'the child connected over mutual TLS');
  t.notOk(
    child.logs.some((l) => String(l.msg).startsWith('INSECURE: --insecure is set')),
    'no plaintext replication warning',
  );

  // Without a client certificate the parent refuses the connection.
  const anon = await spawnNode(t, [
    '--data',
    join(dir, 'anon'),
    '--name',
    'anon',
    '--admin-token',
    T,
    '--upstream',
    `localhost:${root.grpcPort}`,
    '--join-token',
    await token(),
    '--tls-ca',
    pki.ca,
  ]);
  const err = await waitFor(async () => (await api(anon.url, T, '/api/v1/hierarchy')).body.upstream.lastError, 'a refusal');
  t.ok(err, `refused: ${err}`);
  t.equal((await api(anon.url, T, '/api/v1/hierarchy')).body.upstream.connected, false);
  t.same(
    (await api(root.url, T, '/api/v1/hierarchy')).body.children.map((c: any) => c.name),
    ['child'],
    'only the child with a certificate joined',
  );

  // Plaintext is never chosen silently.
  const refused = await runCli(['serve', '--data', join(dir, 'x'), '--upstream', `localhost:${root.grpcPort}`, '--join-token', 'ptj_whatever-long']);
  t.equal(refused.code, 2);
  t.match(refused.stderr, /invalid --join-token: replication needs TLS: give the join token as the parent hands it out .* or --tls-ca, or --insecure/);
  const insecure = await spawnNode(t, ['--data', join(dir, 'plain'), '--admin-token', T, '--insecure']);
  t.ok(
    insecure.logs.some((l) => l.level === 40 && String(l.msg).startsWith('INSECURE')),
    'the node says so loudly at start',
  );
});
