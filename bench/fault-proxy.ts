import { connect, createServer, type Server, type Socket } from 'node:net';
import type { AddressInfo } from 'node:net';

/**
 * A TCP proxy in front of a node's gRPC port, for faults on a parent-child link
 * (bench/soak.ts): `cut()` ends every connection through it at once (mid-stream; the
 * next connection goes through), `stall(ms)` holds every byte in both directions for
 * that long (the connections stay open), `throttle(bytesPerSecond, ms)` lets bytes
 * through at a trickle for that long. Backpressure is kept: a side is paused while
 * the other has not taken what it was given.
 */
export class FaultProxy {
  readonly #sockets = new Set<Socket>();
  #stallUntil = 0;
  #rate = 0;
  #rateUntil = 0;
  cuts = 0;

  private constructor(
    readonly server: Server,
    readonly port: number,
  ) {}

  static async start(target: () => number, port = 0): Promise<FaultProxy> {
    const server = createServer();
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, '127.0.0.1', () => resolve());
    });
    const proxy = new FaultProxy(server, (server.address() as AddressInfo).port);
    server.on('connection', (client) => proxy.#join(client, connect(target(), '127.0.0.1')));
    return proxy;
  }

  #join(a: Socket, b: Socket): void {
    for (const s of [a, b]) {
      this.#sockets.add(s);
      s.setNoDelay(true);
      s.on('error', () => undefined);
      s.on('close', () => {
        this.#sockets.delete(s);
        a.destroy();
        b.destroy();
      });
    }
    this.#pipe(a, b);
    this.#pipe(b, a);
  }

  #pipe(from: Socket, to: Socket): void {
    from.on('data', (d: Buffer) => {
      const now = Date.now();
      const wait = Math.max(0, this.#stallUntil - now) + (now < this.#rateUntil ? (1000 * d.length) / this.#rate : 0);
      const send = () => {
        if (to.destroyed) return;
        if (!to.write(d)) {
          from.pause();
          to.once('drain', () => from.resume());
        }
      };
      if (wait === 0) return send();
      from.pause();
      setTimeout(() => {
        send();
        if (!to.writableNeedDrain) from.resume();
      }, wait);
    });
  }

  /** Ends every connection through the proxy now. */
  cut(): void {
    this.cuts++;
    for (const s of this.#sockets) s.destroy();
  }

  stall(ms: number): void {
    this.#stallUntil = Date.now() + ms;
  }

  throttle(bytesPerSecond: number, ms: number): void {
    this.#rate = bytesPerSecond;
    this.#rateUntil = Date.now() + ms;
  }

  close(): void {
    for (const s of this.#sockets) s.destroy();
    this.server.close();
  }
}
