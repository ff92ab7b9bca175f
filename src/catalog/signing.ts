import { createHash, createPrivateKey, createPublicKey, generateKeyPairSync, sign, verify, type KeyObject } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { z } from 'zod';
import { AppError } from '../lib/errors.js';

/**
 * Detached catalog signatures. Ed25519 needs its whole message in memory, and a
 * catalog can be hundreds of megabytes, so the signed message is a fixed prefix
 * and the SHA-256 of the catalog's exact bytes: hash-then-sign, as Ed25519ph does,
 * which lets the importer verify while it streams the upload to disk. Changing any
 * byte of the catalog changes the hash and the signature fails.
 */
export const SIGNATURE_FORMAT = 'patchtree-signature';
const MESSAGE_PREFIX = 'patchtree-catalog-signature-v1\n';

export const signatureSchema = z.strictObject({
  format: z.literal(SIGNATURE_FORMAT),
  algorithm: z.literal('ed25519-sha256'),
  keyId: z.string().regex(/^[0-9a-f]{16}$/),
  sha256: z.string().regex(/^[0-9a-f]{64}$/),
  signature: z.string().min(1).max(200),
});
export type CatalogSignature = z.infer<typeof signatureSchema>;

const message = (sha256: string): Buffer => Buffer.from(`${MESSAGE_PREFIX}${sha256}\n`);

/** Key id: the first 16 hex digits of the SHA-256 of the public key's SPKI DER. */
export function keyIdOf(publicKey: KeyObject): string {
  return createHash('sha256')
    .update(publicKey.export({ type: 'spki', format: 'der' }))
    .digest('hex')
    .slice(0, 16);
}

/** Writes `publisher.key` (PKCS#8 PEM, mode 0600) and `publisher.pub` (SPKI PEM). */
export async function generateKeys(dir: string): Promise<{ keyFile: string; pubFile: string; keyId: string }> {
  await mkdir(dir, { recursive: true });
  const { privateKey, publicKey } = generateKeyPairSync('ed25519');
  const keyFile = join(dir, 'publisher.key');
  const pubFile = join(dir, 'publisher.pub');
  await writeFile(keyFile, privateKey.export({ type: 'pkcs8', format: 'pem' }), { mode: 0o600, flag: 'wx' });
  await writeFile(pubFile, publicKey.export({ type: 'spki', format: 'pem' }), { flag: 'wx' });
  return { keyFile, pubFile, keyId: keyIdOf(publicKey) };
}

export async function loadPrivateKey(file: string): Promise<KeyObject> {
  const key = createPrivateKey(await readFile(file));
  if (key.asymmetricKeyType !== 'ed25519') throw new Error(`${file}: not an Ed25519 private key`);
  return key;
}

export async function loadPublicKey(file: string): Promise<KeyObject> {
  const key = createPublicKey(await readFile(file));
  if (key.asymmetricKeyType !== 'ed25519') throw new Error(`${file}: not an Ed25519 public key`);
  return key;
}

export async function sha256File(file: string): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(file)) hash.update(chunk as Buffer);
  return hash.digest('hex');
}

export function signDigest(sha256: string, privateKey: KeyObject): CatalogSignature {
  const publicKey = createPublicKey(privateKey);
  return {
    format: SIGNATURE_FORMAT,
    algorithm: 'ed25519-sha256',
    keyId: keyIdOf(publicKey),
    sha256,
    signature: sign(null, message(sha256), privateKey).toString('base64'),
  };
}

/** Signs a catalog file and writes `<file>.sig`. */
export async function signFile(file: string, privateKey: KeyObject): Promise<CatalogSignature> {
  const sig = signDigest(await sha256File(file), privateKey);
  await writeFile(`${file}.sig`, `${JSON.stringify(sig, null, 2)}\n`);
  return sig;
}

export function parseSignature(bytes: Buffer | string): CatalogSignature {
  let raw: unknown;
  try {
    raw = JSON.parse(bytes.toString());
  } catch {
    throw new AppError('signature-invalid', 'the signature file is not JSON');
  }
  const parsed = signatureSchema.safeParse(raw);
  if (!parsed.success) throw new AppError('signature-invalid', `the signature file is malformed: ${parsed.error.issues[0]?.message}`);
  return parsed.data;
}

/**
 * Checks a signature against the digest of the bytes actually received and the
 * trusted keys. Returns the key id that verified; throws an AppError otherwise.
 */
export function verifySignature(sig: CatalogSignature, actualSha256: string, trusted: ReadonlyMap<string, KeyObject>): string {
  const key = trusted.get(sig.keyId);
  if (!key) throw new AppError('untrusted-publisher', `key ${sig.keyId} is not among this node's trusted publisher keys`);
  if (sig.sha256 !== actualSha256) throw new AppError('signature-invalid', 'the catalog bytes do not match the signature (the file was altered or truncated)');
  if (!verify(null, message(sig.sha256), key, Buffer.from(sig.signature, 'base64')))
    throw new AppError('signature-invalid', 'the signature does not verify with the publisher key');
  return sig.keyId;
}

/** Loads trusted public keys into a map by key id. */
export async function loadTrustedKeys(files: readonly string[]): Promise<Map<string, KeyObject>> {
  const map = new Map<string, KeyObject>();
  for (const f of files) {
    const key = await loadPublicKey(f);
    map.set(keyIdOf(key), key);
  }
  return map;
}
