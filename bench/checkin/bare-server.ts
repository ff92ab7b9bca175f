/**
 * The limit for this stack (bench/checkin): a bare node:http server that reads a
 * request body, parses the same JSON as POST /agent/v1/events, and does one indexed
 * SQLite write, on the same driver and pragmas as the node (libsql binding, WAL,
 * synchronous=FULL), one transaction per request; with "normal", synchronous=NORMAL
 * (no fsync per commit). Prints "listening <port>".
 *
 *   node dist/bench/checkin/bare-server.js <database file> [full|normal]
 */
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { openNative, prepare } from '../../src/db/native.js';

const db = openNative(process.argv[2] ?? 'bare.db');
db.exec('PRAGMA journal_mode = WAL'); // as the node's database
// "normal": the same without an fsync per commit, to show the CPU limit alone.
if (process.argv[3] === 'normal') db.exec('PRAGMA synchronous = NORMAL');
db.exec('CREATE TABLE IF NOT EXISTS events (agent TEXT NOT NULL, event_id TEXT NOT NULL, body TEXT NOT NULL, PRIMARY KEY (agent, event_id))');
const insert = prepare(db, 'INSERT OR IGNORE INTO events (agent, event_id, body) VALUES (?, ?, ?)');

const server = createServer((req, res) => {
  const chunks: Buffer[] = [];
  req.on('data', (c: Buffer) => chunks.push(c));
  req.on('end', () => {
    try {
      const body = Buffer.concat(chunks).toString('utf8');
      const parsed = JSON.parse(body) as { events: { id: string }[] };
      insert.run(req.headers.authorization ?? '', parsed.events[0]!.id, body);
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end('{"accepted":1}');
    } catch (err) {
      res.writeHead(400, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ error: String(err) }));
    }
  });
});
server.keepAliveTimeout = 5_000;
server.listen(0, '127.0.0.1', () => console.log(`listening ${(server.address() as AddressInfo).port}`));
