/**
 * The layout's rules (docs/design.md), checked on the source so that they hold as the
 * code grows: one home for the change log, replication that knows no domain table, no
 * casts on the wire, files of one job, an agent that imports no server internals.
 */
import t from 'tap';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('../../..', import.meta.url));
const src = join(root, 'src');

function files(dir: string): string[] {
  return readdirSync(dir).flatMap((name) => {
    const p = join(dir, name);
    return statSync(p).isDirectory() ? files(p) : p.endsWith('.ts') || p.endsWith('.tsx') ? [p] : [];
  });
}

const ours = files(src)
  .map((p) => relative(root, p))
  .filter((p) => !p.startsWith('src/gen/'));
const text = (p: string) => readFileSync(join(root, p), 'utf8');
const imports = (p: string) => [...text(p).matchAll(/from '([^']+)'/g)].map((m) => m[1]!);

t.test('every source file is under 450 lines', async (t) => {
  const long = ours.map((p) => [p, (text(p).match(/\n/g) ?? []).length] as const).filter(([, n]) => n > 450);
  t.same(long, [], 'split a longer file by its jobs');
});

t.test('only src/changelog/ touches the change log table', async (t) => {
  t.same(
    ours.filter((p) => !p.startsWith('src/changelog/') && text(p).includes('change_log')),
    [],
  );
});

t.test('replication knows no domain table and casts nothing on the wire', async (t) => {
  const replication = ours.filter((p) => p.startsWith('src/replication/'));
  t.ok(replication.length > 5);
  const domainSchemas = replication.flatMap((p) =>
    imports(p)
      .filter((i) => /^\.\.\/[a-z-]+\/schema\.js$/.test(i))
      .map((i) => `${p}: ${i}`),
  );
  t.same(domainSchemas, [], 'no import of a domain schema');
  t.same(
    replication.filter((p) => text(p).includes('as unknown as')),
    [],
    'no `as unknown as`',
  );
});

t.test('the agent imports the agent API and shared pure modules, not the server', async (t) => {
  const allowed = [/^node:/, /^undici$/, /^\.\//, /^\.\.\/agent-api\//, /^\.\.\/lib\//, /^\.\.\/tls\/pin\.js$/, /^\.\.\/db\/native\.js$/];
  // Logic the agent runs itself: the installers' command lines, installation decisions, local assessment.
  const shared = ['../delivery/installers.js', '../delivery/installation.js', '../assessment/evaluate.js', '../assessment/catalog-index.js'];
  const agent = ours.filter((p) => p.startsWith('src/agent/'));
  const bad = agent.flatMap((p) =>
    imports(p)
      .filter((i) => !allowed.some((a) => a.test(i)) && !shared.includes(i))
      .map((i) => `${p}: ${i}`),
  );
  t.same(bad, []);
  for (const s of shared) {
    const file = join('src', s.slice(3)).replace(/\.js$/, '.ts');
    const server = imports(file).filter((i) => /\.\.\/(http|db\/client|replication|node)\b/.test(i));
    t.same(server, [], `${s} stays free of the server`);
  }
});
