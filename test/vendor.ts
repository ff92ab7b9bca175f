import { createServer } from 'node:http';
import { createHash, randomBytes } from 'node:crypto';
import type { AddressInfo } from 'node:net';

export type Behaviour =
  | { kind: 'normal' }
  /** The first response sends `bytes` then the connection is cut; later ones are normal. */
  | { kind: 'cut-once'; bytes: number; thenIgnoreRange?: boolean }
  | { kind: 'ignore-range' }
  | { kind: 'status'; status: number }
  /** Headers, then nothing: the client's idle timeout must fire. */
  | { kind: 'hang' }
  /** Serves other bytes than the catalog's hash says. */
  | { kind: 'corrupt' };

export interface VendorRequest {
  path: string;
  range: string | null;
  status: number;
  bytesSent: number;
  at: number;
}

export interface VendorFile {
  path: string;
  data: Buffer;
  sha256: string;
  behaviour: Behaviour;
}

/** A real HTTP server on 127.0.0.1:0 standing in for the vendor's download site. */
export async function startVendor(t: { teardown(fn: () => unknown): void }) {
  const files = new Map<string, VendorFile>();
  const requests: VendorRequest[] = [];
  const server = createServer((req, res) => {
    const f = files.get(req.url ?? '');
    const log: VendorRequest = { path: req.url ?? '', range: req.headers.range ?? null, status: 0, bytesSent: 0, at: Date.now() };
    requests.push(log);
    const send = (status: number, body: Buffer, headers: Record<string, string> = {}, cutAfter?: number) => {
      log.status = status;
      res.writeHead(status, { 'content-length': String(body.length), ...headers });
      const chunk = cutAfter !== undefined ? body.subarray(0, cutAfter) : body;
      log.bytesSent = chunk.length;
      // end(), not destroy(): flush what was written, then close mid-response.
      if (cutAfter !== undefined) res.write(chunk, () => res.socket?.end());
      else res.end(chunk);
    };
    if (!f) return send(404, Buffer.from('not found'));
    const b = f.behaviour;
    if (b.kind === 'status') return send(b.status, Buffer.from('error'));
    if (b.kind === 'hang') {
      log.status = 200;
      res.writeHead(200, { 'content-length': String(f.data.length) });
      res.flushHeaders();
      return;
    }
    const data = b.kind === 'corrupt' ? Buffer.from(f.data.map((x) => x ^ 0x5a)) : f.data;
    const previous = requests.filter((r) => r.path === f.path).length - 1;
    if (b.kind === 'cut-once' && previous === 0) return send(200, data, {}, b.bytes);
    const ignore = b.kind === 'ignore-range' || (b.kind === 'cut-once' && b.thenIgnoreRange);
    const m = /^bytes=(\d+)-$/.exec(req.headers.range ?? '');
    if (m && !ignore) {
      const start = Number(m[1]);
      return send(206, data.subarray(start), { 'content-range': `bytes ${start}-${data.length - 1}/${data.length}` });
    }
    send(200, data);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.teardown(
    () =>
      new Promise<void>((r) => {
        server.closeAllConnections();
        server.close(() => r());
      }),
  );
  const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return {
    base,
    requests,
    add(path: string, size: number, behaviour: Behaviour = { kind: 'normal' }): VendorFile {
      const data = randomBytes(size);
      const f = { path, data, sha256: createHash('sha256').update(data).digest('hex'), behaviour };
      files.set(path, f);
      return f;
    },
    set(path: string, behaviour: Behaviour) {
      files.get(path)!.behaviour = behaviour;
    },
    url: (path: string) => `${base}${path}`,
  };
}

export type Vendor = Awaited<ReturnType<typeof startVendor>>;

/** Polls until `fn` returns a truthy value (the node works in the background). */
export async function waitFor<T>(fn: () => Promise<T>, what: string, timeoutMs = 20_000): Promise<NonNullable<T>> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v) return v as NonNullable<T>;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}
