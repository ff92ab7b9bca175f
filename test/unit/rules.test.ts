import t from 'tap';
import { validateRule } from '../../src/catalog/rules.js';

t.test('valid rules', async (t) => {
  const good = [
    { product: 'Windows 11 Version 23H2 for x64-based Systems' },
    { product: 'Microsoft Office 2016 (32-bit edition)', version: { gte: '16.0.5435.1001' } },
    { any: [{ kb: '5034123' }, { osVersion: { gte: '10.0.22631.3007' } }] },
    { all: [{ arch: 'x64' }, { not: { language: ['de', 'fr'] } }, { always: true }] },
    { file: { path: '%windir%\\system32\\ntoskrnl.exe', version: { lt: '10.0.22631.3007' } } },
    { registry: { key: 'HKLM\\SOFTWARE\\Microsoft\\Office\\16.0', value: 'Version', exists: true } },
    { registry: { key: 'HKLM\\X', value: 'Y', equals: 3 } },
  ];
  for (const r of good) t.equal(validateRule(r), null, JSON.stringify(r));
});

t.test('invalid rules name the path', async (t) => {
  const cases: [unknown, string][] = [
    [{}, '(rule)'],
    [{ all: [] }, '(rule).all'],
    [{ all: [{ kb: 'KB5034123' }] }, '(rule).all[0].kb'],
    [{ any: [{ kb: '5034123' }, { osVersion: { lt: '10.x' } }] }, '(rule).any[1].osVersion.lt'],
    [{ osVersion: { newer: '1.0' } }, '(rule).osVersion.newer'],
    [{ arch: 'mips' }, '(rule).arch'],
    [{ kb: '5034123', arch: 'x64' }, '(rule)'],
    [{ product: 'X', flavour: 'y' }, '(rule).flavour'],
    [{ file: { path: 'a', size: 1 } }, '(rule).file.size'],
    [{ bogus: 1 }, '(rule).bogus'],
    [[], '(rule)'],
  ];
  for (const [rule, path] of cases) t.equal(validateRule(rule)?.path, path, JSON.stringify(rule));
});

t.test('depth and size limits', async (t) => {
  let deep: unknown = { kb: '5034123' };
  for (let i = 0; i < 40; i++) deep = { not: deep };
  t.match(validateRule(deep)?.message, /deeper than/);
  const wide = { any: Array.from({ length: 3000 }, () => ({ kb: '5034123' })) };
  t.match(validateRule(wide)?.message, /more than 2000 nodes/);
});
