import t from 'tap';
import { X509Certificate } from 'node:crypto';
import { readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { connect } from 'node:tls';
import * as grpc from '@grpc/grpc-js';
import { nodeTls, ownServerCredentials } from '../../src/tls/node-ca.js';
import { tempDir } from '../helpers.js';

/** The serial of the certificate a TLS server presents (verified against `ca`). */
function servedSerial(port: number, ca: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = connect({ host: '127.0.0.1', port, ca, ALPNProtocols: ['h2'] }, () => {
      resolve(s.getPeerCertificate().serialNumber.toLowerCase());
      s.destroy();
    });
    s.on('error', reject);
  });
}

t.test("the node's own certificate: made, kept, made again when its CA or names change, renewed on a running gRPC server", async (t) => {
  const dir = await tempDir(t);
  const first = await nodeTls({ data: dir, name: 'n', names: ['127.0.0.1', 'localhost'] });
  const serial = (pem: string) => new X509Certificate(pem).serialNumber.toLowerCase();
  const leaf = (x: typeof first) => x.certChain.split(/(?<=-----END CERTIFICATE-----\n)/)[0]!;
  const again = await nodeTls({ data: dir, name: 'n', names: ['127.0.0.1', 'localhost'] });
  t.equal(serial(leaf(again)), serial(leaf(first)), 'kept across starts');
  const wider = await nodeTls({ data: dir, name: 'n', names: ['127.0.0.1', 'localhost', 'patch.example'] });
  t.not(serial(leaf(wider)), serial(leaf(first)), 'a new name: a new certificate');
  t.match(new X509Certificate(leaf(wider)).subjectAltName, /DNS:patch\.example/);

  // A running gRPC server with the node's credentials, renewed in place.
  const creds = ownServerCredentials(wider);
  const server = new grpc.Server();
  const port = await new Promise<number>((resolve, reject) => server.bindAsync('127.0.0.1:0', creds, (err, p) => (err ? reject(err) : resolve(p))));
  t.teardown(() => server.forceShutdown());
  t.equal(await servedSerial(port, wider.caPem!), serial(leaf(wider)));
  rmSync(join(dir, 'tls', 'node.pem'));
  const renewed = await nodeTls({ data: dir, name: 'n', names: ['127.0.0.1', 'localhost', 'patch.example'] });
  creds.renew(renewed);
  t.equal(await servedSerial(port, renewed.caPem!), serial(leaf(renewed)), 'new connections get the renewed certificate');

  // A CA made again (its files lost): the server certificate is made again too, signed by it.
  rmSync(join(dir, 'tls', 'ca.pem'));
  rmSync(join(dir, 'tls', 'ca.key'));
  const newCa = await nodeTls({ data: dir, name: 'n', names: ['127.0.0.1', 'localhost', 'patch.example'] });
  t.not(newCa.caSha256, renewed.caSha256);
  t.ok(
    new X509Certificate(leaf(newCa)).verify(new X509Certificate(readFileSync(join(dir, 'tls', 'ca.pem'))).publicKey),
    "signed by the new CA, not kept because the CA's name is the same",
  );
});
