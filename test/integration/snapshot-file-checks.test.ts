/**
 * What a child checks before it loads a snapshot file: the pieces in order and whole
 * (size and SHA-256), none inflating past its bound, and the file's tables exactly
 * the layout it reads (no view, trigger or index of the sender's, no orphan file);
 * and it loads only into an empty catalog. Real files, real SQLite, real gzip.
 */
import t from 'tap';
import type { ReceivedMessage } from '../../src/replication/protocol.js';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { brotliCompressSync, gunzipSync, gzipSync } from 'node:zlib';
import Database from 'libsql';
import { FileReceiver } from '../../src/replication/file-receiver.js';
import { UPDATES_FILE_TABLES, checkUpdatesFile } from '../../src/catalog/snapshot-file.js';
import { openDatabase } from '../../src/db/index.js';
import { openNative, type NativeDb } from '../../src/db/native.js';
import { BatchApplier } from '../../src/replication/applier.js';
import { replicatedKinds } from '../../src/node/kinds.js';
import { tempDir } from '../helpers.js';

const PIECE = 2 * 1024 * 1024;

/** The pieces a parent sends for `data`. */
function pieces(data: Buffer, over: { sha256?: string; size?: number } = {}) {
  const out = [];
  for (let offset = 0; offset < data.length; offset += PIECE) {
    const last = offset + PIECE >= data.length;
    out.push({
      kind: 'update',
      format: 1,
      offset: String(offset),
      gzip: gzipSync(data.subarray(offset, offset + PIECE)),
      last,
      size: last ? String(over.size ?? data.length) : '0',
      sha256: last ? (over.sha256 ?? createHash('sha256').update(data).digest('hex')) : '',
    });
  }
  return out;
}

t.test('pieces are checked in order, whole and bounded', async (t) => {
  const dir = await tempDir(t);
  const path = join(dir, 'in.db');
  const data = randomBytes(5 * 1024 * 1024 + 123);

  const r = new FileReceiver(path);
  const ps = pieces(data);
  t.equal(ps.length, 3);
  t.equal(r.piece(ps[0]!), null);
  t.equal(r.piece(ps[1]!), null);
  t.same(r.piece(ps[2]!), { kind: 'update', format: 1, path, cursor: 0, more: false });
  t.ok(readFileSync(path).equals(data), 'the file as sent');
  r.discard();
  t.notOk(existsSync(path), 'discarded');

  const fresh = () => new FileReceiver(path);
  t.throws(() => fresh().piece(ps[1]!), /out of order/, 'a piece before the first');
  const skipped = fresh();
  skipped.piece(ps[0]!);
  t.throws(() => skipped.piece(ps[2]!), /at 4194304, expected 2097152/, 'a piece skipped');
  const other = fresh();
  other.piece(ps[0]!);
  t.throws(() => other.piece({ ...ps[1]!, kind: 'policy' }), /out of order/, 'a piece of another kind');
  const tail = fresh();
  tail.piece({ ...ps[0]!, cursor: 7 });
  t.throws(() => tail.piece({ ...ps[1]!, cursor: 8 }), /out of order/, 'a piece of another tail file (another cursor)');

  const again = fresh();
  again.piece(ps[0]!);
  t.throws(() => again.piece(ps[0]!), /started before the last one ended/, 'a file started again before the last ended');
  const mid = fresh();
  mid.piece(ps[0]!);
  const batch = { batch: { changes: [], cursor: '1', snapshot: false, more: false } } as unknown as ReceivedMessage;
  t.throws(() => mid.between(batch), /a message inside a snapshot file/, 'a batch while a file arrives');
  t.doesNotThrow(() => mid.between({ heartbeat: { head_seq: '1', time_ms: '1', paused_until_ms: '0' } } as unknown as ReceivedMessage), 'a heartbeat is fine');
  t.doesNotThrow(() => fresh().between(batch), 'and a batch between files');
  const badHash = pieces(data, { sha256: 'a'.repeat(64) });
  const h = fresh();
  h.piece(badHash[0]!);
  h.piece(badHash[1]!);
  t.throws(() => h.piece(badHash[2]!), /SHA-256 is [0-9a-f]{64}, the parent said a{64}/, 'a file whose hash differs');
  const badSize = pieces(data, { size: data.length + 1 });
  const s = fresh();
  s.piece(badSize[0]!);
  s.piece(badSize[1]!);
  t.throws(() => s.piece(badSize[2]!), /has 5243003 bytes, the parent said 5243004/, 'a file whose size differs');

  // 17 MB of zeros compress to a few KB: refused as it inflates, not written.
  const bomb = { ...pieces(Buffer.alloc(10))[0]!, gzip: gzipSync(Buffer.alloc(17 * 1024 * 1024)) };
  t.throws(() => fresh().piece(bomb), /larger than 16777216 bytes/, 'a piece inflating past 16 MB');
  t.throws(() => fresh().piece({ ...ps[0]!, gzip: Buffer.from('not gzip') }), /incorrect header check/, 'a piece that is not gzip');
  // In Brotli (SubscribeRequest.brotli_pieces): the same checks; a piece in both, in neither, or not Brotli is refused.
  const br = pieces(data).map(({ gzip, ...p }) => ({ ...p, brotli: brotliCompressSync(gunzipSync(gzip)) }));
  const rb = fresh();
  t.equal(rb.piece(br[0]!), null);
  t.equal(rb.piece(br[1]!), null);
  t.same(rb.piece(br[2]!), { kind: 'update', format: 1, path, cursor: 0, more: false }, 'a file in Brotli pieces');
  t.ok(readFileSync(path).equals(data), 'the file as sent');
  rb.discard();
  t.throws(() => fresh().piece({ ...ps[0]!, brotli: br[0]!.brotli }), /both gzip and Brotli/, 'a piece in both');
  t.throws(() => fresh().piece({ ...br[0]!, brotli: Buffer.alloc(0) }), /no content/, 'a piece in neither');
  t.throws(() => fresh().piece({ ...br[0]!, brotli: Buffer.from('not brotli at all') }), /Decompression failed/, 'a piece that is not Brotli');
  const brBomb = { ...br[0]!, brotli: brotliCompressSync(Buffer.alloc(17 * 1024 * 1024)) };
  t.throws(() => fresh().piece(brBomb), /larger than 16777216 bytes/, 'a Brotli piece inflating past 16 MB');
  rmSync(path, { force: true });
});

t.test("a file's tables are checked before anything is read from it", async (t) => {
  const dir = await tempDir(t);
  const make = (name: string, extra: string[] = [], tables = UPDATES_FILE_TABLES) => {
    const file = join(dir, `${name}.db`);
    const db = new Database(file);
    for (const ddl of tables) db.exec(ddl);
    for (const sql of extra) db.exec(sql);
    db.close();
    return file;
  };
  const check = (file: string) => {
    const db = new Database(':memory:');
    try {
      db.prepare('ATTACH ? AS f').run(file);
      return checkUpdatesFile(db, 'f');
    } finally {
      db.close();
    }
  };
  t.equal(check(make('good')), null, 'the layout as built');
  t.match(check(make('view', ['CREATE VIEW v AS SELECT 1'])), /unexpected view v/);
  t.match(check(make('trigger', ['CREATE TRIGGER tr AFTER INSERT ON updates BEGIN SELECT 1; END'])), /unexpected trigger tr/);
  t.match(check(make('index', ['CREATE INDEX i ON updates (kb)'])), /unexpected index i/);
  t.match(check(make('extra', ['CREATE TABLE more (x)'])), /unexpected table more/);
  t.match(check(make('missing', [], UPDATES_FILE_TABLES.slice(0, 3))), /no table update_supersedes/);
  t.match(check(make('altered', [], [UPDATES_FILE_TABLES[0]!.replace('kb TEXT', 'kb BLOB'), ...UPDATES_FILE_TABLES.slice(1)])), /unexpected table updates/);
  t.match(
    check(make('orphan', ["INSERT INTO update_files VALUES ('gone', 0, 'ab', 'a.msu', 'http://x/a.msu', 1, 'neutral', NULL)"])),
    /lists files of gone, an update it does not hold/,
  );
  // What the row path derives from a payload (languages, file positions) must agree with the files the file lists.
  const upd = (id: string, langs: string) =>
    `INSERT INTO updates VALUES ('${id}', 1, 'kb', NULL, 'T', NULL, 'V', NULL, 'P', 'Updates', NULL, NULL, '[]', '[]', '2024-01-01',
      '[]', 0, 'maybe', '[0]', '[3010]', '{}', '{}', NULL, '${langs}', 0, 'h', 'v1', 'v1', 'o')`;
  const file = (id: string, pos: number, lang: string) =>
    `INSERT INTO update_files VALUES ('${id}', ${pos}, 'ab${pos}', 'a.msu', 'http://x/a.msu', 1, '${lang}', NULL)`;
  t.equal(
    check(make('consistent', [upd('u1', 'de-de,neutral'), file('u1', 0, 'neutral'), file('u1', 1, 'de-de'), upd('u2', '')])),
    null,
    'files and languages that agree',
  );
  t.match(check(make('languages', [upd('u1', 'de-de'), file('u1', 0, 'neutral'), file('u1', 1, 'de-de')])), /gives u1 other languages than its files/);
  t.match(check(make('no-files', [upd('u2', 'fr-fr')])), /gives u2 other languages/, 'languages without a file');
  t.match(check(make('gap', [upd('u1', 'de-de,neutral'), file('u1', 0, 'neutral'), file('u1', 2, 'de-de')])), /numbers the files of u1/);
});

t.test('a file is loaded only in a complete resync that found the catalog empty, its parts disjoint, and a refused one changes nothing', async (t) => {
  const dir = await tempDir(t);
  const dbFile = join(dir, 'child.db');
  (await openDatabase(`file:${dbFile}`)).close();
  /** A file (a part) of one update. */
  const part = (name: string, id: string, kb: string, description: string | null = null) => {
    const path = join(dir, name);
    const src = new Database(path);
    for (const ddl of UPDATES_FILE_TABLES) src.exec(ddl);
    src
      .prepare(`INSERT INTO updates VALUES ('${id}', 1, '${kb}', NULL, 'T', ?, 'V', NULL, 'P', 'Updates', NULL, NULL, '[]', '[]', '2024-01-01',
      '[]', 0, 'maybe', '[0]', '[3010]', '{}', '{}', NULL, '', 0, 'h', 'v1', 'v1', 'o')`)
      .run([description]);
    src.close();
    return path;
  };
  const file = part('in.db', 'u1', '123');
  const second = part('in2.db', 'u2', '124'); // the next part: another update
  const large = part('in3.db', 'u3', '125', 'x'.repeat(9 * 1024 * 1024)); // a part of 9 MB
  const native = openNative(dbFile);
  t.teardown(() => native.close());
  const applier = new BatchApplier(native, replicatedKinds(), 'node-0');
  t.teardown(() => applier.close());
  t.throws(() => applier.loadFile('update', 2, file), /format 2; this node reads format 1/);
  t.throws(() => applier.loadFile('policy', 1, file), /kind policy, which this node does not load from a file/);
  t.ok(applier.canLoadFiles(), 'an empty catalog may ask for a file');
  t.throws(() => applier.loadFile('update', 1, file), /outside a complete resync/, 'not outside a resync');
  applier.resyncStart(false);
  t.throws(() => applier.loadFile('update', 1, file), /outside a complete resync/, 'nor in a partial one');
  applier.resyncStart(true);
  t.equal(applier.loadFile('update', 1, file), 1);
  t.equal((native.prepare("SELECT count(*) AS n FROM change_log WHERE kind = 'update'").get() as { n: number }).n, 1, 'logged for its children');
  t.notOk(applier.checkpointer?.running, "a small file's commit is checkpointed as usual, not by the checkpointer's thread");
  t.notOk(applier.canLoadFiles(), 'a catalog with an update asks for rows');
  t.throws(() => applier.loadFile('update', 1, file), /holds none of its updates/, 'a part again: refused');
  t.equal((native.prepare('SELECT count(*) AS n FROM updates').get() as { n: number }).n, 1, 'nothing more written');
  t.equal(applier.loadFile('update', 1, second), 1, 'the next part of the same resync');
  t.equal((native.prepare('SELECT count(*) AS n FROM updates').get() as { n: number }).n, 2);
  // A large file's commit is checkpointed by the checkpointer's thread; the connection's own checkpoint is back on.
  t.equal(applier.loadFile('update', 1, large), 1, 'a large part');
  t.ok(applier.checkpointer?.running, "its checkpoint left to the checkpointer's thread");
  t.match(native.prepare('PRAGMA wal_autocheckpoint').get(), { wal_autocheckpoint: 1000 }, "the connection's own checkpoint back on");
  // A part is committed without a sync of its own (the resync's end syncs them all); the connection's is back after it, and after a refused one.
  t.match(native.prepare('PRAGMA synchronous').get(), { synchronous: 2 }, 'synchronous = FULL again after a part');
  t.throws(() => applier.loadFile('update', 1, large), /holds none of its updates/);
  t.match(native.prepare('PRAGMA synchronous').get(), { synchronous: 2 }, 'and after a refused part');
  t.equal((native.prepare('SELECT count(*) AS n FROM updates').get() as { n: number }).n, 3);
  applier.resyncStart(true);
  t.throws(() => applier.loadFile('update', 1, second), /outside a complete resync/, 'a later resync of a catalog that holds updates takes rows');
  t.equal((native.prepare('PRAGMA database_list').all() as unknown[]).length, 2, 'the file detached (main and temp left)');
});

t.test("a large part is checked on the main thread and copied on the part loader's thread, in order, with the same rows", async (t) => {
  const dir = await tempDir(t);
  /** A file (a part) of one update, `bytes` of description. */
  const part = (name: string, id: string, bytes: number) => {
    const path = join(dir, name);
    const src = new Database(path);
    for (const ddl of UPDATES_FILE_TABLES) src.exec(ddl);
    src
      .prepare(`INSERT INTO updates VALUES ('${id}', 1, 'kb${id}', NULL, 'T', ?, 'V', NULL, 'P', 'Updates', NULL, NULL, '["CVE-2024-0001"]', '[]',
      '2024-01-01', '["123"]', 0, 'maybe', '[0]', '[3010]', '{}', '{}', NULL, 'neutral', 0, 'h', 'v1', 'v1', 'o')`)
      .run(['d'.repeat(bytes)]);
    src.exec(`INSERT INTO update_files VALUES ('${id}', 0, 'ab', 'a.msu', 'http://x/a.msu', 1, 'neutral', NULL)`);
    src.exec(`INSERT INTO update_cves VALUES ('${id}', 'CVE-2024-0001')`);
    src.exec(`INSERT INTO update_supersedes VALUES ('${id}', '123')`);
    src.close();
    return path;
  };
  const large = (id: string) => part(`${id}.db`, id, 9 * 1024 * 1024);
  const child = async (name: string) => {
    const dbFile = join(dir, `${name}.db`);
    (await openDatabase(`file:${dbFile}`)).close();
    const native = openNative(dbFile);
    const applier = new BatchApplier(native, replicatedKinds(), 'node-0');
    t.teardown(async () => {
      await applier.close();
      native.close();
    });
    applier.resyncStart(true);
    return { native, applier };
  };
  const file = (path: string) => ({ kind: 'update', format: 1, path, cursor: 0, more: false });
  const [a, b, c] = [large('u1'), large('u2'), large('u3')];

  // On the thread: three parts handed over at once are loaded one after the other, in order.
  const threaded = await child('threaded');
  t.equal(threaded.applier.loadLater(file(part('small.db', 'u0', 10))), null, 'a small part is left to the main thread (applyFile)');
  const loads = [a, b, c].map((p) => threaded.applier.loadLater(file(p))!);
  t.ok(
    loads.every((l) => l instanceof Promise),
    'large parts go to the thread',
  );
  const small = part('small2.db', 'u9', 10);
  const behind = threaded.applier.loadLater(file(small));
  t.ok(behind instanceof Promise, 'and so does a small part while they are not loaded yet (their order kept)');
  t.same(await Promise.all([...loads, behind]), [1, 1, 1, 1]);
  // The same parts loaded on the main thread: the same rows (the times aside), the change log in the same order.
  const inline = await child('inline');
  for (const p of [a, b, c, small]) inline.applier.loadFile('update', 1, p);
  const rows = (db: NativeDb, q: string) => db.prepare(q).all();
  for (const q of [
    'SELECT id, revision, kb, description, cves, supersedes, languages FROM updates ORDER BY id',
    'SELECT * FROM update_files ORDER BY update_id',
    'SELECT * FROM update_cves ORDER BY update_id',
    'SELECT * FROM update_supersedes ORDER BY update_id',
    'SELECT kind, key, op, languages FROM change_log ORDER BY seq',
  ])
    t.same(rows(threaded.native, q), rows(inline.native, q), q);
  t.same(
    rows(threaded.native, 'SELECT key FROM change_log ORDER BY seq'),
    ['u1', 'u2', 'u3', 'u9'].map((key) => ({ key })),
    'in the order handed over',
  );

  // Refused on the thread (the catalog holds the update): the promise rejects, nothing is written, the next part still loads.
  // Refused on the thread (the catalog holds the update): the promise rejects, nothing is written, and a part handed
  // over behind it fails unloaded (the stream ends; the child asks for rows), until the next resync.
  const again = threaded.applier.loadLater(file(a))!;
  const after = threaded.applier.loadLater(file(large('u4')))!;
  await t.rejects(again, /holds none of its updates/);
  await t.rejects(after, /a part before this one failed: .*holds none of its updates/);
  t.equal(rows(threaded.native, 'SELECT id FROM updates').length, 4, 'neither written');
  // The next resync loads parts again: a child whose first part failed on the thread (its file gone), the one behind unloaded.
  const fresh = await child('fresh');
  const gone = large('u6');
  const first = fresh.applier.loadLater(file(gone))!;
  rmSync(gone);
  const second = fresh.applier.loadLater(file(large('u7')))!;
  await t.rejects(first, /no such table/);
  await t.rejects(second, /a part before this one failed/);
  t.equal(rows(fresh.native, 'SELECT id FROM updates').length, 0, 'nothing written');
  fresh.applier.resyncStart(true);
  t.equal(await fresh.applier.loadLater(file(large('u8'))), 1, 'the next resync loads parts again');
  // Refused by the check, on the main thread: it throws before the thread sees it.
  const bad = large('u5');
  const db = new Database(bad);
  db.exec('CREATE VIEW v AS SELECT 1');
  db.close();
  t.throws(() => threaded.applier.loadLater(file(bad)), /unexpected view v/);
  t.equal((threaded.native.prepare('PRAGMA database_list').all() as unknown[]).length, 2, 'the file detached');
});

t.test("a part's commit is synced on its own only while the node has children (who may read what it logged)", async (t) => {
  const dir = await tempDir(t);
  const dbFile = join(dir, 'child.db');
  (await openDatabase(`file:${dbFile}`)).close();
  const native = openNative(dbFile);
  // The updates kind's own load, and what the connection's synchronous was while it ran.
  const kinds = replicatedKinds();
  const file = kinds.get('update')!.file!;
  const seen: number[] = [];
  const load = file.load;
  (file as { load: typeof load }).load = (db, from, now) => {
    seen.push((db.prepare('PRAGMA synchronous').get() as { synchronous: number }).synchronous);
    return load(db, from, now);
  };
  t.teardown(() => {
    (file as { load: typeof load }).load = load;
  });
  const applier = new BatchApplier(native, kinds, 'node-0');
  t.teardown(async () => {
    await applier.close();
    native.close();
  });
  const part = (id: string) => {
    const path = join(dir, `${id}.db`);
    const src = new Database(path);
    for (const ddl of UPDATES_FILE_TABLES) src.exec(ddl);
    src.exec(`INSERT INTO updates VALUES ('${id}', 1, 'kb', NULL, 'T', NULL, 'V', NULL, 'P', 'Updates', NULL, NULL, '[]', '[]', '2024-01-01',
      '[]', 0, 'maybe', '[0]', '[3010]', '{}', '{}', NULL, '', 0, 'h', 'v1', 'v1', 'o')`);
    src.close();
    return path;
  };
  applier.resyncStart(true);
  applier.loadFile('update', 1, part('u1'));
  native
    .prepare("INSERT INTO children (id, name, credential_hash, languages, acked_seq, force_resync, created_at) VALUES ('c1', 'c1', 'h', 'en', 0, 1, 0)")
    .run();
  applier.loadFile('update', 1, part('u2'));
  t.same(seen, [1, 2], 'NORMAL without children, FULL with one');
  t.match(native.prepare('PRAGMA synchronous').get(), { synchronous: 2 }, 'FULL again after');
});
