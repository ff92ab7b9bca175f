import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Agent, fetch as undiciFetch } from 'undici';
import { fetchPinnedCert } from '../tls/pin.js';

/**
 * Whom the agent trusts. An enrolment token that pins a CA (`<token>.<ca sha256>`,
 * tls/pin.ts) makes the agent fetch the node's certificate chain once, without
 * trusting it, and keep the CA whose SHA-256 is the pin (`<state>/ca.pem`); every
 * request after that verifies the node against that CA and nothing else. Without a
 * pin, an https:// node is verified against the system's CAs (an enterprise PKI).
 */

export type Fetch = (url: URL | string, init?: RequestInit) => Promise<Response>;

const CA_FILE = 'ca.pem';

/**
 * Fetches the node's CA and checks it against the pin from the enrolment token;
 * refused, with a sentence saying so, when the node presents no such CA.
 */
export async function fetchPinnedCa(server: string, pin: string, timeoutMs = 30_000): Promise<string> {
  const url = new URL(server);
  if (url.protocol !== 'https:')
    throw new Error(`the enrolment token pins the node's CA: give --server https://${url.hostname}:8443 (the node's HTTPS port), not ${url.protocol}//`);
  return fetchPinnedCert({ host: url.hostname.replace(/^\[|\]$/g, ''), port: Number(url.port || 443), pin, token: 'enrolment token', timeoutMs });
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
