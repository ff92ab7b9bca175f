import 'reflect-metadata'; // @peculiar/x509's dependency injection needs it, before the import below
import { webcrypto, X509Certificate } from 'node:crypto';
import { certSha256, pem } from './pin.js';
export { certSha256, pinnedToken, splitPinnedToken } from './pin.js';
import { chmodSync, existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { isIP } from 'node:net';
import { join } from 'node:path';
import * as x509 from '@peculiar/x509';
import * as grpc from '@grpc/grpc-js';

/**
 * The node's own CA and server certificate, so that every channel is TLS without a
 * PKI (kubeadm's way): on first start the node makes, in `<data>/tls/`, an ECDSA P-256
 * CA (`ca.pem`, `ca.key` mode 0600, ten years) and a server certificate for its names
 * and addresses signed by it (`node.pem`, `node.key`, one year), renewed when 30 days
 * are left or its names change. Tokens the node hands out carry the SHA-256 of the CA
 * certificate (DER), so whoever redeems one trusts exactly this CA. Certificates given
 * with --tls-cert/--tls-key (and --tls-ca) replace them: an enterprise PKI still works.
 */

x509.cryptoProvider.set(webcrypto as never);

type CryptoKey = webcrypto.CryptoKey;
type CryptoKeyPair = webcrypto.CryptoKeyPair;

const ALG = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' } as const;
const DAY = 86_400_000;
const CA_DAYS = 3650;
const CERT_DAYS = 365;
const RENEW_DAYS = 30;

export interface NodeTls {
  /** PEM of the certificate chain the server presents: its certificate, then the CA's. */
  certChain: string;
  key: string;
  /** PEM of the CA that clients pin (null: given certificates without --tls-ca). */
  caPem: string | null;
  /** SHA-256 (hex) of the CA certificate's DER: what tokens carry. */
  caSha256: string | null;
  certNotAfter: string;
  /** Made by this node (false: --tls-cert/--tls-key). */
  own: boolean;
  /** The CA's key, to sign child nodes' certificates (own CA only). */
  caKey: CryptoKey | null;
  caCert: x509.X509Certificate | null;
}

function writePrivate(path: string, text: string): void {
  writeFileSync(`${path}.tmp`, text, { mode: 0o600 });
  chmodSync(`${path}.tmp`, 0o600);
  renameSync(`${path}.tmp`, path);
}

async function exportKey(key: CryptoKey): Promise<string> {
  return pem('PRIVATE KEY', Buffer.from(await webcrypto.subtle.exportKey('pkcs8', key)));
}

async function importKey(pem: string): Promise<CryptoKey> {
  const der = Buffer.from(pem.replace(/-----[^-]+-----/g, '').replace(/\s+/g, ''), 'base64');
  return webcrypto.subtle.importKey('pkcs8', der, ALG, true, ['sign']);
}

const serial = () =>
  Buffer.from(webcrypto.getRandomValues(new Uint8Array(16)))
    .toString('hex')
    .replace(/^[89a-f]/, '7');

async function makeCa(name: string, now: Date): Promise<{ cert: x509.X509Certificate; keys: CryptoKeyPair }> {
  const keys = (await webcrypto.subtle.generateKey(ALG, true, ['sign', 'verify'])) as CryptoKeyPair;
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: serial(),
    name: `CN=patchtree CA ${name.replace(/[,=+<>#;"\\]/g, ' ')}`,
    notBefore: new Date(now.getTime() - DAY),
    notAfter: new Date(now.getTime() + CA_DAYS * DAY),
    signingAlgorithm: ALG,
    keys,
    extensions: [
      new x509.BasicConstraintsExtension(true, 1, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
    ],
  });
  return { cert, keys };
}

/** Signs a certificate for `publicKey` with the node's CA: server and client use, the given names. */
export async function issue(
  ca: { cert: x509.X509Certificate; key: CryptoKey },
  publicKey: CryptoKey,
  o: { cn: string; names: readonly string[]; days: number; now: Date },
): Promise<x509.X509Certificate> {
  const sans = o.names.map((n) => (isIP(n) ? { type: 'ip' as const, value: n } : { type: 'dns' as const, value: n }));
  return x509.X509CertificateGenerator.create({
    serialNumber: serial(),
    subject: `CN=${o.cn.replace(/[,=+<>#;"\\]/g, ' ')}`,
    issuer: ca.cert.subject,
    notBefore: new Date(o.now.getTime() - DAY),
    notAfter: new Date(o.now.getTime() + o.days * DAY),
    signingAlgorithm: ALG,
    publicKey,
    signingKey: ca.key,
    extensions: [
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
      new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth, x509.ExtendedKeyUsage.clientAuth]),
      ...(sans.length ? [new x509.SubjectAlternativeNameExtension(sans)] : []),
      await x509.AuthorityKeyIdentifierExtension.create(ca.cert),
    ],
  });
}

/** The names a node's certificate covers, once each. */
export function certNames(hostName: string, extra: readonly string[]): string[] {
  return [...new Set([hostName, 'localhost', '127.0.0.1', '::1', ...extra].filter(Boolean))];
}

/**
 * The node's TLS material: given files, or its own CA and server certificate in
 * `<data>/tls/`, made on first start and renewed when due.
 */
export async function nodeTls(o: {
  data: string;
  name: string;
  names: readonly string[];
  given?: { cert: string; key: string; ca?: string | undefined };
  now?: Date;
}): Promise<NodeTls> {
  const now = o.now ?? new Date();
  if (o.given) {
    const certChain = readFileSync(o.given.cert, 'utf8');
    const caPem = o.given.ca ? readFileSync(o.given.ca, 'utf8') : null;
    return {
      certChain,
      key: readFileSync(o.given.key, 'utf8'),
      caPem,
      caSha256: caPem ? certSha256(caPem) : null,
      certNotAfter: new Date(new X509Certificate(certChain).validTo).toISOString(),
      own: false,
      caKey: null,
      caCert: null,
    };
  }
  const dir = join(o.data, 'tls');
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const f = { ca: join(dir, 'ca.pem'), caKey: join(dir, 'ca.key'), cert: join(dir, 'node.pem'), key: join(dir, 'node.key') };
  let caCert: x509.X509Certificate;
  let caKey: CryptoKey;
  if (existsSync(f.ca) && existsSync(f.caKey)) {
    caCert = new x509.X509Certificate(readFileSync(f.ca, 'utf8'));
    caKey = await importKey(readFileSync(f.caKey, 'utf8'));
  } else {
    const made = await makeCa(o.name, now);
    caCert = made.cert;
    caKey = made.keys.privateKey;
    writePrivate(f.caKey, await exportKey(caKey));
    writeFileSync(f.ca, caCert.toString('pem'));
  }
  const caPem = caCert.toString('pem');
  // The server certificate: made again when it is due or its names changed.
  let certPem = existsSync(f.cert) && existsSync(f.key) ? readFileSync(f.cert, 'utf8') : null;
  if (certPem) {
    const c = new x509.X509Certificate(certPem);
    const san = c.getExtension(x509.SubjectAlternativeNameExtension);
    const have = new Set((san?.names.items ?? []).map((n) => n.value));
    // Signed by this CA (a CA made again has the same name, not the same key).
    const signed = await c.verify({ publicKey: caCert.publicKey, signatureOnly: true }).catch(() => false);
    const stale = c.notAfter.getTime() - now.getTime() < RENEW_DAYS * DAY || o.names.some((n) => !have.has(n)) || !signed;
    if (stale) certPem = null;
  }
  if (!certPem) {
    const keys = (await webcrypto.subtle.generateKey(ALG, true, ['sign', 'verify'])) as CryptoKeyPair;
    const cert = await issue({ cert: caCert, key: caKey }, keys.publicKey, { cn: o.name, names: o.names, days: CERT_DAYS, now });
    writePrivate(f.key, await exportKey(keys.privateKey));
    certPem = cert.toString('pem');
    writeFileSync(f.cert, certPem);
  }
  return {
    certChain: `${certPem.trim()}\n${caPem.trim()}\n`,
    key: readFileSync(f.key, 'utf8'),
    caPem,
    caSha256: certSha256(caPem),
    certNotAfter: new x509.X509Certificate(certPem).notAfter.toISOString(),
    own: true,
    caKey,
    caCert,
  };
}

/**
 * gRPC server credentials with the node's own certificate: a client certificate is
 * asked for and checked against the node's CA, but not required at the TLS level (a
 * joining child has none yet); the Replication service requires it on every call
 * but Join (replication/parent.ts).
 */
export function ownServerCredentials(tls: NodeTls): grpc.ServerCredentials & { renew(t: NodeTls): void } {
  let identity = { certificate: Buffer.from(tls.certChain), privateKey: Buffer.from(tls.key) };
  const ca = { caCertificate: Buffer.from(tls.caPem!) };
  const listeners = new Set<(u: typeof identity) => void>();
  // Answered on the next tick: grpc-js adds the server's watcher only after it has added these listeners.
  const provider: grpc.experimental.CertificateProvider = {
    addCaCertificateListener: (l) => queueMicrotask(() => l(ca)),
    removeCaCertificateListener: () => {},
    addIdentityCertificateListener: (l) => {
      listeners.add(l);
      queueMicrotask(() => l(identity));
    },
    removeIdentityCertificateListener: (l) => void listeners.delete(l),
  };
  const creds = grpc.experimental.createCertificateProviderServerCredentials(provider, provider, false);
  // A renewed certificate reaches new connections as it does on HTTPS.
  return Object.assign(creds, {
    renew(t: NodeTls) {
      identity = { certificate: Buffer.from(t.certChain), privateKey: Buffer.from(t.key) };
      for (const l of listeners) l(identity);
    },
  });
}

/**
 * The gRPC server's credentials: the given certificate files (with --tls-ca, client
 * certificates are required), else plaintext with --insecure, else the node's own
 * certificate (renewed in place: `renew`).
 */
export function grpcServerCredentials(
  tls: NodeTls,
  o: { insecure: boolean; tlsCert?: string | undefined; tlsKey?: string | undefined; tlsCa?: string | undefined },
): grpc.ServerCredentials & { renew(t: NodeTls): void } {
  const fixed = (creds: grpc.ServerCredentials) => Object.assign(creds, { renew: () => {} });
  if (o.tlsCert && o.tlsKey) {
    const identity = [{ cert_chain: readFileSync(o.tlsCert), private_key: readFileSync(o.tlsKey) }];
    return fixed(grpc.ServerCredentials.createSsl(o.tlsCa ? readFileSync(o.tlsCa) : null, identity, Boolean(o.tlsCa)));
  }
  return o.insecure ? fixed(grpc.ServerCredentials.createInsecure()) : ownServerCredentials(tls);
}

/** Signs a joining child's certificate request: its node id as the name, a year, client and server use. */
export async function signChild(tls: NodeTls, csrPem: string, nodeId: string): Promise<{ certificatePem: string; serial: string }> {
  if (!tls.caKey || !tls.caCert) throw new Error('this node signs with its own CA only');
  let csr: x509.Pkcs10CertificateRequest;
  try {
    csr = new x509.Pkcs10CertificateRequest(csrPem);
  } catch {
    throw Object.assign(new Error('csr: not a PEM certificate request'), { code: 3, details: 'csr: not a PEM certificate request' });
  }
  if (!(await csr.verify())) throw Object.assign(new Error('csr: its signature does not verify'), { code: 3, details: 'csr: its signature does not verify' });
  const publicKey = await csr.publicKey.export(ALG, ['verify']);
  const cert = await issue({ cert: tls.caCert, key: tls.caKey }, publicKey, { cn: nodeId, names: [], days: CERT_DAYS, now: new Date() });
  return { certificatePem: cert.toString('pem'), serial: cert.serialNumber };
}
