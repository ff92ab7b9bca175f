import t from 'tap';
import { readFileSync } from 'node:fs';
import { gunzipSync } from 'node:zlib';
import { cvrfToUpdate, parseCvrf } from '../../src/catalog/convert/cvrf.js';
import { compareVersions, evaluate, facts, parseVersion, requiredProducts, FALSE, TRUE, UNKNOWN, type Inventory } from '../../src/assessment/evaluate.js';
import { stateOf } from '../../src/assessment/index.js';
import { CVRF } from '../helpers.js';

const W11 = 'Windows 11 Version 23H2 for x64-based Systems';
const jan = parseCvrf(gunzipSync(readFileSync(CVRF[1]!)).toString());
const kb5034123 = cvrfToUpdate(jan.fixes.get(`5034123|${W11}`)!);

function win11(build: string, over: Partial<Inventory> = {}): Inventory {
  return {
    os: { family: 'windows', name: W11, version: build, arch: 'x64', language: 'en-us' },
    products: [{ name: W11, version: build }],
    kbs: ['5033375'],
    ...over,
  };
}

t.test('versions compare part by part, missing parts as zero', async (t) => {
  const v = (s: string) => parseVersion(s)!;
  t.equal(compareVersions(v('10.0.22631.2861'), v('10.0.22631.3007')), -1);
  t.equal(compareVersions(v('10.0.22631.10'), v('10.0.22631.9')), 1, 'numeric, not lexical');
  t.equal(compareVersions(v('10.0.22631'), v('10.0.22631.0')), 0);
  t.equal(parseVersion('10.0.x'), null);
});

t.test('KB5034123 from the real January 2024 CVRF: required at 22631.2861, installed at 22631.3007', async (t) => {
  t.equal(kb5034123.kb, '5034123');
  const before = facts(win11('10.0.22631.2861'));
  t.equal(evaluate(kb5034123.applicability, before), TRUE, 'applies to Windows 11 23H2 x64');
  t.equal(evaluate(kb5034123.installed, before), FALSE, 'not installed below the fixed build');
  t.equal(stateOf(evaluate(kb5034123.applicability, before), evaluate(kb5034123.installed, before)), 'required');
  const after = facts(win11('10.0.22631.3007'));
  t.equal(stateOf(evaluate(kb5034123.applicability, after), evaluate(kb5034123.installed, after)), 'installed', 'the build reached counts as installed');
  const byKb = facts(win11('10.0.22631.2861', { kbs: ['KB5034123'] }));
  t.equal(stateOf(evaluate(kb5034123.applicability, byKb), evaluate(kb5034123.installed, byKb)), 'installed', 'the KB listed counts too (KB prefix ignored)');
  const win10 = facts({
    os: { family: 'windows', version: '10.0.19045.3803' },
    products: [{ name: 'Windows 10 Version 22H2 for x64-based Systems', version: '10.0.19045.3803' }],
    kbs: [],
  });
  t.equal(stateOf(evaluate(kb5034123.applicability, win10), evaluate(kb5034123.installed, win10)), 'not-applicable');
  t.same(requiredProducts(kb5034123.applicability), [W11.toLowerCase()], 'indexed by its product');
});

t.test('unknown facts are unknown, not false', async (t) => {
  const noKbs = facts(win11('10.0.22631.2861', { kbs: undefined }));
  t.equal(evaluate({ kb: '5034123' }, noKbs), UNKNOWN, 'KBs not collected');
  t.equal(evaluate(kb5034123.installed, noKbs), UNKNOWN, 'below the build and KBs unknown: cannot tell');
  t.equal(
    stateOf(evaluate(kb5034123.applicability, noKbs), evaluate(kb5034123.installed, noKbs)),
    'unknown',
    'reported as unknown, not as required or not applicable',
  );
  const reached = facts(win11('10.0.22631.3007', { kbs: undefined }));
  t.equal(evaluate(kb5034123.installed, reached), TRUE, 'any(): one true part decides');
  const noProducts = facts({ os: { family: 'windows' } });
  t.equal(evaluate(kb5034123.applicability, noProducts), UNKNOWN, 'products not collected');
  const noVersion = facts(win11('10.0.22631.2861', { products: [{ name: W11 }], kbs: [] }));
  t.equal(evaluate(kb5034123.installed, noVersion), UNKNOWN, 'product listed without its version');
  t.equal(evaluate({ not: { kb: '1' } }, noKbs), UNKNOWN, 'not unknown is unknown');
  t.equal(evaluate({ all: [{ always: false }, { kb: '1' }] }, noKbs), FALSE, 'all: one false decides');
  t.equal(evaluate({ all: [{ always: true }, { kb: '1' }] }, noKbs), UNKNOWN);
  t.equal(evaluate({ any: [{ always: false }, { kb: '1' }] }, noKbs), UNKNOWN);
  t.equal(evaluate({ arch: 'x64' }, facts({ os: { family: 'windows' } })), UNKNOWN, 'arch not reported');
  t.equal(evaluate({ language: ['de'] }, facts({ os: { family: 'windows', language: 'de-AT' } })), TRUE, 'de matches de-at');
  t.equal(evaluate({ language: ['de'] }, facts({ os: { family: 'windows', language: 'fr-fr' } })), FALSE);
});

t.test('files and registry', async (t) => {
  const f = facts({
    os: { family: 'windows' },
    files: [{ path: 'C:\\Windows\\System32\\ntoskrnl.exe', version: '10.0.22621.3007' }, { path: 'C:\\x.dll' }],
    registry: [{ key: 'HKLM\\Software\\Contoso\\', value: 'Version', data: '2.1.0' }, { key: 'HKLM\\Software\\Empty' }],
  });
  t.equal(evaluate({ file: { path: 'c:\\windows\\system32\\NTOSKRNL.EXE', version: { gte: '10.0.22621.3007' } } }, f), TRUE, 'paths are case-insensitive');
  t.equal(evaluate({ file: { path: 'C:\\Windows\\System32\\ntoskrnl.exe', version: { lt: '10.0.22621.3007' } } }, f), FALSE);
  t.equal(evaluate({ file: { path: 'C:\\x.dll', version: { gte: '1.0' } } }, f), UNKNOWN, 'present without a version');
  t.equal(evaluate({ file: { path: 'C:\\missing.dll', exists: false } }, f), TRUE);
  t.equal(evaluate({ file: { path: 'C:\\missing.dll' } }, f), FALSE);
  t.equal(evaluate({ file: { path: 'C:\\x.dll' } }, facts({ os: { family: 'windows' } })), UNKNOWN, 'files not collected');
  t.equal(evaluate({ registry: { key: 'HKLM\\Software\\Contoso', value: 'version', version: { gte: '2.0' } } }, f), TRUE);
  t.equal(evaluate({ registry: { key: 'HKLM\\Software\\Contoso', value: 'Version', equals: '2.1.0' } }, f), TRUE);
  t.equal(evaluate({ registry: { key: 'HKLM\\Software\\Contoso', value: 'Version', equals: '3' } }, f), FALSE);
  t.equal(evaluate({ registry: { key: 'HKLM\\Software\\Empty' } }, f), TRUE, 'a key alone');
  t.equal(evaluate({ registry: { key: 'HKLM\\Software\\Nope', exists: false } }, f), TRUE);
  t.equal(evaluate({ registry: { key: 'HKLM\\Software\\Nope' } }, facts({ os: { family: 'windows' } })), UNKNOWN, 'registry not collected');
});

t.test('the product index', async (t) => {
  t.same(requiredProducts({ all: [{ arch: 'x64' }, { product: 'A' }] }), ['a']);
  t.same(requiredProducts({ any: [{ product: 'A' }, { product: 'B' }] })?.sort(), ['a', 'b']);
  t.equal(requiredProducts({ any: [{ product: 'A' }, { osVersion: { gte: '10.0' } }] }), null, 'a part without a product: evaluated for everyone');
  t.equal(requiredProducts({ not: { product: 'A' } }), null);
});
