import { randomUUID } from 'node:crypto';
import { existsSync } from 'node:fs';
import { chmod, cp, mkdir, mkdtemp, readFile, readdir, rename, rm, stat, writeFile } from 'node:fs/promises';
import { basename, dirname, join, relative, resolve } from 'node:path';
import * as tar from 'tar';
import Database from 'libsql';
import { BUSY_TIMEOUT_MS } from '../db/native.js';
import { AppError } from '../lib/errors.js';
import { sha256File } from '../catalog/signing.js';

/**
 * Backup and restore of a node's data folder (`patchtree backup`, `patchtree restore`;
 * docs/operations.md "Backup and restore"). A backup is a gzip'd tar: the database as
 * SQLite's `VACUUM INTO` copies it (one read transaction: consistent while the node
 * runs and writes), every other file of the data folder that is the node's (keys,
 * tokens, TLS material), the content store with `withContent`, and a manifest with
 * each file's SHA-256. A restore checks every file against the manifest before the
 * folder is put in place, and gives the node a new change-log epoch: its children
 * then resync completely from what it holds, so that none of them can tail a log that
 * is not the one it had (a backup is older than the node it replaces).
 */

const MANIFEST = 'patchtree-backup.json';
const DB = 'patchtree.db';
const FORMAT = 1;
/** Never in a backup: the live database files, scratch folders, a snapshot file cut short. */
const SKIPPED = new Set([DB, `${DB}-wal`, `${DB}-shm`, `${DB}-journal`, `${DB}.snapshot`, `${DB}.snapshot.1`, 'snapshots', 'tmp', 'content']);

interface Manifest {
  format: number;
  createdAt: string;
  node: { id: string; epoch: string };
  content: boolean;
  files: { path: string; size: number; sha256: string }[];
}

/** Every file under `dir`, as paths relative to `root`. */
async function filesUnder(root: string, dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const ent of await readdir(dir, { withFileTypes: true })) {
    const p = join(dir, ent.name);
    if (ent.isDirectory()) out.push(...(await filesUnder(root, p)));
    else if (ent.isFile()) out.push(relative(root, p));
  }
  return out;
}

/** Where the node keeps update files: its storage setting, else `<data>/content`. */
function contentPath(db: InstanceType<typeof Database>, data: string): string {
  const row = db.prepare("SELECT value FROM settings WHERE key = 'storage'").get() as { value: string } | undefined;
  const path = row ? (JSON.parse(row.value) as { path?: string }).path : undefined;
  return path ? resolve(path) : join(data, 'content');
}

export async function backup(o: { data: string; out: string; withContent?: boolean }): Promise<{ file: string; files: number; bytes: number; node: string }> {
  const data = resolve(o.data);
  const out = resolve(o.out);
  const dbFile = join(data, DB);
  if (!existsSync(dbFile)) throw new AppError('not-found', `no node database at ${dbFile}: --data names a node's data folder`);
  if (existsSync(out)) throw new AppError('conflict', `${out} exists: name a new file`);
  const stage = await mkdtemp(join(dirname(out), `.${basename(out)}.`));
  try {
    // The database as of one read transaction, while the node goes on writing.
    const db = new Database(dbFile, { timeout: BUSY_TIMEOUT_MS });
    let node: Manifest['node'];
    let store: string;
    try {
      const id = db.prepare('SELECT node_id, epoch FROM node_identity WHERE id = 1').get() as { node_id: string; epoch: string } | undefined;
      if (!id) throw new AppError('conflict', `${dbFile} has no node identity yet: start the node once`);
      node = { id: id.node_id, epoch: id.epoch };
      store = contentPath(db, data);
      db.prepare('VACUUM INTO ?').run(join(stage, DB));
    } finally {
      db.close();
    }
    const paths = [DB];
    for (const ent of await readdir(data, { withFileTypes: true })) {
      if (SKIPPED.has(ent.name)) continue;
      if (ent.isDirectory()) {
        await cp(join(data, ent.name), join(stage, ent.name), { recursive: true });
        paths.push(...(await filesUnder(stage, join(stage, ent.name))));
      } else if (ent.isFile()) {
        await cp(join(data, ent.name), join(stage, ent.name));
        paths.push(ent.name);
      }
    }
    if (o.withContent && existsSync(store)) {
      // Verified files only (objects/): a partial download is fetched again.
      const objects = join(store, 'objects');
      if (existsSync(objects)) {
        await cp(objects, join(stage, 'content', 'objects'), { recursive: true });
        paths.push(...(await filesUnder(stage, join(stage, 'content'))));
      }
    }
    const files = [];
    let bytes = 0;
    for (const p of paths) {
      const size = (await stat(join(stage, p))).size;
      bytes += size;
      files.push({ path: p, size, sha256: await sha256File(join(stage, p)) });
    }
    const manifest: Manifest = { format: FORMAT, createdAt: new Date().toISOString(), node, content: Boolean(o.withContent), files };
    await writeFile(join(stage, MANIFEST), `${JSON.stringify(manifest, null, 2)}\n`, { mode: 0o600 });
    const part = `${out}.part`;
    await tar.c({ gzip: true, file: part, cwd: stage, portable: true }, [MANIFEST, ...paths]);
    await chmod(part, 0o600);
    await rename(part, out);
    return { file: out, files: files.length, bytes, node: node.id };
  } finally {
    await rm(stage, { recursive: true, force: true });
  }
}

export async function restore(o: { from: string; data: string }): Promise<{ data: string; node: string; epoch: string; content: boolean; files: number }> {
  const from = resolve(o.from);
  const data = resolve(o.data);
  if (!existsSync(from)) throw new AppError('not-found', `no backup at ${from}`);
  if (existsSync(data) && (await readdir(data)).length)
    throw new AppError('conflict', `${data} is not empty: restore into a new folder (move the old one away first)`);
  await mkdir(dirname(data), { recursive: true });
  const stage = await mkdtemp(join(dirname(data), `.${basename(data)}.restore.`));
  try {
    await tar.x({ file: from, cwd: stage, strict: true, preservePaths: false });
    let manifest: Manifest;
    try {
      manifest = JSON.parse(await readFile(join(stage, MANIFEST), 'utf8')) as Manifest;
    } catch {
      throw new AppError('bad-request', `${from} is not a patchtree backup (no readable ${MANIFEST})`);
    }
    if (manifest.format !== FORMAT) throw new AppError('bad-request', `${from} is a backup in format ${manifest.format}; this version reads format ${FORMAT}`);
    // Every file as the backup made it, and nothing else.
    const listed = new Set(manifest.files.map((f) => f.path));
    for (const f of manifest.files) {
      const p = join(stage, f.path);
      if (!existsSync(p) || (await sha256File(p)) !== f.sha256)
        throw new AppError('bad-request', `${from}: ${f.path} is missing or damaged (its SHA-256 differs from the manifest's)`);
    }
    for (const p of await filesUnder(stage, stage))
      if (p !== MANIFEST && !listed.has(p)) throw new AppError('bad-request', `${from}: ${p} is not in its manifest`);
    await rm(join(stage, MANIFEST));
    // A new epoch: the children resync completely from what this node holds now. Without
    // the content store, the files are fetched again.
    const epoch = randomUUID();
    const db = new Database(join(stage, DB));
    try {
      db.prepare('UPDATE node_identity SET epoch = ? WHERE id = 1').run(epoch);
      if (!manifest.content) {
        db.prepare(
          `UPDATE content_files SET state = 'pending', bytes_done = 0, attempts = 0, next_attempt_at = 0, verified_at = NULL,
           last_error = 'restored from a backup without the content store', updated_at = ? WHERE state IN ('verified', 'downloading')`,
        ).run(Date.now());
      } else {
        // The store comes back inside the data folder.
        db.prepare("DELETE FROM settings WHERE key = 'storage'").run();
      }
    } finally {
      db.close();
    }
    // Folders the node's own (0700), the database 0600; the files keep the modes they had.
    await chmod(stage, 0o700);
    for (const ent of await readdir(stage, { withFileTypes: true, recursive: true })) if (ent.isDirectory()) await chmod(join(ent.parentPath, ent.name), 0o700);
    await chmod(join(stage, DB), 0o600);
    if (existsSync(data)) await rm(data, { recursive: true });
    await rename(stage, data);
    return { data, node: manifest.node.id, epoch, content: manifest.content, files: manifest.files.length };
  } finally {
    await rm(stage, { recursive: true, force: true });
  }
}
