import { createHash, X509Certificate } from 'node:crypto';

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
