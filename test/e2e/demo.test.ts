import t from 'tap';
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { BIN, consoleCookie } from '../helpers.js';
import { waitFor } from '../vendor.js';

/** `patchtree demo` as a user runs it: it converges, its consoles answer, Ctrl-C cleans up. */
t.test('patchtree demo converges, serves its consoles and removes its data on Ctrl-C', async (t) => {
  t.setTimeout(180_000);
  const child = spawn(process.execPath, [BIN, 'demo', '--computers', '30'], { env: { PATH: process.env.PATH }, stdio: ['ignore', 'pipe', 'inherit'] });
  const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
  t.teardown(async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGKILL');
      await exited;
    }
  });
  const lines: string[] = [];
  createInterface({ input: child.stdout! }).on('line', (l) => lines.push(l));
  const text = () => lines.join('\n');
  // The tree's line follows the convergence line once the root's report is read: wait for both.
  await waitFor(async () => /whole tree: /.test(text()) || child.exitCode !== null, 'the demo to converge and report the tree', 120_000);
  t.match(text(), /converged in \d+ s: every site has the catalog and the policy, and the root reports on all 5 nodes/);
  t.match(text(), /whole tree: 150 computers/, 'the root reports the computers of all five nodes');
  const dir = /data in (\S+)/.exec(text())![1]!;
  t.ok(existsSync(dir), 'the demo data exists while it runs');
  const token = /admin token (\S+)/.exec(text())![1]!;
  const urls = [...text().matchAll(/^\s+(\w+)\s+\S+\s+(http:\/\/127\.0\.0\.1:\d+)\//gm)].map((m) => [m[1]!, m[2]!] as const);
  t.same(
    urls.map(([n]) => n),
    ['hq', 'berlin', 'munich', 'paris', 'tokyo'],
  );
  for (const [name, url] of urls) {
    const res = await fetch(`${url}/`, { headers: { cookie: await consoleCookie(url, token) } });
    t.equal(res.status, 200, `${name}'s console answers`);
    await res.text();
  }
  const tree = (await (await fetch(`${urls[0]![1]}/api/v1/reports/compliance?scope=tree`, { headers: { authorization: `Bearer ${token}` } })).json()) as any;
  t.same(tree.nodes.map((n: any) => n.name).sort(), ['berlin', 'hq', 'munich', 'paris', 'tokyo']);
  child.kill('SIGINT');
  t.equal(await exited, 0, 'Ctrl-C ends it cleanly');
  t.notOk(existsSync(dir), 'and removes its data');
  t.match(text(), /removed /);
});
