/**
 * The gRPC types in src/gen/proto are generated from proto/ (proto/gen-types.mjs): a
 * .proto changed without regenerating them fails here, before the types can lie.
 */
import t from 'tap';
import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('../../..', import.meta.url));

t.test('the generated gRPC types match proto/', async (t) => {
  const run = () => execFileSync(process.execPath, ['proto/gen-types.mjs', '--check'], { cwd: root, stdio: 'pipe' });
  t.doesNotThrow(run, 'npm run proto:types leaves src/gen/proto as it is');
});
