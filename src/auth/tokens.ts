import { createHash, randomBytes, randomUUID } from 'node:crypto';
import { chmod, mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { and, desc, eq, isNull } from 'drizzle-orm';
import type { Orm } from '../db/index.js';
import { AppError } from '../lib/errors.js';
import { apiTokens } from './schema.js';

export const ROLES = ['viewer', 'operator', 'admin'] as const;
export type Role = (typeof ROLES)[number];

/** viewer < operator < admin: a role may do everything the roles below it may. */
export const roleAtLeast = (have: Role, need: Role): boolean => ROLES.indexOf(have) >= ROLES.indexOf(need);

export interface Principal {
  tokenId: string;
  name: string;
  role: Role;
}

export const BOOTSTRAP_TOKEN_ID = 'bootstrap-admin';

/** The token of an `Authorization: Bearer <token>` header, or null. */
export function bearerToken(header: string | undefined): string | null {
  return /^Bearer\s+(\S+)\s*$/i.exec(header ?? '')?.[1] ?? null;
}

export const hashToken = (token: string): string => createHash('sha256').update(token).digest('hex');
export const newToken = (): string => `pt_${randomBytes(32).toString('base64url')}`;

/**
 * API tokens: stored as SHA-256 digests (tokens are 256-bit random, so a fast hash
 * is enough; no password stretching is needed). Lookups are cached by digest and
 * the cache is dropped on every change, so a revoked token stops working at once.
 */
export class TokenService {
  #cache = new Map<string, Principal | null>();

  constructor(private readonly orm: Orm) {}

  async authenticate(token: string): Promise<Principal | null> {
    const digest = hashToken(token);
    const cached = this.#cache.get(digest);
    if (cached !== undefined) return cached;
    const row = await this.orm.query.apiTokens.findFirst({ where: and(eq(apiTokens.tokenHash, digest), isNull(apiTokens.revokedAt)) });
    const principal = row ? { tokenId: row.id, name: row.name, role: row.role } : null;
    if (this.#cache.size > 10_000) this.#cache.clear();
    this.#cache.set(digest, principal);
    return principal;
  }

  async create(name: string, role: Role, createdBy: string | null): Promise<{ id: string; name: string; role: Role; token: string; createdAt: string }> {
    const token = newToken();
    const id = randomUUID();
    const now = Date.now();
    await this.orm.insert(apiTokens).values({ id, name, role, tokenHash: hashToken(token), createdAt: now, createdBy });
    this.#cache.clear();
    return { id, name, role, token, createdAt: new Date(now).toISOString() };
  }

  async list() {
    const rows = await this.orm.select().from(apiTokens).orderBy(desc(apiTokens.createdAt));
    return rows.map((r) => ({
      id: r.id,
      name: r.name,
      role: r.role,
      createdAt: new Date(r.createdAt).toISOString(),
      createdBy: r.createdBy,
      revokedAt: r.revokedAt ? new Date(r.revokedAt).toISOString() : null,
    }));
  }

  async revoke(id: string): Promise<void> {
    const row = await this.orm.query.apiTokens.findFirst({ where: eq(apiTokens.id, id) });
    if (!row) throw new AppError('not-found', `no token ${id}`);
    if (id === BOOTSTRAP_TOKEN_ID)
      throw new AppError('conflict', 'the bootstrap admin token is managed by --admin-token / <data>/admin-token; replace it there');
    if (!row.revokedAt) await this.orm.update(apiTokens).set({ revokedAt: Date.now() }).where(eq(apiTokens.id, id));
    this.#cache.clear();
  }

  /**
   * Ensures the bootstrap admin token. With `--admin-token` it becomes (or stays)
   * that token. Without it, the first start generates one and writes it to
   * `<data>/admin-token` (mode 0600); later starts keep the stored one.
   * Returns the file path when a token was generated.
   */
  async bootstrap(dataDir: string, configured: string | undefined): Promise<{ generated: string | null }> {
    const existing = await this.orm.query.apiTokens.findFirst({ where: eq(apiTokens.id, BOOTSTRAP_TOKEN_ID) });
    if (configured) {
      const digest = hashToken(configured);
      if (!existing) {
        await this.orm
          .insert(apiTokens)
          .values({ id: BOOTSTRAP_TOKEN_ID, name: 'bootstrap admin', role: 'admin', tokenHash: digest, createdAt: Date.now(), createdBy: null });
      } else if (existing.tokenHash !== digest) {
        await this.orm.update(apiTokens).set({ tokenHash: digest, revokedAt: null }).where(eq(apiTokens.id, BOOTSTRAP_TOKEN_ID));
      }
      this.#cache.clear();
      return { generated: null };
    }
    if (existing) return { generated: null };
    const token = newToken();
    await mkdir(dataDir, { recursive: true });
    const file = join(dataDir, 'admin-token');
    await writeFile(file, `${token}\n`, { mode: 0o600 });
    await chmod(file, 0o600);
    await this.orm
      .insert(apiTokens)
      .values({ id: BOOTSTRAP_TOKEN_ID, name: 'bootstrap admin', role: 'admin', tokenHash: hashToken(token), createdAt: Date.now(), createdBy: null });
    this.#cache.clear();
    return { generated: file };
  }
}
