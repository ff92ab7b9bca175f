import { createServer, connect, type Socket } from 'node:net';
import type { AddressInfo } from 'node:net';

/**
 * A real TCP proxy on 127.0.0.1:0 in front of a node, for faults on the agent's
 * link: cut the next file download after some bytes, slow responses down, or answer
 * the next event batches with a 503 as a failing node or a proxy in the way would.
 */
export async function startProxy(t: { teardown(fn: () => unknown): void }, target: { host: string; port: number }) {
  const sockets = new Set<Socket>();
  const state = { cutFileAfter: null as number | null, bytesPerSecond: 0, cuts: 0, failEvents: 0 };
  const server = createServer((client) => {
    const upstream = connect(target.port, target.host);
    sockets.add(client).add(upstream);
    let fileResponse = false;
    let sent = 0;
    let failed = false;
    client.on('data', (d) => {
      if (failed) return;
      if (state.failEvents > 0 && /^POST \/agent\/v1\/events /.test(d.toString('latin1'))) {
        state.failEvents--;
        failed = true;
        const body = JSON.stringify({
          type: 'urn:patchtree:problem:unavailable',
          title: 'Temporarily unavailable',
          status: 503,
          detail: 'the test proxy fails this batch',
        });
        client.end(
          `HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/problem+json\r\ncontent-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`,
        );
        return;
      }
      if (state.cutFileAfter !== null && /^GET \/agent\/v1\/files\//m.test(d.toString('latin1'))) {
        fileResponse = true;
        sent = 0;
      }
      upstream.write(d);
    });
    upstream.on('data', (d: Buffer) => {
      if (fileResponse && state.cutFileAfter !== null) {
        const room = state.cutFileAfter - sent;
        sent += d.length;
        if (sent >= state.cutFileAfter) {
          client.write(d.subarray(0, Math.max(0, room)), () => client.destroy());
          upstream.destroy();
          state.cutFileAfter = null;
          state.cuts++;
          return;
        }
      }
      if (state.bytesPerSecond > 0) {
        upstream.pause();
        client.write(d, () => setTimeout(() => upstream.resume(), (1000 * d.length) / state.bytesPerSecond));
      } else client.write(d);
    });
    const end = () => {
      client.destroy();
      upstream.destroy();
      sockets.delete(client);
      sockets.delete(upstream);
    };
    client.on('close', end).on('error', end);
    upstream.on('close', end).on('error', end);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  t.teardown(() => {
    for (const s of sockets) s.destroy();
    server.close();
  });
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, state };
}
