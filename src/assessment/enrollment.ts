import { randomBytes, randomUUID } from 'node:crypto';
import { and, desc, eq, isNull } from 'drizzle-orm';
import type { Orm } from '../db/index.js';
import { AppError } from '../lib/errors.js';
import { hashToken } from '../auth/tokens.js';
import { enrollmentTokens } from './schema.js';
import { splitPinnedToken } from '../tls/pin.js';

export interface EnrollmentToken {
  id: string;
  name: string;
}

/**
 * Enrolment tokens: created by an admin, handed to agents (in an installer, say).
 * Each has an expiry and an optional limit on the computers it may enrol; a
 * computer already known keeps reporting with it until it expires or is revoked.
 */
export class EnrollmentTokens {
  constructor(private readonly orm: Orm) {}

  async create(o: { name: string; expiresInHours: number; maxUses: number | null }, by: string | null) {
    const token = `pte_${randomBytes(32).toString('base64url')}`;
    const id = randomUUID();
    const now = Date.now();
    const expiresAt = now + o.expiresInHours * 3_600_000;
    await this.orm
      .insert(enrollmentTokens)
      .values({ id, name: o.name, tokenHash: hashToken(token), createdAt: now, createdBy: by, expiresAt, maxUses: o.maxUses });
    return { id, name: o.name, token, expiresAt: new Date(expiresAt).toISOString(), maxUses: o.maxUses };
  }

  async list() {
    const rows = await this.orm.select().from(enrollmentTokens).orderBy(desc(enrollmentTokens.createdAt));
    return rows.map((r) => ({
      id: r.id,
      name: r.name,
      createdAt: new Date(r.createdAt).toISOString(),
      createdBy: r.createdBy,
      expiresAt: new Date(r.expiresAt).toISOString(),
      maxUses: r.maxUses,
      uses: r.uses,
      revokedAt: r.revokedAt ? new Date(r.revokedAt).toISOString() : null,
      usable: !r.revokedAt && r.expiresAt > Date.now() && (r.maxUses === null || r.uses < r.maxUses),
    }));
  }

  async revoke(id: string): Promise<void> {
    const r = await this.orm
      .update(enrollmentTokens)
      .set({ revokedAt: Date.now() })
      .where(and(eq(enrollmentTokens.id, id), isNull(enrollmentTokens.revokedAt)));
    if (!r.rowsAffected) throw new AppError('not-found', `no active enrolment token ${id}`);
  }

  /** The token behind a bearer value, if it is current; 401 otherwise. */
  async verify(token: string): Promise<EnrollmentToken & { maxUses: number | null; uses: number }> {
    // `<token>.<ca sha256>` as handed out: the suffix is for the agent (the CA it pins), not part of the secret.
    const row = await this.orm.query.enrollmentTokens.findFirst({ where: eq(enrollmentTokens.tokenHash, hashToken(splitPinnedToken(token).token)) });
    if (!row) throw new AppError('unauthenticated', 'unknown enrolment token');
    if (row.revokedAt) throw new AppError('unauthenticated', 'this enrolment token was revoked');
    if (row.expiresAt <= Date.now()) throw new AppError('unauthenticated', 'this enrolment token has expired');
    return { id: row.id, name: row.name, maxUses: row.maxUses, uses: row.uses };
  }
}
