import type { MiddlewareHandler } from 'hono';
import { AppError } from '../lib/errors.js';
import { bearerToken, roleAtLeast, type Principal, type Role, type TokenService } from '../auth/tokens.js';

export interface AppEnv {
  Variables: { principal: Principal };
}

/** Every /api/v1 request carries `Authorization: Bearer <token>`; a missing or unknown token is 401. */
export function bearerAuth(tokens: TokenService): MiddlewareHandler<AppEnv> {
  return async (c, next) => {
    const token = bearerToken(c.req.header('authorization'));
    if (!token) {
      c.header('WWW-Authenticate', 'Bearer realm="patchtree"');
      throw new AppError('unauthenticated', 'send Authorization: Bearer <token>');
    }
    const principal = await tokens.authenticate(token);
    if (!principal) {
      c.header('WWW-Authenticate', 'Bearer realm="patchtree", error="invalid_token"');
      throw new AppError('unauthenticated', 'the token is unknown or revoked');
    }
    c.set('principal', principal);
    await next();
  };
}

/**
 * 403 unless the caller's role is at least `need` (viewer < operator < admin). The
 * middleware carries its role, so the route table can say each route's role (the
 * OpenAPI document's `x-patchtree-role`, app.ts).
 */
export function requireRole(need: Role): MiddlewareHandler<AppEnv> & { role: Role } {
  const mw: MiddlewareHandler<AppEnv> = async (c, next) => {
    const p = c.get('principal');
    if (!p || !roleAtLeast(p.role, need)) throw new AppError('forbidden', `this needs the ${need} role; the token has ${p?.role ?? 'none'}`);
    await next();
  };
  return Object.assign(mw, { role: need });
}
