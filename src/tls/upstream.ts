import { webcrypto } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, writeFileSync, chmodSync } from 'node:fs';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import * as x509 from '@peculiar/x509';
import { certSha256, fetchPinnedCert, pem, splitPinnedToken } from './pin.js';
import './node-ca.js'; // sets the crypto provider

/**
 * A child's TLS to its parent without a PKI. The join token carries the SHA-256 of the
 * parent's CA: on the first start the child reads the parent's certificate chain
 * (without trusting it), keeps the CA whose hash the token names
 * (`<data>/tls/upstream-ca.pem`), and joins over TLS verified against it, sending a
 * certificate request for a key of its own (`upstream-client.key`); the parent signs
 * it (`upstream-client.pem`), and every call after that is mutual TLS. Given
 * `--tls-ca` (with `--tls-cert/--tls-key`) or `--insecure`, those are used instead.
 */

export interface UpstreamTls {
  /** What to connect with now (mutual TLS when the child keeps a certificate from its last join). */
  credentials: grpc.ChannelCredentials;
  /**
   * Before a Join (the first, or again after a removal or an expired certificate): the
   * parent's CA checked against the token's pin (fetched again when the token names
   * another), a new key, and the request to send; null for given files or --insecure.
   */
  prepareJoin: (() => Promise<{ csr: string; credentials: grpc.ChannelCredentials }>) | null;
  /** Keeps the certificate the parent signed (and the key of the last prepareJoin); the credentials to reconnect with. */
  accept(certificatePem: string): grpc.ChannelCredentials;
  mode: 'insecure' | 'files' | 'pinned';
}

const ALG = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' } as const;

/** The CA in the parent's chain whose SHA-256 is `pin`; refused with a sentence otherwise. */
export function fetchParentCa(address: string, pin: string, timeoutMs = 30_000): Promise<string> {
  const i = address.lastIndexOf(':');
  return fetchPinnedCert({
    host: address.slice(0, i).replace(/^\[|\]$/g, ''),
    port: Number(address.slice(i + 1)),
    pin,
    token: 'join token',
    alpn: ['h2'],
    hint: "is it a node's gRPC port, with TLS?",
    timeoutMs,
  });
}

export async function upstreamTls(o: {
  data: string;
  address: string;
  joinToken: string | undefined;
  nodeId: string;
  insecure: boolean;
  tlsCa: string | undefined;
  tlsCert: string | undefined;
  tlsKey: string | undefined;
}): Promise<UpstreamTls> {
  const none = {
    prepareJoin: null,
    accept: () => {
      throw new Error('no certificate is expected');
    },
  };
  if (o.tlsCa) {
    const credentials = grpc.credentials.createSsl(readFileSync(o.tlsCa), o.tlsKey ? readFileSync(o.tlsKey) : null, o.tlsCert ? readFileSync(o.tlsCert) : null);
    return { credentials, mode: 'files', ...none };
  }
  if (o.insecure) return { credentials: grpc.credentials.createInsecure(), mode: 'insecure', ...none };
  const dir = join(o.data, 'tls');
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const f = { ca: join(dir, 'upstream-ca.pem'), key: join(dir, 'upstream-client.key'), cert: join(dir, 'upstream-client.pem') };
  const pin = o.joinToken ? splitPinnedToken(o.joinToken).caSha256 : null;
  if (!existsSync(f.ca)) {
    if (!pin)
      throw Object.assign(
        new Error(
          `--upstream ${o.address}: give the join token as the parent hands it out (<token>.<ca sha256>), so that this node can verify its parent; or --tls-ca, or --insecure for a lab`,
        ),
        { config: true },
      );
    writeFileSync(f.ca, await fetchParentCa(o.address, pin));
  }
  let pendingKey: string | null = null;
  return {
    credentials:
      existsSync(f.cert) && existsSync(f.key)
        ? grpc.credentials.createSsl(readFileSync(f.ca), readFileSync(f.key), readFileSync(f.cert))
        : grpc.credentials.createSsl(readFileSync(f.ca)),
    mode: 'pinned',
    async prepareJoin() {
      if (pin && certSha256(readFileSync(f.ca, 'utf8')) !== pin) writeFileSync(f.ca, await fetchParentCa(o.address, pin));
      // A key of its own, and a request for the parent to sign.
      const keys = (await webcrypto.subtle.generateKey(ALG, true, ['sign', 'verify'])) as webcrypto.CryptoKeyPair;
      pendingKey = pem('PRIVATE KEY', Buffer.from(await webcrypto.subtle.exportKey('pkcs8', keys.privateKey)));
      const csr = await x509.Pkcs10CertificateRequestGenerator.create({ name: `CN=${o.nodeId}`, keys: keys as never, signingAlgorithm: ALG });
      return { csr: csr.toString('pem'), credentials: grpc.credentials.createSsl(readFileSync(f.ca)) };
    },
    accept(certificatePem: string) {
      if (!pendingKey) throw new Error('no certificate request is pending');
      writeFileSync(f.key, pendingKey, { mode: 0o600 });
      chmodSync(f.key, 0o600);
      writeFileSync(f.cert, certificatePem);
      return grpc.credentials.createSsl(readFileSync(f.ca), Buffer.from(pendingKey), Buffer.from(certificatePem));
    },
  };
}
