/**
 * The applicability rule language (docs/rules.md), version 1: JSON trees of
 * `all` / `any` / `not` over leaf predicates about a computer's inventory. This
 * module fixes the syntax and validates it; the evaluator comes with assessment.
 * Validation is hand-written rather than a zod union: a catalog holds two rules per
 * update and 100,000 updates, and a keyed dispatch with exact paths is both faster
 * and clearer in its errors than trying every union member.
 */

export type Cmp = { eq?: string; ne?: string; lt?: string; lte?: string; gt?: string; gte?: string };
export type Arch = 'x86' | 'x64' | 'arm64';

export type Rule =
  | { all: Rule[] }
  | { any: Rule[] }
  | { not: Rule }
  | { always: boolean }
  | { product: string; version?: Cmp }
  | { kb: string }
  | { osVersion: Cmp }
  | { arch: Arch }
  | { language: string[] }
  | { file: { path: string; exists?: boolean; version?: Cmp } }
  | { registry: { key: string; value?: string; exists?: boolean; equals?: string | number; version?: Cmp } };

export const ARCHES: readonly Arch[] = ['x86', 'x64', 'arm64'];
const CMP_OPS = ['eq', 'ne', 'lt', 'lte', 'gt', 'gte'] as const;
const VERSION = /^\d+(\.\d+){0,3}$/;
const KB = /^\d{4,8}$/;
const MAX_DEPTH = 32;
const MAX_NODES = 2000;

export interface RuleIssue {
  path: string;
  message: string;
}

const isObj = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

/** Validates a rule; returns the first issue or null. `base` prefixes issue paths. */
export function validateRule(rule: unknown, base = ''): RuleIssue | null {
  const state = { nodes: 0 };
  return check(rule, base || '(rule)', 0, state);
}

function checkCmp(v: unknown, path: string): RuleIssue | null {
  if (!isObj(v)) return { path, message: 'expected a comparison object like {"lt": "10.0.22631.3007"}' };
  const keys = Object.keys(v);
  if (keys.length === 0) return { path, message: 'expected at least one of eq, ne, lt, lte, gt, gte' };
  for (const k of keys) {
    if (!(CMP_OPS as readonly string[]).includes(k)) return { path: `${path}.${k}`, message: `unknown comparison "${k}"` };
    const x = v[k];
    if (typeof x !== 'string' || !VERSION.test(x)) return { path: `${path}.${k}`, message: 'expected a dotted version like 10.0.22631.3007' };
  }
  return null;
}

function exactKeys(v: Record<string, unknown>, allowed: readonly string[], path: string): RuleIssue | null {
  for (const k of Object.keys(v)) if (!allowed.includes(k)) return { path: `${path}.${k}`, message: `unknown field "${k}"` };
  return null;
}

function nonEmptyString(v: unknown, path: string, max = 1000): RuleIssue | null {
  return typeof v === 'string' && v.length > 0 && v.length <= max ? null : { path, message: `expected a non-empty string of at most ${max} characters` };
}

function check(rule: unknown, path: string, depth: number, state: { nodes: number }): RuleIssue | null {
  if (++state.nodes > MAX_NODES) return { path, message: `rule has more than ${MAX_NODES} nodes` };
  if (depth > MAX_DEPTH) return { path, message: `rule nests deeper than ${MAX_DEPTH}` };
  if (!isObj(rule)) return { path, message: 'expected a rule object' };
  const keys = Object.keys(rule);
  const op = keys.find((k) => k !== 'version');
  if (!op) return { path, message: 'empty rule' };
  const v = rule[op];
  const p = `${path}.${op}`;
  if (op !== 'product' && keys.length !== 1) return { path, message: `a rule has exactly one operator, got ${keys.join(', ')}` };
  switch (op) {
    case 'all':
    case 'any': {
      if (!Array.isArray(v) || v.length === 0) return { path: p, message: 'expected a non-empty array of rules' };
      for (let i = 0; i < v.length; i++) {
        const issue = check(v[i], `${p}[${i}]`, depth + 1, state);
        if (issue) return issue;
      }
      return null;
    }
    case 'not':
      return check(v, p, depth + 1, state);
    case 'always':
      return typeof v === 'boolean' ? null : { path: p, message: 'expected true or false' };
    case 'product': {
      const issue = exactKeys(rule, ['product', 'version'], path) ?? nonEmptyString(v, p, 300);
      if (issue) return issue;
      return 'version' in rule ? checkCmp(rule.version, `${path}.version`) : null;
    }
    case 'kb':
      return typeof v === 'string' && KB.test(v) ? null : { path: p, message: 'expected a KB number like "5034123"' };
    case 'osVersion':
      return checkCmp(v, p);
    case 'arch':
      return typeof v === 'string' && (ARCHES as readonly string[]).includes(v) ? null : { path: p, message: `expected one of ${ARCHES.join(', ')}` };
    case 'language':
      if (!Array.isArray(v) || v.length === 0 || !v.every((x) => typeof x === 'string' && /^[a-z]{2,3}(-[a-z0-9]{2,8})*$/.test(x)))
        return { path: p, message: 'expected a non-empty array of language tags' };
      return null;
    case 'file': {
      if (!isObj(v)) return { path: p, message: 'expected {"path", "exists"?, "version"?}' };
      const issue = exactKeys(v, ['path', 'exists', 'version'], p) ?? nonEmptyString(v.path, `${p}.path`);
      if (issue) return issue;
      if ('exists' in v && typeof v.exists !== 'boolean') return { path: `${p}.exists`, message: 'expected true or false' };
      return 'version' in v ? checkCmp(v.version, `${p}.version`) : null;
    }
    case 'registry': {
      if (!isObj(v)) return { path: p, message: 'expected {"key", "value"?, "exists"?, "equals"?, "version"?}' };
      const issue = exactKeys(v, ['key', 'value', 'exists', 'equals', 'version'], p) ?? nonEmptyString(v.key, `${p}.key`);
      if (issue) return issue;
      if ('value' in v && (typeof v.value !== 'string' || v.value.length > 1000)) return { path: `${p}.value`, message: 'expected a string' };
      if ('exists' in v && typeof v.exists !== 'boolean') return { path: `${p}.exists`, message: 'expected true or false' };
      if ('equals' in v && typeof v.equals !== 'string' && typeof v.equals !== 'number') return { path: `${p}.equals`, message: 'expected a string or number' };
      return 'version' in v ? checkCmp(v.version, `${p}.version`) : null;
    }
    default:
      return { path: p, message: `unknown operator "${op}"` };
  }
}
