import { createHash } from 'node:crypto';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { isIP } from 'node:net';
import { join } from 'node:path';
import { connect, type DetailedPeerCertificate } from 'node:tls';
import { Agent, fetch as undiciFetch } from 'undici';

/**
 * Whom the agent trusts. An enrolment token that pins a CA (`<token>.<ca sha256>`,
 * tls/pin.ts) makes the agent fetch the node's certificate chain once, without
 * trusting it, and keep the CA whose SHA-256 is the pin (`<state>/ca.pem`); every
 * request after that verifies the node against that CA and nothing else. Without a
 * pin, an https:// node is verified against the system's CAs (an enterprise PKI).
 */

export type Fetch = (url: URL | string, init?: RequestInit) => Promise<Response>;

const CA_FILE = 'ca.pem';

function pem(der: Buffer): string {
  return `-----BEGIN CERTIFICATE-----\n${der.toString('base64').match(/.{1,64}/g)!.join('\n')}\n-----END CERTIFICATE-----\n`;
}

/** The certificates a TLS server presents (leaf first), read without verifying them. */
function presentedChain(server: URL, timeoutMs: number): Promise<Buffer[]> {
  return new Promise((resolve, reject) => {
    const host = server.hostname.replace(/^\[|\]$/g, '');
    const socket = connect({ host, port: Number(server.port || 443), rejectUnauthorized: false, ...(isIP(host) ? {} : { servername: host }) }, () => {
      const chain: Buffer[] = [];
      let c: DetailedPeerCertificate | undefined = socket.getPeerCertificate(true);
      while (c?.raw && !chain.some((d) => d.equals(c!.raw))) {
        chain.push(c.raw);
        c = c.issuerCertificate;
      }
      socket.end();
      resolve(chain);
    });
    socket.setTimeout(timeoutMs, () => socket.destroy(new Error(`no TLS answer from ${server.host} within ${timeoutMs / 1000} s`)));
    socket.on('error', (err) => reject(new Error(`${server.host}: ${err.message}`)));
  });
}

/**
 * Fetches the node's CA and checks it against the pin from the enrolment token;
 * refused, with a sentence saying so, when the node presents no such CA.
 */
export async function fetchPinnedCa(server: string, pin: string, timeoutMs = 30_000): Promise<string> {
  const url = new URL(server);
  if (url.protocol !== 'https:') throw new Error(`the enrolment token pins the node's CA: give --server https://${url.hostname}:8443 (the node's HTTPS port), not ${url.protocol}//`);
  const chain = await presentedChain(url, timeoutMs);
  const hashes = chain.map((d) => createHash('sha256').update(d).digest('hex'));
  const i = hashes.indexOf(pin);
  if (i < 0)
    throw new Error(
      `refusing ${url.host}: its certificate chain (${hashes.length ? `CA ${hashes[hashes.length - 1]!.slice(0, 16)}...` : 'none'}) does not include the CA ${pin.slice(0, 16)}... that the enrolment token names: a different node, or someone in between`,
    );
  return pem(chain[i]!);
}

/** A fetch that trusts `caPem` only (or the system's CAs when there is none). */
export function fetchTrusting(caPem: string | null): Fetch {
  if (!caPem) return (url, init) => fetch(url, init);
  const dispatcher = new Agent({ connect: { ca: caPem } });
  return (url, init) => undiciFetch(url, { ...(init as object), dispatcher } as never) as unknown as Promise<Response>;
}

export function readPinnedCa(state: string): string | null {
  const f = join(state, CA_FILE);
  return existsSync(f) ? readFileSync(f, 'utf8') : null;
}

export function writePinnedCa(state: string, caPem: string): void {
  writeFileSync(join(state, CA_FILE), caPem, { mode: 0o644 });
}
