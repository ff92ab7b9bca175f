import t from 'tap';
import { runCli } from '../helpers.js';
import { closest, distance } from '../../src/lib/args.js';

/**
 * Every command and subcommand of the real CLI (child processes of bin/patchtree.js):
 * `--help` and `-h` print its usage on stdout and exit 0; an option it does not have,
 * one typo away from one it has, exits 2 naming that one.
 */
const COMMANDS: { args: string[]; usage: RegExp; typo: string; means: string }[] = [
  { args: ['serve'], usage: /^patchtree serve \[options\]/, typo: '--data-dri', means: '--data' },
  { args: ['keys', 'generate'], usage: /^patchtree keys generate --out DIR/, typo: '--ot', means: '--out' },
  { args: ['catalog', 'build'], usage: /^patchtree catalog build --cvrf/, typo: '--verison', means: '--version' },
  { args: ['catalog', 'sign'], usage: /^patchtree catalog sign FILE --key/, typo: '--kye', means: '--key' },
  { args: ['catalog', 'verify'], usage: /^patchtree catalog verify FILE --key/, typo: '--signatur', means: '--signature' },
  { args: ['catalog', 'import'], usage: /^patchtree catalog import FILE --server/, typo: '--sever', means: '--server' },
  { args: ['content', 'status'], usage: /^patchtree content status --server/, typo: '--wach', means: '--watch' },
  { args: ['simulate'], usage: /^patchtree simulate --server/, typo: '--computer', means: '--computers' },
  { args: ['demo'], usage: /^patchtree demo \[--keep\]/, typo: '--kep', means: '--keep' },
  { args: ['backup'], usage: /^patchtree backup --data DIR --out FILE/, typo: '--with-contnet', means: '--with-content' },
  { args: ['restore'], usage: /^patchtree restore --from FILE --data DIR/, typo: '--form', means: '--from' },
  { args: ['agent', 'run'], usage: /^patchtree agent run --server/, typo: '--intreval', means: '--interval' },
  { args: ['agent', 'status'], usage: /^patchtree agent status --state DIR/, typo: '--jsn', means: '--json' },
  { args: ['agent', 'task', 'list'], usage: /^patchtree agent task list\|run NAME\|stop/, typo: '--stat', means: '--state' },
  { args: ['agent', 'task', 'run'], usage: /^patchtree agent task list\|run NAME\|stop/, typo: '--sate', means: '--state' },
  { args: ['agent', 'task', 'stop'], usage: /^patchtree agent task list\|run NAME\|stop/, typo: '--stte', means: '--state' },
  { args: ['agent', 'log'], usage: /^patchtree agent log --state DIR/, typo: '--folow', means: '--follow' },
  { args: ['agent', 'clear-retries'], usage: /^patchtree agent clear-retries --state DIR/, typo: '--states', means: '--state' },
  { args: ['agent', 'update-data'], usage: /^patchtree agent update-data --state DIR/, typo: '--state-dir', means: '--state' },
];

/** Groups: their own help lists their subcommands. */
const GROUPS: { args: string[]; lists: string[] }[] = [
  { args: [], lists: ['serve', 'keys generate', 'catalog sign', 'agent', 'backup', 'restore'] },
  { args: ['keys'], lists: ['keys generate'] },
  { args: ['catalog'], lists: ['catalog build', 'catalog sign', 'catalog verify', 'catalog import'] },
  { args: ['content'], lists: ['content status'] },
  { args: ['agent'], lists: ['agent run', 'agent status', 'agent task', 'agent log', 'agent clear-retries', 'agent update-data'] },
  { args: ['agent', 'task'], lists: ['task list', 'task run NAME', 'task stop'] },
];

t.test('--help and -h: usage on stdout, exit 0, for every command', async (t) => {
  await Promise.all(
    COMMANDS.flatMap((c) =>
      ['--help', '-h'].map(async (flag) => {
        const r = await runCli([...c.args, flag]);
        t.equal(r.code, 0, `${c.args.join(' ')} ${flag}: exit 0`);
        t.match(r.stdout, c.usage, `${c.args.join(' ')} ${flag}: usage on stdout`);
        t.match(r.stdout, /\n {2}--\S+/, `${c.args.join(' ')} ${flag}: its options listed`);
        t.equal(r.stderr, '', `${c.args.join(' ')} ${flag}: nothing on stderr`);
      }),
    ),
  );
});

t.test('groups: help lists every subcommand; no subcommand is a usage error', async (t) => {
  for (const g of GROUPS) {
    const r = await runCli([...g.args, '--help']);
    t.equal(r.code, 0, `${g.args.join(' ') || '(none)'} --help: exit 0`);
    for (const l of g.lists) t.ok(r.stdout.includes(l), `${g.args.join(' ') || 'patchtree'} --help lists "${l}"`);
  }
  const helpWord = await runCli(['agent', 'help']);
  t.equal(helpWord.code, 0, 'agent help: exit 0');
  t.match(helpWord.stdout, /patchtree agent run/, 'agent help: on stdout');
  for (const args of [['catalog'], ['agent'], ['keys']]) {
    const r = await runCli(args);
    t.equal(r.code, 2, `${args.join(' ')} alone: exit 2`);
    t.equal(r.stdout, '', `${args.join(' ')} alone: the usage on stderr, not stdout`);
  }
});

t.test('an unknown option: exit 2, the closest option named, nothing run', async (t) => {
  await Promise.all(
    COMMANDS.map(async (c) => {
      const r = await runCli([...c.args, c.typo]);
      t.equal(r.code, 2, `${c.args.join(' ')} ${c.typo}: exit 2`);
      t.ok(
        r.stderr.includes(`unknown option '${c.typo}'; did you mean ${c.means}?`),
        `${c.args.join(' ')} ${c.typo}: suggests ${c.means} (${r.stderr.trim()})`,
      );
      t.equal(r.stdout, '', `${c.args.join(' ')} ${c.typo}: nothing on stdout`);
    }),
  );
  const far = await runCli(['simulate', '--zzzzzzzz']);
  t.equal(far.code, 2);
  t.notMatch(far.stderr, /did you mean/, 'nothing near: no suggestion');
  t.match(far.stderr, /patchtree simulate --help lists the options/);
});

t.test('unknown commands name the closest', async (t) => {
  for (const [args, means] of [
    [['serv'], 'serve'],
    [['catalog', 'biuld'], 'build'],
    [['agent', 'stauts'], 'status'],
    [['content', 'stats'], 'status'],
  ] as const) {
    const r = await runCli([...args]);
    t.equal(r.code, 2, `${args.join(' ')}: exit 2`);
    t.match(r.stderr, `did you mean "${means}"?`, `${args.join(' ')}: suggests ${means}`);
  }
});

t.test('closest and distance', async (t) => {
  t.equal(distance('kitten', 'sitting'), 3);
  t.equal(distance('--folow', '--follow'), 1);
  t.equal(distance('ab', 'ba'), 1, 'a swap is one edit');
  t.equal(closest('sever', ['server', 'token']), 'server');
  t.equal(closest('serv', ['server', 'serve']), 'server', 'a prefix of an option is near (the first that is)');
  t.equal(closest('data-dir', ['data', 'name']), 'data', 'an option that is a prefix is near');
  t.equal(closest('zzzzzz', ['server', 'token']), null, 'nothing near');
});
