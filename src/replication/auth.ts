import type { PeerCertificate } from 'node:tls';
import type * as grpc from '@grpc/grpc-js';
import { eq } from 'drizzle-orm';
import type { Orm } from '../db/index.js';
import { AppError } from '../lib/errors.js';
import { hashToken } from '../auth/tokens.js';
import { children } from './schema.js';

export type Child = typeof children.$inferSelect;

/** A gRPC call as authentication sees it. */
export interface Caller {
  metadata: grpc.Metadata;
  getPeer(): string;
  getAuthContext(): { sslPeerCertificate?: PeerCertificate | undefined };
}

/** What authenticating a child needs of the parent. */
export interface AuthDeps {
  orm: Orm;
  name: string;
  enabled: boolean;
  certificates: { caPem: string } | null;
  onAuthFailure: (peer: string, why: string) => void;
}

/**
 * The child a call comes from: a known, not removed child's credential (Bearer), and
 * when the tree uses this node's own CA, the client certificate this node signed for
 * it at its last join and no other. Every refusal is counted (onAuthFailure).
 */
export async function authenticateChild(d: AuthDeps, call: Caller): Promise<Child> {
  const md = call.metadata;
  const peer = call.getPeer();
  if (!d.enabled) throw new AppError('unavailable', 'replication needs TLS (--tls-cert, --tls-key) or --insecure on this node');
  const header = String(md.get('authorization')[0] ?? '');
  const m = /^Bearer\s+(\S+)$/i.exec(header);
  if (!m) {
    d.onAuthFailure(peer, 'no credential');
    throw new AppError('unauthenticated', 'send authorization: Bearer <credential> (from Join)');
  }
  const row = await d.orm.query.children.findFirst({ where: eq(children.credentialHash, hashToken(m[1]!)) });
  if (!row) {
    d.onAuthFailure(peer, 'unknown credential');
    throw new AppError('unauthenticated', 'unknown credential');
  }
  if (row.removedAt) throw new AppError('forbidden', `this node was removed from ${d.name}; join again with a new token`);
  // With this node's own CA: the certificate it signed for this child at its join, and no other.
  if (d.certificates && row.certSerial) {
    const cert = call.getAuthContext().sslPeerCertificate;
    if (!cert) {
      d.onAuthFailure(peer, `no client certificate for ${row.id}`);
      throw new AppError(
        'unauthenticated',
        `no valid client certificate: missing, expired or not from ${d.name}'s CA; a node presents the certificate ${d.name} signed at its join (remove it here and join it again to get a new one)`,
      );
    }
    if (cert.subject?.CN !== row.id || cert.serialNumber?.toLowerCase() !== row.certSerial.toLowerCase()) {
      d.onAuthFailure(peer, `a certificate that is not ${row.id}'s current one`);
      throw new AppError('forbidden', `this certificate is not the one ${d.name} signed for node ${row.id} at its last join`);
    }
  }
  return row;
}
