import t from 'tap';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ConfigError, loadConfig } from '../../src/node/config.js';
import { tempDir } from '../helpers.js';

t.test('embedded defaults', async (t) => {
  const c = loadConfig([], {});
  t.equal(c.httpPort, 8080);
  t.equal(c.grpcPort, 50051);
  t.ok(c.data.endsWith('/data'));
  t.equal(c.databaseUrl, `file:${join(c.data, 'patchtree.db')}`);
  t.same(c.languages, ['en']);
  t.equal(c.logLevel, 'info');
  t.ok(Object.isFrozen(c));
});

t.test('flags win over env, env over the config file', async (t) => {
  const dir = await tempDir(t);
  const file = join(dir, 'node.json');
  writeFileSync(file, JSON.stringify({ httpPort: 1111, grpcPort: 2222, name: 'from-file', languages: ['fr'] }));
  const c = loadConfig(['--config', file, '--http-port', '3333'], { PATCHTREE_GRPC_PORT: '4444', PATCHTREE_HTTP_PORT: '5555' });
  t.equal(c.httpPort, 3333, 'flag');
  t.equal(c.grpcPort, 4444, 'env');
  t.equal(c.name, 'from-file', 'file');
  t.same(c.languages, ['fr']);
  const c2 = loadConfig(['--languages', 'en,DE', '--trusted-key', 'a.pub', '--trusted-key', 'b.pub', '--database-url', 'libsql://db.example.com'], {});
  t.same(c2.languages, ['de', 'en']);
  t.equal(c2.trustedKeys.length, 2);
  t.equal(c2.databaseUrl, 'libsql://db.example.com');
});

t.test('a bad value names the option', async (t) => {
  const bad: [string[], NodeJS.ProcessEnv, RegExp][] = [
    [['--http-port', '70000'], {}, /--http-port/],
    [['--grpc-port', 'abc'], {}, /--grpc-port/],
    [['--languages', 'english!'], {}, /--languages/],
    [['--database-url', 'postgres://x'], {}, /--database-url/],
    [['--log-level', 'loud'], {}, /--log-level/],
    [['--admin-token', 'short'], {}, /--admin-token/],
    [[], { PATCHTREE_HTTP_PORT: '-1' }, /PATCHTREE_HTTP_PORT/],
    [['--no-such-flag', 'x'], {}, /no-such-flag/],
    [['--config', '/nonexistent/patchtree.json'], {}, /config/],
    [['--upstream', 'root:50051', '--insecure', '--database-url', 'libsql://db.example.com'], {}, /--database-url must be a file: URL on a child/],
  ];
  for (const [args, env, re] of bad) t.throws(() => loadConfig(args, env), re, args.join(' ') || JSON.stringify(env));
  t.throws(() => loadConfig(['--http-port', '70000'], {}), ConfigError);
  try {
    loadConfig(['--admin-token', 'short'], {});
    t.fail('should throw');
  } catch (err) {
    t.notMatch((err as Error).message, /short/, 'secrets are not echoed');
  }
  const dir = await tempDir(t);
  const file = join(dir, 'bad.json');
  writeFileSync(file, JSON.stringify({ httpPortt: 1 }));
  t.throws(() => loadConfig(['--config', file], {}), /unknown option "httpPortt"/);
});
