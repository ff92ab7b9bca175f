import { AppError, toProblem } from '../lib/errors.js';

/**
 * What plain HTTP serves without --insecure-http: what monitoring and tools read
 * without a secret (`/healthz`, `/metrics`, `/openapi.json`, `/docs`). The console
 * redirects to the same page on HTTPS; the API and the agent API answer 403 before
 * a header is read, so no token or agent secret is ever accepted in clear.
 */

const OPEN = new Set(['/healthz', '/metrics', '/openapi.json', '/docs']);

export function plainHttpOnly<E>(fetch: (req: Request, env: E) => Response | Promise<Response>, httpsPort: () => number) {
  return (req: Request, env: E): Response | Promise<Response> => {
    const url = new URL(req.url);
    if (OPEN.has(url.pathname)) return fetch(req, env);
    const target = `https://${url.hostname.includes(':') ? `[${url.hostname}]` : url.hostname}:${httpsPort()}${url.pathname}${url.search}`;
    if (url.pathname.startsWith('/api/') || url.pathname.startsWith('/agent/')) {
      const err = new AppError(
        'https-required',
        `plain HTTP carries no tokens or agent secrets: use ${target} (or start the node with --insecure-http for a lab)`,
      );
      return new Response(JSON.stringify(toProblem(err, url.pathname)), {
        status: 403,
        headers: { 'content-type': 'application/problem+json', connection: 'close' },
      });
    }
    return new Response(null, { status: 308, headers: { location: target } });
  };
}
