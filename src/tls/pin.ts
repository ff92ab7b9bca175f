import { createHash, X509Certificate } from 'node:crypto';
import { isIP } from 'node:net';
import { connect, type DetailedPeerCertificate } from 'node:tls';

/**
 * Tokens that pin the issuing node's CA: `<token>.<sha256 of the CA certificate's DER,
 * hex>` (a token itself has no dot). Whoever redeems one trusts exactly that CA (the
 * agent's first connection fetches the CA and checks it against the pin). No X.509
 * library here: the agent imports this.
 */

/** SHA-256 (hex) of a PEM certificate's DER. */
export function certSha256(pem: string): string {
  return createHash('sha256').update(new X509Certificate(pem).raw).digest('hex');
}

/** A token with the issuing node's CA hash after its last dot: `<token>.<64 hex>`. */
export function pinnedToken(token: string, caSha256: string | null): string {
  return caSha256 ? `${token}.${caSha256}` : token;
}

/** Splits `<token>.<ca sha256>`; a token without the suffix has no pin. */
export function splitPinnedToken(t: string): { token: string; caSha256: string | null } {
  const m = /^(.+)\.([0-9a-f]{64})$/.exec(t);
  return m ? { token: m[1]!, caSha256: m[2]! } : { token: t, caSha256: null };
}

/** DER as PEM of `label` (`CERTIFICATE`, `PRIVATE KEY`), 64 characters a line. */
export function pem(label: string, der: Buffer): string {
  return `-----BEGIN ${label}-----\n${der
    .toString('base64')
    .match(/.{1,64}/g)!
    .join('\n')}\n-----END ${label}-----\n`;
}

/**
 * Reads the certificate chain a TLS server presents, without trusting it, and returns
 * (as PEM) the certificate whose SHA-256 is `pin`; refused with a sentence otherwise.
 * The agent's enrolment and a child's join both start here (`token` names which).
 */
export async function fetchPinnedCert(o: {
  host: string;
  port: number;
  pin: string;
  token: string;
  alpn?: string[];
  hint?: string;
  timeoutMs?: number;
}): Promise<string> {
  const label = `${o.host.includes(':') ? `[${o.host}]` : o.host}:${o.port}`;
  const timeoutMs = o.timeoutMs ?? 30_000;
  const chain = await new Promise<Buffer[]>((resolve, reject) => {
    const socket = connect(
      { host: o.host, port: o.port, rejectUnauthorized: false, ...(o.alpn ? { ALPNProtocols: o.alpn } : {}), ...(isIP(o.host) ? {} : { servername: o.host }) },
      () => {
        const out: Buffer[] = [];
        let c: DetailedPeerCertificate | undefined = socket.getPeerCertificate(true);
        while (c?.raw && !out.some((d) => d.equals(c!.raw))) {
          out.push(c.raw);
          c = c.issuerCertificate;
        }
        socket.destroy();
        resolve(out);
      },
    );
    socket.setTimeout(timeoutMs, () => socket.destroy(new Error(`no TLS answer from ${label} within ${timeoutMs / 1000} s${o.hint ? ` (${o.hint})` : ''}`)));
    socket.on('error', (err) => reject(new Error(`${label}: ${err.message}`)));
  });
  const hashes = chain.map((d) => createHash('sha256').update(d).digest('hex'));
  const at = hashes.indexOf(o.pin);
  if (at < 0)
    throw new Error(
      `refusing ${label}: its certificate chain (${hashes.length ? `CA ${hashes[hashes.length - 1]!.slice(0, 16)}...` : 'none'}) does not include the CA ${o.pin.slice(0, 16)}... that the ${o.token} names: a different node, or someone in between`,
    );
  return pem('CERTIFICATE', chain[at]!);
}
