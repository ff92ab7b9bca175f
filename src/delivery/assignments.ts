import { createHash } from 'node:crypto';
import type { SqlConn } from '../db/exec.js';
import { isoTime as iso, placeholders } from '../db/sql.js';
import { languageMatches } from '../lib/languages.js';
import { fileUrl } from '../agent-api/checkin.js';
import type { Assignment, Assignments, Waiting } from '../agent-api/assignments.js';
import { effectiveInstallation, type Installation, type InstallationOverride } from './installation.js';
import type { Installer } from './installers.js';

/**
 * What every agent should install now (`GET /agent/v1/assignments`), the hot path:
 * each computer's answer is built once, hashed into its ETag and kept in memory
 * (bounded) until something it depends on changes, so a check-in with a current
 * ETag costs a map lookup and a 304.
 */

interface CacheEntry {
  gen: number;
  etag: string;
  body: string;
}

/** Assignment answers kept in memory, in bytes at most. */
const CACHE_BYTES = 64 * 1024 * 1024;

/** Strong and weak forms of each tag in an If-None-Match header. */
export function etagMatches(header: string | undefined, etag: string): boolean {
  if (!header) return false;
  if (header.trim() === '*') return true;
  return header.split(',').some((t) => t.trim().replace(/^W\//, '') === etag);
}

export class AssignmentAnswers {
  #cache = new Map<number, CacheEntry>();
  #cacheBytes = 0;
  /** Counts invalidations of single answers: an answer built across one is not kept. */
  #drops = 0;
  /** Bumped when something every computer's answer may depend on changes (policies, files, time). */
  #gen = 0;

  constructor(
    private readonly conn: SqlConn,
    private readonly nodeInstallation: () => Promise<Installation>,
  ) {}

  /** Files were verified, settings changed: every answer is rebuilt on its next request. */
  invalidateAll(): void {
    this.#gen++;
  }

  /** A computer's answer is built afresh at its next request. */
  drop(computerId: number): void {
    this.#drops++;
    const e = this.#cache.get(computerId);
    if (e) {
      this.#cacheBytes -= e.body.length;
      this.#cache.delete(computerId);
    }
  }

  /** This computer's answer: from memory while current, else built, hashed and kept. */
  async get(computerId: number | null): Promise<{ etag: string; body: string }> {
    if (computerId === null) return this.#emptyAnswer();
    const hit = this.#cache.get(computerId);
    if (hit && hit.gen === this.#gen) {
      // Most recently used last: eviction takes the first.
      this.#cache.delete(computerId);
      this.#cache.set(computerId, hit);
      return hit;
    }
    const gen = this.#gen;
    const drops = this.#drops;
    const body = JSON.stringify(await this.#build(computerId));
    const etag = `"${createHash('sha256').update(body).digest('base64url').slice(0, 27)}"`;
    const entry = { gen, etag, body };
    // Something changed while it was built: answer, but do not keep it.
    if (this.#drops !== drops) return entry;
    this.drop(computerId);
    this.#cache.set(computerId, entry);
    this.#cacheBytes += body.length;
    while (this.#cacheBytes > CACHE_BYTES) this.drop(this.#cache.keys().next().value!);
    return entry;
  }

  #empty: { etag: string; body: string } | null = null;
  #emptyAnswer() {
    if (!this.#empty) {
      const body = JSON.stringify({ items: [], policies: [], waitingForFiles: 0, waiting: [] } satisfies Assignments);
      this.#empty = { body, etag: `"${createHash('sha256').update(body).digest('base64url').slice(0, 27)}"` };
    }
    return this.#empty;
  }

  async #build(computerId: number): Promise<Assignments> {
    const now = Date.now();
    const node = await this.nodeInstallation();
    const rows = await this.conn.all<{
      policy_id: string;
      name: string;
      start_at: number;
      deadline_at: number | null;
      installation: string | null;
      update_id: string;
      kb: string | null;
      title: string;
      success_codes: string;
      reboot_codes: string;
      restart: string;
      state: string | null;
      download_failures: number | null;
      install_failures: number | null;
      retries_cleared_at: number | null;
    }>(
      `SELECT p.id AS policy_id, p.name, p.start_at, p.deadline_at, p.installation, u.id AS update_id, u.kb, u.title,
              u.success_codes, u.reboot_codes, u.restart, s.state, s.download_failures, s.install_failures, s.retries_cleared_at
       FROM delivery_targets t
       JOIN policies p ON p.id = t.policy_id AND p.enabled = 1 AND p.start_at <= ?
       JOIN updates u ON u.id = t.update_id AND u.expired = 0
       LEFT JOIN delivery_status s ON s.computer_id = t.computer_id AND s.update_id = t.update_id
       WHERE t.computer_id = ? AND t.applicable = 'required'
       ORDER BY t.update_id, coalesce(p.deadline_at, 9e15), p.start_at, p.id`,
      [now, computerId],
    );
    const langs = ((await this.conn.get<{ languages: string }>('SELECT languages FROM computers WHERE id = ?', [computerId]))?.languages ?? '')
      .split(',')
      .filter(Boolean);
    // One item per update: the policy with the earliest deadline delivers it. Updates
    // installed, waiting for a restart or at their retry ceiling are not offered.
    const seen = new Set<string>();
    const live: ((typeof rows)[number] & { settings: Installation })[] = [];
    const ceilinged: typeof live = [];
    for (const r of rows) {
      if (seen.has(r.update_id)) continue;
      seen.add(r.update_id);
      const settings = effectiveInstallation(node, r.installation ? (JSON.parse(r.installation) as InstallationOverride) : null);
      // Not applicable: the installers said so; offered again once the retries are cleared.
      if (r.state === 'installed' || r.state === 'pending-reboot' || r.state === 'not-applicable') continue;
      // The ceiling is the policy's now (raised, the update is offered again), not the one the status was stored under.
      if ((r.download_failures ?? 0) >= settings.retries.download || (r.install_failures ?? 0) >= settings.retries.install) {
        ceilinged.push({ ...r, settings });
        continue;
      }
      live.push({ ...r, settings });
    }
    const files = new Map<
      string,
      {
        sha256: string;
        size: number;
        name: string;
        language: string;
        installer: string | null;
        verified: boolean;
        fetched: boolean;
        failure: { error: string; nextTryAt: string | null } | null;
      }[]
    >();
    for (let i = 0; i < live.length; i += 400) {
      const part = live.slice(i, i + 400).map((r) => r.update_id);
      for (const f of await this.conn.all<{
        update_id: string;
        sha256: string;
        size: number;
        name: string;
        language: string;
        installer: string | null;
        state: string | null;
        last_error: string | null;
        next_attempt_at: number | null;
      }>(
        `SELECT f.update_id, f.sha256, f.size, f.name, f.language, f.installer, c.state, c.last_error, c.next_attempt_at FROM update_files f LEFT JOIN content_files c ON c.sha256 = f.sha256
         WHERE f.update_id IN (${placeholders(part)}) ORDER BY f.update_id, f.position`,
        part,
      )) {
        let l = files.get(f.update_id);
        if (!l) files.set(f.update_id, (l = []));
        l.push({
          sha256: f.sha256,
          size: Number(f.size),
          name: f.name,
          language: f.language,
          installer: f.installer,
          verified: f.state === 'verified',
          fetched: f.state !== null,
          failure: f.state === 'failed' ? { error: f.last_error ?? 'failed', nextTryAt: iso(f.next_attempt_at) } : null,
        });
      }
    }
    const items: Assignment[] = [];
    const used = new Map<string, Assignments['policies'][number]>();
    const waiting: Waiting[] = ceilinged.map((r) => ({
      updateId: r.update_id,
      policyId: r.policy_id,
      kb: r.kb,
      title: r.title,
      reason: 'retry-ceiling',
      files: 0,
      missing: 0,
      languages: langs,
      nodeError: null,
      nextTryAt: null,
    }));
    for (const r of live) {
      if (!used.has(r.policy_id))
        used.set(r.policy_id, { id: r.policy_id, name: r.name, startAt: iso(r.start_at)!, deadline: iso(r.deadline_at), installation: r.settings });
      // Only the files this computer needs: another language's file is never offered (a site may not even hold it).
      const mine = (files.get(r.update_id) ?? []).filter((f) => languageMatches(f.language, langs));
      const missing = mine.filter((f) => !f.verified);
      if (!mine.length || missing.length) {
        // Files the node does not fetch at all are in languages it does not manage (--languages).
        const unmanaged = [...new Set(missing.filter((f) => !f.fetched).map((f) => f.language))].sort();
        const all = files.get(r.update_id) ?? [];
        const reason = !all.length ? 'no-files' : !mine.length ? 'no-file-in-languages' : unmanaged.length ? 'languages-not-on-node' : 'files-not-on-node';
        const failure = missing.find((f) => f.failure)?.failure ?? null;
        waiting.push({
          updateId: r.update_id,
          policyId: r.policy_id,
          kb: r.kb,
          title: r.title,
          reason,
          files: mine.length,
          missing: missing.length,
          languages: reason === 'languages-not-on-node' ? unmanaged : langs,
          nodeError: failure?.error ?? null,
          nextTryAt: failure?.nextTryAt ?? null,
        });
        continue;
      }
      items.push({
        updateId: r.update_id,
        policyId: r.policy_id,
        kb: r.kb,
        title: r.title,
        files: mine.map((f) => ({
          url: fileUrl(f.sha256),
          sha256: f.sha256,
          size: f.size,
          name: f.name,
          language: f.language,
          installer: f.installer ? (JSON.parse(f.installer) as Installer) : null,
        })),
        successCodes: JSON.parse(r.success_codes) as number[],
        rebootCodes: JSON.parse(r.reboot_codes) as number[],
        restart: r.restart,
        deadline: iso(r.deadline_at),
        attempts: { download: Number(r.download_failures ?? 0), install: Number(r.install_failures ?? 0) },
        retriesClearedAt: iso(r.retries_cleared_at),
      });
    }
    return {
      items,
      policies: [...used.values()],
      waitingForFiles: waiting.filter((w) => w.reason === 'files-not-on-node' || w.reason === 'languages-not-on-node').length,
      waiting,
    };
  }
}
