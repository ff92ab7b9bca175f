import t from 'tap';
import { spawn } from 'node:child_process';
import { existsSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { gzipSync } from 'node:zlib';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { ADMIN_TOKEN, api, BIN, buildRealCatalog, header, makeKeys, runCli, sampleUpdate, spawnNode, tempDir, ROOT } from '../helpers.js';

t.test('a real node process: import with the CLI, restart on the same data, data kept', async (t) => {
  const dir = await tempDir(t);
  const data = join(dir, 'data');
  const keys = await makeKeys(dir);
  const { file } = await buildRealCatalog(dir, keys);
  const args = ['--data', data, '--trusted-key', keys.pubFile, '--name', 'site-1', '--languages', 'en,de'];
  const first = await spawnNode(t, args);
  const token = readFileSync(join(data, 'admin-token'), 'utf8').trim();
  t.equal(statSync(join(data, 'admin-token')).mode & 0o777, 0o600, 'admin token file is 0600');
  const imported = await runCli(['catalog', 'import', file, '--server', first.url, '--token', token]);
  t.equal(imported.code, 0, imported.stderr);
  t.match(JSON.parse(imported.stdout), { version: '2024.01.1', added: 495 });
  const refused = await runCli(['catalog', 'import', file, '--server', first.url, '--token', 'pt_nope']);
  t.equal(refused.code, 1);
  t.match(refused.stderr, /HTTP 401/);
  first.child.kill('SIGTERM');
  t.equal(await first.exited, 0, 'stops cleanly on SIGTERM');

  const second = await spawnNode(t, args);
  const list = await api(second.url, token, '/api/v1/updates?limit=1000');
  t.equal(list.body.items.length, 495, 'the catalog survived the restart');
  t.equal(readFileSync(join(data, 'admin-token'), 'utf8').trim(), token, 'the admin token too');
  t.match((await api(second.url, token, '/api/v1/node')).body, { name: 'site-1', languages: ['de', 'en'] });

  // The standard gRPC health service answers on the gRPC port: TLS with the node's own CA.
  const tlsCreds = () => grpc.credentials.createSsl(readFileSync(join(data, 'tls', 'ca.pem')));
  const def = protoLoader.loadSync('grpc/health/v1/health.proto', { includeDirs: [join(ROOT, 'proto')], keepCase: true, enums: String });
  const Health = (grpc.loadPackageDefinition(def) as any).grpc.health.v1.Health;
  const client = new Health(`127.0.0.1:${second.grpcPort}`, tlsCreds());
  const status = await new Promise<any>((resolve, reject) =>
    client.Check({ service: '' }, (err: Error | null, res: unknown) => (err ? reject(err) : resolve(res))),
  );
  client.close();
  t.same(status, { status: 'SERVING' });

  // Server reflection lists the services for standard gRPC tools.
  const rdef = protoLoader.loadSync('grpc/reflection/v1/reflection.proto', {
    includeDirs: [join(ROOT, 'node_modules', '@grpc', 'reflection', 'build', 'proto')],
    keepCase: true,
  });
  const Reflection = (grpc.loadPackageDefinition(rdef) as any).grpc.reflection.v1.ServerReflection;
  const rc = new Reflection(`127.0.0.1:${second.grpcPort}`, tlsCreds());
  const info = rc.ServerReflectionInfo();
  const listed = await new Promise<any>((resolve) => {
    info.on('data', (m: any) => resolve(m.list_services_response.service.map((x: any) => x.name).sort()));
    info.write({ list_services: '' });
  });
  info.end();
  rc.close();
  t.same(listed, ['grpc.health.v1.Health', 'patchtree.replication.v1.Replication']);
});

t.test('configuration errors stop the node with a message naming the option', async (t) => {
  const dir = await tempDir(t);
  const cases: [string[], RegExp][] = [
    [['serve', '--data', dir, '--http-port', '99999'], /--http-port/],
    [['serve', '--data', dir, '--languages', 'en,!!'], /--languages/],
    [['serve', '--data', dir, '--trusted-key', join(dir, 'missing.pub'), '--http-port', '0', '--https-port', '0', '--grpc-port', '0'], /--trusted-key/],
    [['serve', '--data', dir, '--bogus'], /bogus/],
  ];
  for (const [args, re] of cases) {
    const r = await runCli(args);
    t.not(r.code, 0, args.join(' '));
    t.match(r.stderr, re);
  }
  const env = await runCli(['serve', '--data', dir], { PATCHTREE_LOG_LEVEL: 'chatty' });
  t.equal(env.code, 2);
  t.match(env.stderr, /PATCHTREE_LOG_LEVEL/);
  const help = await runCli(['serve', '--help']);
  t.equal(help.code, 0);
  for (const flag of ['--data', '--http-port', '--grpc-port', '--admin-token', '--languages', '--trusted-key', '--database-url', '--log-level', '--name'])
    t.match(help.stdout, flag);
});

t.test('publisher tools: keys generate, catalog build, catalog verify', async (t) => {
  const dir = await tempDir(t);
  const gen = await runCli(['keys', 'generate', '--out', join(dir, 'k')]);
  t.equal(gen.code, 0, gen.stderr);
  t.equal(statSync(join(dir, 'k', 'publisher.key')).mode & 0o777, 0o600);
  t.equal((await runCli(['keys', 'generate', '--out', join(dir, 'k')])).code, 1, 'never overwrites a key');
  const fx = join(ROOT, 'test', 'fixtures');
  const out = join(dir, 'c.ndjson.gz');
  const build = await runCli([
    'catalog',
    'build',
    '--cvrf',
    join(fx, 'msrc-cvrf', '2024-Jan.xml.gz'),
    '--wsus',
    join(fx, 'wsus-osdsus', 'Windows-11-23H2.json.gz'),
    join(fx, 'wsus-osdsus', 'Windows-10-22H2.json.gz'),
    '--version',
    '2024.01.2',
    '--out',
    out,
    '--sign',
    join(dir, 'k', 'publisher.key'),
  ]);
  t.equal(build.code, 0, build.stderr);
  t.match(JSON.parse(build.stdout), { updates: 125 + 4 + 10, skippedFixesTotal: 286, skippedFixes: { 'CBL-Mariner Releases': 195 } });
  const ok = await runCli(['catalog', 'verify', out, '--key', join(dir, 'k', 'publisher.pub')]);
  t.equal(ok.code, 0, ok.stderr);
  await runCli(['keys', 'generate', '--out', join(dir, 'k2')]);
  const wrong = await runCli(['catalog', 'verify', out, '--key', join(dir, 'k2', 'publisher.pub')]);
  t.equal(wrong.code, 1);
  t.match(wrong.stderr, /not among/);
  const noVersion = await runCli(['catalog', 'build', '--cvrf', join(fx, 'msrc-cvrf', '2024-Jan.xml.gz'), '--out', out]);
  t.equal(noVersion.code, 2);
  t.match(noVersion.stderr, /--version/);
  t.equal(build.stderr, '', 'no progress lines in a pipe');
});

t.test('catalog sign: a catalog made by another tool is checked, then signed; a broken one is not', async (t) => {
  const dir = await tempDir(t);
  await runCli(['keys', 'generate', '--out', join(dir, 'k')]);
  const key = join(dir, 'k', 'publisher.key');
  const pub = join(dir, 'k', 'publisher.pub');
  const lines = (updates: unknown[], count = updates.length) =>
    [JSON.stringify(header('other-tool-1', count)), ...updates.map((u) => JSON.stringify(u))].join('\n');
  const good = join(dir, 'good.ndjson.gz');
  writeFileSync(good, gzipSync(lines([sampleUpdate(1), sampleUpdate(2)])));
  const signed = await runCli(['catalog', 'sign', good, '--key', key]);
  t.equal(signed.code, 0, signed.stderr);
  t.match(JSON.parse(signed.stdout), { file: good, signature: `${good}.sig`, version: 'other-tool-1', updates: 2, sha256: /^[0-9a-f]{64}$/ });
  const verified = await runCli(['catalog', 'verify', good, '--key', pub]);
  t.equal(verified.code, 0, 'its signature verifies');

  const cases: [string, string, RegExp][] = [
    ['bad-update', lines([sampleUpdate(1), { ...sampleUpdate(2), severity: 'Urgent' }]), /line 3: severity/],
    ['short', lines([sampleUpdate(1)], 3), /the header says 3 updates, the file has 1/],
    ['no-header', JSON.stringify(sampleUpdate(1)), /line 1/],
  ];
  for (const [name, text, why] of cases) {
    const file = join(dir, `${name}.ndjson.gz`);
    writeFileSync(file, gzipSync(text));
    const r = await runCli(['catalog', 'sign', file, '--key', key]);
    t.equal(r.code, 1, `${name}: exit 1`);
    t.match(r.stderr, /not signed: .* is not a valid catalog/, `${name}: says why`);
    t.match(r.stderr, why, `${name}: names the line`);
    t.notOk(existsSync(`${file}.sig`), `${name}: no signature written`);
  }
  const notGzip = join(dir, 'plain.ndjson');
  writeFileSync(notGzip, lines([sampleUpdate(1)]));
  const plain = await runCli(['catalog', 'sign', notGzip, '--key', key]);
  t.not(plain.code, 0, 'not gzip: refused');
  t.match(plain.stderr, /gzip/);
  t.notOk(existsSync(`${notGzip}.sig`));
});

t.test('logs: JSON in a pipe, one readable line per record with --log-format pretty', async (t) => {
  const dir = await tempDir(t);
  const start = (extra: string[]) =>
    new Promise<string>((resolve, reject) => {
      const child = spawn(process.execPath, [BIN, 'serve', '--data', dir, '--http-port', '0', '--https-port', '0', '--grpc-port', '0', ...extra], {
        stdio: ['ignore', 'pipe', 'inherit'],
      });
      let out = '';
      child.stdout.on('data', (d: Buffer) => {
        out += d.toString();
        if (out.includes('node started')) child.kill('SIGTERM');
      });
      child.on('exit', () => resolve(out));
      child.on('error', reject);
    });
  const json = await start([]);
  const first = json.split('\n')[0]!;
  t.match(JSON.parse(first), { level: 30, msg: 'database ready' }, 'JSON lines when stdout is not a terminal');
  const pretty = await start(['--log-format', 'pretty']);
  const started = pretty.split('\n').find((l) => l.includes('node started'))!;
  t.match(started, /^\[\d{2}:\d{2}:\d{2}\.\d{3}\] INFO.*: node started \{.*"http":\d+/, 'time, level, message, then the fields');
  t.notOk(pretty.includes('\u001b['), 'no colours when not a terminal');
  t.match(pretty, /\[assessment\] assessment ready/, 'the module before the message');
  const bad = await runCli(['serve', '--data', dir, '--log-format', 'xml']);
  t.equal(bad.code, 2);
  t.match(bad.stderr, /--log-format/);
});

t.test('--admin-token sets the bootstrap token', async (t) => {
  const dir = await tempDir(t);
  const n = await spawnNode(t, ['--data', dir], { PATCHTREE_ADMIN_TOKEN: ADMIN_TOKEN });
  t.equal((await api(n.url, ADMIN_TOKEN, '/api/v1/tokens')).status, 200);
  t.throws(() => statSync(join(dir, 'admin-token')), 'no token file is written when the token is given');
});
