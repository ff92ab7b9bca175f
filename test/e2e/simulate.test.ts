import t from 'tap';
import { api, ADMIN_TOKEN, buildRealCatalog, makeKeys, runCli, spawnNode, tempDir, uploadCatalog } from '../helpers.js';
import { catalogProducts, simulatedComputer } from '../../src/assessment/simulate.js';

t.test("patchtree simulate enrols a fleet from the node's catalog, deterministically", async (t) => {
  t.setTimeout(120_000);
  const dir = await tempDir(t);
  const keys = await makeKeys(dir);
  const n = await spawnNode(t, ['--data', dir, '--admin-token', ADMIN_TOKEN, '--trusted-key', keys.pubFile]);
  const cat = await buildRealCatalog(dir, keys);
  t.equal((await uploadCatalog(n.url, ADMIN_TOKEN, cat.file, cat.sig)).status, 201);
  const token = (await api(n.url, ADMIN_TOKEN, '/api/v1/agents/enrollment-tokens', { method: 'POST', body: '{}' })).body.token;

  const products = await catalogProducts(n.url, token);
  t.ok(
    products.some((p) => p.name === 'Windows 11 Version 23H2 for x64-based Systems' && p.versions.includes('10.0.22631.3007')),
    'Windows 11 23H2 with its fixed build',
  );
  t.same(simulatedComputer(products, 7, 3, 'x'), simulatedComputer(products, 7, 3, 'x'), 'same seed, same computer');
  t.notSame(simulatedComputer(products, 7, 3, 'x').full, simulatedComputer(products, 8, 3, 'x').full, 'another seed, another computer');

  const run = await runCli(['simulate', '--server', n.url, '--enrollment-token', token, '--computers', '60', '--seed', '7']);
  t.equal(run.code, 0, run.stderr);
  const r = JSON.parse(run.stdout);
  t.equal(r.created, 60);
  t.equal(r.failed, 0);
  t.ok(r.required > 0, 'some simulated computers need updates');
  const list = (await api(n.url, ADMIN_TOKEN, '/api/v1/computers?limit=1000')).body.items as { required: number; os: string }[];
  t.equal(list.length, 60);
  t.equal(
    list.reduce((a, c) => a + c.required, 0),
    r.required,
    'the stored results add up to what the reports answered',
  );
  t.ok(
    list.every((c) => c.os && /^Windows /.test(c.os)),
    'every computer runs a Windows product of the catalog',
  );

  const again = JSON.parse((await runCli(['simulate', '--server', n.url, '--enrollment-token', token, '--computers', '60', '--seed', '7'])).stdout);
  t.equal(again.created, 0, 'the same seed reports the same computers again');
  t.equal(again.required, r.required);
  const bad = await runCli(['simulate', '--server', n.url, '--enrollment-token', 'pte_wrong', '--computers', '1']);
  t.not(bad.code, 0);
  t.match(bad.stderr, /401/);
});
