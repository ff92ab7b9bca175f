import t from 'tap';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { loadPrivateKey, loadTrustedKeys, parseSignature, sha256File, signFile, verifySignature } from '../../src/catalog/signing.js';
import { makeKeys, tempDir } from '../helpers.js';

t.test('sign and verify: good, tampered byte, wrong key', async (t) => {
  const dir = await tempDir(t);
  const keys = await makeKeys(dir);
  const other = await makeKeys(dir, 'other');
  t.equal(readFileSync(keys.keyFile).length > 0 && (await import('node:fs')).statSync(keys.keyFile).mode & 0o777, 0o600, 'private key is 0600');
  const file = join(dir, 'cat.gz');
  writeFileSync(file, Buffer.from('some catalog bytes\n'.repeat(1000)));
  const sig = await signFile(file, await loadPrivateKey(keys.keyFile));
  t.equal(sig.keyId, keys.keyId);
  const trusted = await loadTrustedKeys([keys.pubFile]);
  t.equal(verifySignature(parseSignature(readFileSync(`${file}.sig`)), await sha256File(file), trusted), keys.keyId);

  const bytes = readFileSync(file);
  bytes[500] = bytes[500]! ^ 1;
  writeFileSync(file, bytes);
  t.throws(() => verifySignature(sig, '0'.repeat(64), trusted), { code: 'signature-invalid' });
  const tampered = await sha256File(file);
  t.throws(() => verifySignature(sig, tampered, trusted), { code: 'signature-invalid' }, 'one flipped bit fails');

  const wrongKey = await loadTrustedKeys([other.pubFile]);
  t.throws(() => verifySignature(sig, sig.sha256, wrongKey), { code: 'untrusted-publisher' }, 'a key not trusted');
  // A signature claiming the trusted key id but made with another key.
  const forged = { ...sig, signature: (await signFile(file, await loadPrivateKey(other.keyFile))).signature };
  t.throws(() => verifySignature(forged, forged.sha256, trusted), { code: 'signature-invalid' }, 'a signature by another key under the trusted id');
  t.throws(() => parseSignature('not json'), { code: 'signature-invalid' });
  t.throws(() => parseSignature(JSON.stringify({ ...sig, extra: 1 })), { code: 'signature-invalid' });
});
