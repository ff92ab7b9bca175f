/**
 * The contract every replicated kind keeps, run against each registered kind and a
 * toy kind defined here (a new kind needs nothing outside its domain and one
 * registration line): a parent's snapshot for some languages, applied by a child in a
 * complete resync, gives the child exactly what those languages should see; applying
 * it again changes nothing; a parent's change-log entries, sent through the kind's
 * tail filter, give the same; what the parent removed is swept by the next complete
 * resync. Real SQLite files, migrated like a node's, and the real applier.
 */
import t from 'tap';
import { join } from 'node:path';
import { openDatabase, openNative, type NativeDb } from '../../src/db/index.js';
import { openConn } from '../../src/db/exec.js';
import { changelog, KindRegistry, type Change, type ReplicatedKind, type SourceContext } from '../../src/changelog/index.js';
import { languageMatches } from '../../src/lib/languages.js';
import { replicatedKinds } from '../../src/node/kinds.js';
import { BatchApplier } from '../../src/replication/applier.js';
import { tempDir } from '../helpers.js';

const PARENT = '11111111-1111-4111-8111-111111111111';
const ORIGIN = '22222222-2222-4222-8222-222222222222';

/** A kind only this test knows: notes in a language, in a table of their own. */
const toyKind: ReplicatedKind = {
  kind: 'toy-note',
  catalog: false,
  byLanguage: true,
  source: {
    tail: (_ctx, rows, languages) =>
      rows.map((r) => (r.op === 'delete' || languageMatches(JSON.parse(r.payload).language, languages) ? Buffer.from(r.payload) : null)),
    async *snapshot(ctx, languages) {
      const rows = await ctx.reads.all<{ id: string; language: string; text: string }>('SELECT id, language, text FROM toy_notes ORDER BY id', []);
      const mine = rows.filter((r) => languageMatches(r.language, languages));
      if (mine.length) yield mine.map((r) => ({ seq: 0, kind: 'toy-note', key: r.id, op: 'upsert', payload: Buffer.from(JSON.stringify(r)) }));
    },
  },
  applier(db) {
    db.exec('CREATE TABLE IF NOT EXISTS toy_notes (id TEXT PRIMARY KEY, language TEXT NOT NULL, text TEXT NOT NULL)');
    const upsert = db.prepare(
      'INSERT INTO toy_notes (id, language, text) VALUES (?, ?, ?) ON CONFLICT(id) DO UPDATE SET language = excluded.language, text = excluded.text WHERE text != excluded.text',
    );
    const del = db.prepare('DELETE FROM toy_notes WHERE id = ?');
    const unseen = (seen: string) => db.prepare(`SELECT id FROM toy_notes WHERE id NOT IN ${seen}`);
    return {
      apply(tx, changes) {
        let n = 0;
        for (const c of changes) {
          const changed =
            c.op === 'delete'
              ? del.run(c.key).changes
              : (() => {
                  const p = JSON.parse(c.payload.toString()) as { id: string; language: string; text: string };
                  return upsert.run(p.id, p.language, p.text).changes;
                })();
          if (changed) {
            tx.log({
              kind: 'toy-note',
              key: c.key,
              op: c.op,
              languages: c.op === 'delete' ? '' : (JSON.parse(c.payload.toString()) as { language: string }).language,
              payload: c.payload.toString(),
            });
            n++;
          }
        }
        return n;
      },
      sweep(tx) {
        const gone = unseen(tx.seenSql('toy-note')).all() as { id: string }[];
        for (const { id } of gone) {
          del.run(id);
          tx.log({ kind: 'toy-note', key: id, op: 'delete', languages: '', payload: JSON.stringify({ id }) });
        }
        return gone.length;
      },
    };
  },
};

/** Per kind: what the parent holds (as changes it applied), one removal, and how a node's state of that kind reads. */
interface Fixture {
  /** What the parent holds first that this kind refers to (a policy's updates). */
  before?: Change[];
  changes: Change[];
  remove: Change | null;
  read(db: NativeDb): unknown;
  /** The state a child of `languages` should have (after the removal when `removed`). */
  expected(languages: string[], removed: boolean): unknown;
}

const change = (kind: string, key: string, op: string, payload: unknown): Change => ({ seq: 0, kind, key, op, payload: Buffer.from(JSON.stringify(payload)) });
const file = (name: string, language: string) => ({
  name,
  url: `https://example.test/${name}`,
  size: 10,
  sha256: name
    .padEnd(64, '0')
    .replace(/[^0-9a-f]/g, 'a')
    .slice(0, 64),
  language,
});
const update = (id: string, files: ReturnType<typeof file>[]) => ({
  id,
  revision: 1,
  kb: '5000001',
  bulletin: null,
  title: `Update ${id}`,
  vendor: 'Microsoft',
  productFamily: 'Windows',
  product: 'Windows 11',
  classification: 'Security Updates',
  severity: 'Important',
  cves: [],
  releaseDate: '2026-11-10',
  supersedes: [],
  restart: 'may',
  applicability: { always: true },
  installed: { kb: '5000001' },
  install: { successCodes: [0], rebootCodes: [3010] },
  files,
  expired: false,
  origin: ORIGIN,
  releaseVersion: '2026.11',
  firstVersion: '2026.11',
});
const sees = (languages: string[], fileLanguages: string[]) => fileLanguages.length === 0 || fileLanguages.some((l) => languageMatches(l, languages));

const fixtures: Record<string, Fixture> = {
  update: {
    changes: [
      change('update', 'u-de', 'upsert', update('u-de', [file('neutral.msu', 'neutral'), file('de.cab', 'de-de')])),
      change('update', 'u-fr', 'upsert', update('u-fr', [file('fr.cab', 'fr-fr')])),
      change('update', 'u-meta', 'upsert', update('u-meta', [])),
    ],
    remove: change('update', 'u-meta', 'delete', { id: 'u-meta' }),
    read: (db) =>
      db
        .prepare(
          "SELECT u.id, (SELECT group_concat(language, ',') FROM (SELECT language FROM update_files WHERE update_id = u.id ORDER BY position)) AS langs FROM updates u ORDER BY u.id",
        )
        .all(),
    expected: (languages, removed) =>
      [{ id: 'u-de', langs: ['neutral', 'de-de'] }, { id: 'u-fr', langs: ['fr-fr'] }, ...(removed ? [] : [{ id: 'u-meta', langs: [] as string[] }])]
        .filter((u) => sees(languages, u.langs))
        .map((u) => ({ id: u.id, langs: u.langs.filter((l) => languageMatches(l, languages)).join(',') || null })),
  },
  'severity-levels': {
    changes: [
      change('severity-levels', 'all', 'upsert', {
        levels: [
          { key: `${ORIGIN}:1`, name: 'Urgent', rank: 0 },
          { key: `${ORIGIN}:2`, name: 'Later', rank: 1 },
        ],
      }),
    ],
    remove: null,
    read: (db) => db.prepare('SELECT name, rank, origin_key FROM custom_severities ORDER BY rank').all(),
    expected: () => [
      { name: 'Urgent', rank: 0, origin_key: `${ORIGIN}:1` },
      { name: 'Later', rank: 1, origin_key: `${ORIGIN}:2` },
    ],
  },
  setting: {
    changes: [
      change('setting', 'freshnessGoals', 'upsert', { value: { defaultHours: 12 }, origin: ORIGIN }),
      change('setting', 'assessment', 'upsert', { value: { scanIntervalMinutes: 60 }, origin: ORIGIN }),
    ],
    remove: change('setting', 'assessment', 'delete', { key: 'assessment' }),
    read: (db) => db.prepare("SELECT key, value, origin FROM settings WHERE origin != '' ORDER BY key").all(),
    expected: (_l, removed) => [
      ...(removed ? [] : [{ key: 'assessment', value: '{"scanIntervalMinutes":60}', origin: ORIGIN }]),
      { key: 'freshnessGoals', value: '{"defaultHours":12}', origin: ORIGIN },
    ],
  },
  release: {
    changes: [
      change('release', '2026.11', 'upsert', {
        version: '2026.11',
        publishedAt: 1,
        importedAt: 2,
        updates: [
          ['u-de', 1, 'de-de,neutral', 'Windows'],
          ['u-fr', 1, 'fr-fr', 'Windows'],
          ['u-meta', 1, '', 'Windows'],
        ],
      }),
    ],
    remove: null,
    read: (db) => db.prepare('SELECT version, update_id, languages FROM freshness_updates ORDER BY update_id').all(),
    expected: (languages) =>
      [
        ['u-de', 'de-de,neutral'],
        ['u-fr', 'fr-fr'],
        ['u-meta', ''],
      ]
        .filter(([, l]) => l === '' || l!.split(',').some((x) => languageMatches(x, languages)))
        .map(([id, l]) => ({ version: '2026.11', update_id: id, languages: l })),
  },
  policy: {
    get before() {
      return fixtures.update!.changes;
    },
    changes: [
      change('policy', 'p-1', 'upsert', {
        id: 'p-1',
        name: 'Patch Tuesday',
        description: null,
        enabled: true,
        startAt: 1,
        deadlineAt: null,
        targets: { all: true },
        installation: null,
        followSupersedence: true,
        revision: 1,
        origin: ORIGIN,
        originName: 'root',
        updates: [
          ['u-de', 'de-de,neutral'],
          ['u-fr', 'fr-fr'],
        ],
      }),
      change('policy', 'p-2', 'upsert', {
        id: 'p-2',
        name: 'Later',
        description: null,
        enabled: false,
        startAt: 1,
        deadlineAt: null,
        targets: { all: true },
        installation: null,
        followSupersedence: false,
        revision: 3,
        origin: ORIGIN,
        originName: 'root',
        updates: [],
      }),
    ],
    remove: change('policy', 'p-2', 'delete', { id: 'p-2' }),
    read: (db) =>
      db
        .prepare(
          "SELECT p.id, p.revision, (SELECT group_concat(update_id, ',') FROM (SELECT update_id FROM policy_updates WHERE policy_id = p.id ORDER BY update_id)) AS updates FROM policies p ORDER BY p.id",
        )
        .all(),
    expected: (languages, removed) => [
      { id: 'p-1', revision: 1, updates: ['u-de', 'u-fr'].filter((u) => sees(languages, u === 'u-de' ? ['de-de', 'neutral'] : ['fr-fr'])).join(',') || null },
      ...(removed ? [] : [{ id: 'p-2', revision: 3, updates: null }]),
    ],
  },
  'toy-note': {
    changes: [
      change('toy-note', 'n-1', 'upsert', { id: 'n-1', language: 'de', text: 'Hallo' }),
      change('toy-note', 'n-2', 'upsert', { id: 'n-2', language: 'fr', text: 'Salut' }),
    ],
    remove: change('toy-note', 'n-2', 'delete', { id: 'n-2' }),
    read: (db) => db.prepare('SELECT id, text FROM toy_notes ORDER BY id').all(),
    expected: (languages, removed) =>
      [{ id: 'n-1', text: 'Hallo', l: 'de' }, ...(removed ? [] : [{ id: 'n-2', text: 'Salut', l: 'fr' }])]
        .filter((n) => languageMatches(n.l, languages))
        .map(({ id, text }) => ({ id, text })),
  },
};

const registry = new KindRegistry([...replicatedKinds().all(), toyKind]);

/** A migrated node database: its binding (what the applier writes with) and the source context a parent reads with. */
async function node(dir: string, name: string) {
  const db = await openDatabase(`file:${join(dir, `${name}.db`)}`);
  const native = openNative(db.filePath!);
  const reads = openConn(db);
  const ctx: SourceContext = { orm: db.orm, reads, self: { nodeId: PARENT, name } };
  const applier = new BatchApplier(native, registry, PARENT, () => 1_700_000_000_000);
  native
    .prepare(
      "INSERT INTO upstream_state (id, address, parent_id, credential, epoch, cursor, languages, resyncing, updated_at) VALUES (1, 'x', ?, 'c', 'e', 0, '', 0, 0)",
    )
    .run(PARENT);
  return {
    native,
    ctx,
    applier,
    close: () => {
      reads.close();
      native.close();
      db.close();
    },
  };
}

async function collect(pages: AsyncIterable<Change[]>): Promise<Change[][]> {
  const out: Change[][] = [];
  for await (const p of pages) out.push(p);
  return out;
}

/** A complete resync: the kind's snapshot applied between resyncStart and resyncEnd; returns how many the sweep removed. */
function resync(child: Awaited<ReturnType<typeof node>>, pages: Change[][], languages: string[]): number {
  child.applier.resyncStart(true);
  for (const p of pages) child.applier.apply(p, { snapshot: true, fullResync: true, cursor: null, epoch: 'e' });
  return child.applier.resyncEnd({ cursor: 0, full: true, epoch: 'e', languages });
}

for (const kind of registry.all()) {
  const fx = fixtures[kind.kind];
  t.test(`replicated kind ${kind.kind}`, async (t) => {
    t.ok(fx, `a fixture for ${kind.kind} (a new kind gets one here)`);
    if (!fx) return;
    const dir = await tempDir(t);
    const parent = await node(dir, 'parent');
    t.teardown(parent.close);
    // The parent holds the entities as a mid-tier node does: applied, and logged for its children.
    if (fx.before) parent.applier.apply(fx.before, { snapshot: false, fullResync: false, cursor: null, epoch: 'e' });
    t.equal(parent.applier.apply(fx.changes, { snapshot: false, fullResync: false, cursor: null, epoch: 'e' }) > 0, true, 'the parent applied the changes');
    const logged = (await changelog.after(parent.ctx.reads, 0, 1000)).filter((r) => r.kind === kind.kind);
    t.ok(logged.length > 0, 'and logged them');

    for (const languages of [['de'], ['fr'], ['de-de', 'fr']]) {
      const label = languages.join('+');
      // Snapshot, filter, apply.
      const child = await node(dir, `child-${kind.kind}-${label}`);
      t.teardown(child.close);
      const pages = await collect(kind.source.snapshot(parent.ctx, languages));
      t.ok(
        pages.every((p) => p.length > 0 && p.every((c) => c.kind === kind.kind)),
        `${label}: snapshot pages hold only ${kind.kind} changes`,
      );
      resync(child, pages, languages);
      t.same(fx.read(child.native), fx.expected(languages, false), `${label}: the snapshot gives a child what its languages see`);
      // Idempotent: the same snapshot again changes nothing.
      const before = fx.read(child.native);
      resync(child, await collect(kind.source.snapshot(parent.ctx, languages)), languages);
      t.same(fx.read(child.native), before, `${label}: applying the snapshot again changes nothing`);

      // The tail: the parent's log entries through the kind's filter, applied in order.
      const tailChild = await node(dir, `tail-${kind.kind}-${label}`);
      t.teardown(tailChild.close);
      const rows = (await changelog.after(parent.ctx.reads, 0, 1000)).filter((r) => registry.sends(r, languages, true) && r.kind === kind.kind);
      const payloads = await kind.source.tail(parent.ctx, rows, languages);
      t.equal(payloads.length, rows.length, `${label}: the tail answers one payload (or null) per entry`);
      const changes = rows.flatMap((r, i) => (payloads[i] ? [{ seq: r.seq, kind: r.kind, key: r.key, op: r.op, payload: payloads[i]! }] : []));
      tailChild.applier.apply(changes, { snapshot: false, fullResync: false, cursor: 1, epoch: 'e' });
      t.same(fx.read(tailChild.native), fx.expected(languages, false), `${label}: the tail gives the same`);
      tailChild.applier.apply(changes, { snapshot: false, fullResync: false, cursor: 1, epoch: 'e' });
      t.same(fx.read(tailChild.native), fx.expected(languages, false), `${label}: applying the tail again changes nothing`);
    }

    if (fx.remove) {
      // Sweep: the parent removes one; the next complete resync removes it from a child that had it.
      const child = await node(dir, `sweep-${kind.kind}`);
      t.teardown(child.close);
      const languages = ['de', 'fr'];
      resync(child, await collect(kind.source.snapshot(parent.ctx, languages)), languages);
      t.same(fx.read(child.native), fx.expected(languages, false), 'before the removal');
      parent.applier.apply([fx.remove], { snapshot: false, fullResync: false, cursor: null, epoch: 'e' });
      const removed = resync(child, await collect(kind.source.snapshot(parent.ctx, languages)), languages);
      t.ok(removed >= 1, 'the resync removed something');
      t.same(fx.read(child.native), fx.expected(languages, true), 'the complete resync swept what the parent no longer has');
      const tombstones = (await changelog.after(child.ctx.reads, 0, 1000)).filter((r) => r.kind === kind.kind && r.op === 'delete');
      t.ok(tombstones.length >= 1, "and logged the removal for the child's own children");
    }
  });
}
