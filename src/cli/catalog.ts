import { openAsBlob } from 'node:fs';
import { stat, writeFile } from 'node:fs/promises';
import { basename } from 'node:path';
import { parseCatalog } from '../catalog/parse-lines.js';
import { loadPrivateKey, sha256File, signDigest } from '../catalog/signing.js';
import { Progress } from './progress.js';

/** Errors listed at most by `catalog sign`. */
const SHOWN_ERRORS = 20;

/**
 * `patchtree catalog sign FILE --key K`: reads the whole catalog as a node's import
 * would (header, every update line, the count the header gives), and only when it is
 * valid writes FILE.sig over the SHA-256 of exactly the bytes read. Exit code 1 with
 * the errors (line numbers) when it is not.
 */
export async function signCatalog(file: string, keyFile: string): Promise<number> {
  const key = await loadPrivateKey(keyFile);
  const before = await sha256File(file);
  const progress = new Progress();
  let header: { version: string; updates: number } | null = null;
  let updates = 0;
  let invalid = 0;
  const errors: string[] = [];
  for await (const item of parseCatalog(file, 'sign')) {
    if (item.t === 'header') header = item.header;
    else if (item.t === 'update') updates++;
    else {
      if (item.counted) invalid++;
      for (const e of item.errors) if (errors.length < SHOWN_ERRORS) errors.push(`line ${e.line}: ${e.path}: ${e.message}`);
    }
    if (item.line % 1000 === 0) progress.show(`checking ${basename(file)}: line ${item.line}`);
  }
  progress.done();
  if (header && updates + invalid !== header.updates) errors.push(`the header says ${header.updates} updates, the file has ${updates + invalid} update lines`);
  if (!header || errors.length) {
    console.error(`not signed: ${basename(file)} is not a valid catalog${invalid ? ` (${invalid} invalid updates)` : ''}`);
    for (const e of errors) console.error(`  ${e}`);
    return 1;
  }
  // The file must not have changed while it was checked: what is signed is what was read.
  if ((await sha256File(file)) !== before) {
    console.error(`not signed: ${basename(file)} changed while it was checked`);
    return 1;
  }
  const sig = signDigest(before, key);
  await writeFile(`${file}.sig`, `${JSON.stringify(sig, null, 2)}\n`);
  console.log(JSON.stringify({ file, signature: `${file}.sig`, version: header.version, updates, sha256: before, keyId: sig.keyId }, null, 2));
  return 0;
}

/** `patchtree catalog import`: uploads the catalog and its signature (streamed from disk); the node imports it. */
export async function importCatalog(file: string, signature: string, server: string, token: string): Promise<number> {
  const form = new FormData();
  // openAsBlob streams the file from disk as the request is sent.
  form.append('catalog', await openAsBlob(file), basename(file));
  form.append('signature', await openAsBlob(signature), `${basename(file)}.sig`);
  const progress = new Progress();
  const size = (await stat(file)).size;
  const started = Date.now();
  const tick = setInterval(
    () => progress.show(`uploading and importing ${basename(file)} (${(size / 1e6).toFixed(1)} MB): ${Math.round((Date.now() - started) / 1000)} s`, true),
    1000,
  );
  progress.show(`uploading and importing ${basename(file)} (${(size / 1e6).toFixed(1)} MB)`, true);
  try {
    const res = await fetch(new URL('/api/v1/catalog/imports', server), { method: 'POST', headers: { authorization: `Bearer ${token}` }, body: form });
    const body = await res.text();
    progress.done();
    if (!res.ok) {
      console.error(`import refused: HTTP ${res.status}\n${body}`);
      return 1;
    }
    console.log(body);
    return 0;
  } finally {
    clearInterval(tick);
    progress.done();
  }
}
