import t from 'tap';
import { readFileSync } from 'node:fs';
import { gunzipSync } from 'node:zlib';
import { join } from 'node:path';
import { FIXTURES } from '../helpers.js';
import { parseWsus, type WsusRow } from '../../src/catalog/convert/wsus.js';
import { catalogUpdateSchema, fromV1, updateSchemaOf } from '../../src/catalog/format.js';
import {
  EXIT,
  FILE_NAME,
  classify,
  combine,
  extractCommand,
  installCommand,
  installerFromV1,
  patchCommand,
  unsigned,
  type Installer,
} from '../../src/delivery/installers.js';
import { languageMatches as computerWantsFile } from '../../src/lib/languages.js';

/** Microsoft's command lines, written out here from the table, independent of installers.ts. */
const EXPECTED = {
  msu: (f: string) => `wusa.exe "${f}" /quiet /norestart`,
  cab: (f: string) => `dism.exe /online /add-package /packagepath:"${f}" /quiet /norestart`,
  expand: (f: string, d: string) => `expand.exe -F:* "${f}" "${d}"`,
  msp: (f: string) => `msiexec.exe /p "${f}" /qn /norestart`,
};
const STATE = 'C:\\ProgramData\\patchtree-agent';

t.test("the builder's command line for every file of the bundled WSUS data", async (t) => {
  let checked = 0;
  const kinds: Record<string, number> = {};
  for (const name of ['Windows-10-22H2', 'Windows-11-23H2', 'Office-2016']) {
    const text = gunzipSync(readFileSync(join(FIXTURES, 'wsus-osdsus', `${name}.json.gz`))).toString('utf8');
    const rows = JSON.parse(text) as WsusRow[];
    // Which product each file belongs to, from the raw rows: Office's cabs hold .msp patches.
    const office = new Map(rows.map((r) => [`${r.UpdateId}/${r.FileName}`, /^Office /.test(r.Catalog ?? '')]));
    const { updates, noInstaller } = parseWsus(text);
    t.equal(noInstaller, 0, `${name}: every file has an installer`);
    for (const u of updates) {
      t.ok(catalogUpdateSchema.safeParse(u).success, `${u.id} is a valid version-2 line`);
      for (const f of u.files) {
        const path = `${STATE}\\downloads\\${f.sha256}\\${f.name}`;
        const ext = f.name.toLowerCase().split('.').pop()!;
        const isOffice = office.get(`${u.id}/${f.name}`);
        t.ok(isOffice !== undefined, `${f.name} comes from the rows`);
        const installer = f.installer as Installer;
        if (ext === 'cab' && isOffice) {
          t.same(installer, { type: 'office-cab' }, `${f.name}: an Office cab`);
          const dir = `${STATE}\\work\\extract\\${f.sha256}`;
          t.equal(extractCommand(path, dir).line, EXPECTED.expand(path, dir));
          t.equal(patchCommand(`${dir}\\x.msp`).line, EXPECTED.msp(`${dir}\\x.msp`));
        } else {
          t.not(installer.type, 'office-cab');
          t.equal(
            installCommand(installer as Exclude<Installer, { type: 'office-cab' }>, path).line,
            EXPECTED[ext as 'msu' | 'cab' | 'msp'](path),
            `${f.name}: ${ext}`,
          );
        }
        kinds[installer.type] = (kinds[installer.type] ?? 0) + 1;
        checked++;
      }
    }
  }
  // Counted from the raw rows with an independent script: 14 + 6 Windows cabs and 282 Office cabs, each a distinct file of its update.
  t.same(kinds, { dism: 20, 'office-cab': 282 }, 'Windows cabs go to DISM, Office cabs are expanded');
  t.equal(checked, 302);
});

t.test('exit codes per tool, as Microsoft documents them', async (t) => {
  const cat = { successCodes: [0, 17], rebootCodes: [3010] };
  const cases: [Parameters<typeof classify>[0], number, string][] = [
    ['wusa', 0, 'installed'],
    ['wusa', 3010, 'reboot'],
    ['wusa', 1641, 'reboot'],
    ['wusa', 0x00240005, 'reboot'],
    ['wusa', 2359302, 'already-installed'],
    ['wusa', 0x80240017, 'not-applicable'],
    ['wusa', -2145124329, 'not-applicable'], // the same HRESULT, signed
    ['wusa', 1603, 'failed'],
    ['dism', 0x800f081e, 'not-applicable'],
    ['dism', 3010, 'reboot'],
    ['dism', 0x80240017, 'failed'], // wusa's code means nothing to DISM
    ['msiexec', 1642, 'not-applicable'],
    ['msiexec', 1641, 'reboot'],
    ['msiexec', 1603, 'failed'],
    ['expand', 0, 'installed'],
    ['expand', 1, 'failed'],
    ['catalog', 17, 'installed'],
    ['catalog', 3010, 'reboot'],
    ['catalog', 1641, 'failed'], // an exe's codes are the catalog's
  ];
  for (const [tool, code, want] of cases) t.equal(classify(tool, code, cat), want, `${tool} ${code}`);
  t.equal(unsigned(-2145124329), EXIT.WU_E_NOT_APPLICABLE);
  t.equal(combine(['not-applicable', 'installed']), 'installed', 'one step not applicable, the other installed');
  t.equal(combine(['not-applicable', 'not-applicable']), 'not-applicable');
  t.equal(combine(['installed', 'reboot']), 'reboot');
  t.equal(combine(['already-installed']), 'installed');
  t.equal(combine(['installed', 'failed']), 'failed');
});

t.test('command lines of the other kinds; file names', async (t) => {
  t.equal(installCommand({ type: 'msi' }, 'C:\\d\\x.msi').line, 'msiexec.exe /i "C:\\d\\x.msi" /qn /norestart');
  t.equal(installCommand({ type: 'exe', arguments: '/q /norestart' }, 'C:\\d\\ndp48.exe').line, '"C:\\d\\ndp48.exe" /q /norestart');
  t.equal(installCommand({ type: 'command', command: 'run "{file}" {file}' }, '/s/f.x').line, 'run "/s/f.x" /s/f.x');
  for (const ok of ['Windows10.0-KB5042056-x64-NDP48.cab', 'lip-sd-arab-pk.cab', 'ieawsdc-x-none.cab', 'kb1 (1).msu']) t.ok(FILE_NAME.test(ok), ok);
  for (const bad of ['a"b.msu', '..\\x.msu', 'dir/x.msu', 'x%PATH%.msu', 'CON', 'nul.txt', 'x.msu ', 'a$(id).msu', '`x`.msu', '-rf.msu', 'x\n.msu'])
    t.notOk(FILE_NAME.test(bad), JSON.stringify(bad));
});

t.test('a version-1 line reads as version 2', async (t) => {
  const v1 = {
    id: 'u1',
    revision: 1,
    kb: '5000001',
    bulletin: null,
    title: 'T',
    vendor: 'Microsoft',
    productFamily: 'Windows',
    product: 'P',
    classification: 'Updates',
    severity: null,
    cves: [],
    releaseDate: '2024-01-09',
    supersedes: [],
    restart: 'may',
    applicability: { product: 'P' },
    installed: { kb: '5000001' },
    install: { command: 'wusa.exe "{file}" /quiet /norestart', successCodes: [0], rebootCodes: [3010] },
    files: [
      { name: 'a.msu', url: 'http://v.example/a.msu', size: 1, sha256: 'a'.repeat(64), language: 'neutral' },
      { name: 'b.cab', url: 'http://v.example/b.cab', size: 1, sha256: 'b'.repeat(64), language: 'de-de' },
    ],
  };
  const r = updateSchemaOf(1).safeParse(v1);
  t.ok(r.success);
  t.same(r.data?.install, { successCodes: [0], rebootCodes: [3010] });
  t.same(
    r.data?.files.map((f) => f.installer),
    [{ type: 'wusa' }, { type: 'command', command: 'wusa.exe "{file}" /quiet /norestart' }],
    'the template where it fits the file, else the command as it was',
  );
  t.notOk(updateSchemaOf(2).safeParse(v1).success, 'a version-1 line is no version-2 line');
  t.same(
    fromV1({ ...v1, install: { ...v1.install, command: '' } } as never).files.map((f) => f.installer),
    [undefined, undefined],
    'no command: no installer',
  );
  t.same(installerFromV1('dism.exe /online /add-package /packagepath:"{file}" /quiet /norestart', 'x.cab'), { type: 'dism' });
});

t.test('which files a computer gets', async (t) => {
  t.ok(computerWantsFile('neutral', []), 'neutral: always');
  t.notOk(computerWantsFile('de-de', []), 'language unknown: neutral files only');
  t.ok(computerWantsFile('de-de', ['de-de']));
  t.ok(computerWantsFile('de', ['de-de']), 'a generic German file for a German (Germany) computer');
  t.ok(computerWantsFile('de-de', ['de']), 'a computer that says only "de"');
  t.notOk(computerWantsFile('de-at', ['de-de']), 'another region is another language');
  t.notOk(computerWantsFile('fr-fr', ['de-de', 'en-us']));
  t.ok(computerWantsFile('ga-ie', ['en-us', 'ga-ie']), "an Office language pack's language");
});
