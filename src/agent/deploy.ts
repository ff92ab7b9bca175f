import { existsSync, rmSync } from 'node:fs';
import type { Assignment, Assignments } from '../agent-api/assignments.js';
import { installDecision } from '../delivery/installation.js';
import { formatExitCode } from '../delivery/installers.js';
import type { CheckIn } from './checkin.js';
import { Unreachable } from './connection.js';
import { sha256File, type Downloads } from './downloads.js';
import type { EventQueue } from './event-queue.js';
import { describeStep, runSteps } from './installer.js';
import type { PatchLog } from './log.js';
import { describeError, waitingText } from './status.js';
import type { AgentStore } from './store.js';

/**
 * The deploy task: check in (or, without the node, work from the last
 * assignments), then for each assigned update download its files (at any time)
 * and install them when a maintenance window or the deadline allows, counting
 * failed attempts against the policy's retry ceilings and reporting each step as
 * an event. Everything it does goes to the patch log.
 */

export interface DeployerOptions {
  store: AgentStore;
  log: PatchLog;
  checkIn: CheckIn;
  downloads: Downloads;
  events: EventQueue;
  /** Absolute: installers run here. */
  work: string;
  /** Seconds an installer may run before it is killed and counted as failed. */
  installTimeoutSeconds: number;
}

const localZone = () => Intl.DateTimeFormat().resolvedOptions().timeZone || 'UTC';

export class Deployer {
  /** Updates already said to be waiting (for a window, for files), by what they wait for (so it is logged once). */
  #waiting = new Map<string, string>();

  constructor(private readonly o: DeployerOptions) {}

  /** Checks in and delivers what is assigned; `offline` says why it worked from the last assignments. */
  async deploy(signal: AbortSignal, step: (s: string) => void): Promise<{ offline: string | null }> {
    const { checkIn, store, log } = this.o;
    let offline: string | null = null;
    step('checking in');
    let assignments: Assignments;
    try {
      // A quiet check-in is one 304: the configuration is read by scans, and here
      // only when it is an hour old.
      const lastConfig = store.get<string>('configAt');
      if (!lastConfig || Date.now() - Date.parse(lastConfig) > 3_600_000) await checkIn.config(signal);
      assignments = await checkIn.assignments(signal);
    } catch (err) {
      // Without the node, what was assigned before is still installed on schedule.
      const cached = checkIn.cachedAssignments();
      if (!(err instanceof Unreachable) || !cached) throw err;
      log.write(`check-in failed (${(err as Error).message}); working from the last assignments`);
      offline = describeError(err);
      assignments = cached.body;
    }
    // Said once per reason; a ceiling was said when it was reached.
    for (const w of assignments.waiting ?? []) {
      if (w.reason === 'retry-ceiling') continue;
      const kb = w.kb ? `KB${w.kb}` : w.updateId;
      const text = waitingText(w);
      if (this.#waiting.get(w.updateId) !== text) {
        this.#waiting.set(w.updateId, text);
        log.write(w.reason === 'no-file-in-languages' ? `${kb}: assigned, but not for this computer: ${text}` : `${kb}: assigned, waiting for ${text}`);
      }
    }
    let installed = 0;
    for (const item of assignments.items) {
      if (signal.aborted) break;
      const policy = assignments.policies.find((p) => p.id === item.policyId);
      if (!policy) continue;
      if (await this.#deliver(item, policy, signal, step)) installed++;
      if (checkIn.progress()[item.updateId]?.settled) this.o.downloads.remove(item, assignments.items, checkIn.progress());
    }
    if (installed) {
      // The next scan shows the node what is installed now.
      store.put('scanRequested', true);
    }
    return { offline };
  }

  /** Downloads and (when allowed) installs one update; true when something installed. */
  async #deliver(item: Assignment, policy: Assignments['policies'][number], signal: AbortSignal, step: (s: string) => void): Promise<boolean> {
    const kb = item.kb ? `KB${item.kb}` : item.updateId;
    let c = this.o.store.counters(item.updateId);
    const cleared = Boolean(item.retriesClearedAt && item.retriesClearedAt !== c.clearedAt);
    if (cleared) {
      c = { download: 0, install: 0, clearedAt: item.retriesClearedAt, ceilingReported: false };
      this.o.store.setCounters(item.updateId, c);
      this.o.log.write(`${kb}: retry counts cleared by the node`);
    }
    // Installed, restart pending or not applicable here: not run again (the node stops listing it once it has the events).
    const done = this.o.checkIn.progress()[item.updateId];
    if (done?.settled && !cleared && (done.clearedAt ?? null) === item.retriesClearedAt) return false;
    const ceilings = policy.installation.retries;
    // Said once, as soon as a failure reaches the ceiling (the node stops offering
    // the update when it counts the same failures, so there may be no next time).
    const atCeiling = (): boolean => {
      if (c.download < ceilings.download && c.install < ceilings.install) return false;
      const what = c.download >= ceilings.download ? `${c.download} failed downloads` : `${c.install} failed installs`;
      this.o.checkIn.setProgress(item.updateId, {
        state: 'ceiling-reached',
        waitingFor: `the retry counts to be cleared (retry ceiling reached after ${what}): patchtree agent clear-retries, or the node's clear`,
      });
      if (!c.ceilingReported) {
        this.o.log.write(`${kb}: retry ceiling reached after ${what}; not trying it again until the retry counts are cleared`);
        this.o.events.add(item, 'ceiling-reached', Math.max(c.download, c.install), { message: what });
        c = { ...c, ceilingReported: true };
        this.o.store.setCounters(item.updateId, c);
      }
      return true;
    };
    if (atCeiling()) return false;
    const downloadFailed = (message: string): false => {
      c = { ...c, download: c.download + 1 };
      this.o.store.setCounters(item.updateId, c);
      this.o.events.add(item, 'download-failed', c.download, { message });
      this.o.checkIn.setProgress(item.updateId, {
        state: 'failed',
        waitingFor: `the next try (download attempt ${c.download} of ${ceilings.download} failed)`,
        lastError: message,
      });
      atCeiling();
      return false;
    };
    // Download (at any time), then install when a window or the deadline allows.
    step(`downloading ${kb}`);
    const paths: string[] = [];
    for (const f of item.files) {
      let path: string;
      try {
        path = this.o.downloads.path(f);
      } catch (err) {
        this.o.log.write(`${kb}: ${(err as Error).message}`);
        return downloadFailed((err as Error).message);
      }
      if (!existsSync(path)) {
        const attempt = c.download + 1;
        this.o.events.add(item, 'download-started', attempt);
        this.o.checkIn.setProgress(item.updateId, { state: 'downloading', waitingFor: `${f.name} (${f.size} bytes) from the node` });
        try {
          await this.o.downloads.fetch(f, path, signal);
          this.o.events.add(item, 'download-completed', attempt);
          this.o.log.write(`${kb}: downloaded ${f.name} (${f.size} bytes, sha256 verified)`);
        } catch (err) {
          if (signal.aborted) throw err;
          const why = describeError(err);
          this.o.log.write(`${kb}: download of ${f.name} failed (attempt ${attempt} of ${ceilings.download}): ${why}`);
          return downloadFailed(`${f.name}: ${why}`);
        }
      }
      paths.push(path);
    }
    const d = installDecision(
      policy.installation,
      { startAt: new Date(policy.startAt), deadline: policy.deadline ? new Date(policy.deadline) : null },
      new Date(),
      localZone(),
    );
    if (!d.install) {
      const next = d.next ? d.next.toISOString() : 'no window in the next week';
      const until = `a maintenance window (${d.reason}; next opens ${next})${policy.deadline ? ` or the deadline ${policy.deadline}` : ''}`;
      this.o.checkIn.setProgress(item.updateId, { state: 'downloaded', waitingFor: until });
      if (this.#waiting.get(item.updateId) !== next) {
        this.#waiting.set(item.updateId, next);
        this.o.log.write(`${kb}: downloaded; waiting for a maintenance window to install (${d.reason}; next: ${next})`);
      }
      return false;
    }
    this.#waiting.delete(item.updateId);
    // Verified again right before the install: nothing tampered with since the download runs.
    for (const [i, f] of item.files.entries()) {
      const got = await sha256File(paths[i]!);
      if (got !== f.sha256) {
        rmSync(paths[i]!, { force: true });
        this.o.log.write(`${kb}: ${f.name} refused before install: sha256 is ${got}, expected ${f.sha256}; deleted`);
        return downloadFailed(`sha256 mismatch before install: ${got}`);
      }
    }
    step(`installing ${kb}`);
    const attempt = c.install + 1;
    const installFailed = (message: string, exitCode: number | null): false => {
      c = { ...c, install: c.install + 1 };
      this.o.store.setCounters(item.updateId, c);
      this.o.events.add(item, 'install-failed', attempt, { ...(exitCode !== null ? { exitCode } : {}), message });
      this.o.checkIn.setProgress(item.updateId, {
        state: 'failed',
        waitingFor: `the next try (install attempt ${attempt} of ${ceilings.install} failed)`,
        lastError: message,
      });
      atCeiling();
      return false;
    };
    this.o.events.add(item, 'install-started', attempt);
    this.o.checkIn.setProgress(item.updateId, { state: 'installing', waitingFor: null });
    const why = d.reason === 'deadline' ? 'deadline passed' : d.reason === 'window' ? 'inside a maintenance window' : 'any time allowed';
    const runnable = item.files.filter((f) => f.installer).length;
    if (!runnable) {
      const message = `the catalog names no installer for ${item.files.map((f) => f.name).join(', ') || 'any file'}; nothing can install it`;
      this.o.log.write(`${kb}: install failed (attempt ${attempt} of ${ceilings.install}): ${message}`);
      return installFailed(message, null);
    }
    this.o.log.write(`${kb}: installing (attempt ${attempt} of ${ceilings.install}, ${why}): ${runnable} file(s) to install`);
    let n = 0;
    const r = await runSteps(item, paths, {
      work: this.o.work,
      timeoutSeconds: this.o.installTimeoutSeconds,
      signal,
      onStep: (cmd) => this.o.log.write(`${kb}: step ${++n}: ${cmd.line}`),
      onResult: (s) => this.o.log.write(`${kb}: step ${n}: ${describeStep(s)}`),
    });
    if (signal.aborted) throw signal.reason as Error;
    const exit = r.code !== null ? { exitCode: r.code } : {};
    const code = r.code === null ? '' : ` (exit code ${formatExitCode(r.code)})`;
    switch (r.result) {
      case 'installed':
        this.o.events.add(item, 'install-succeeded', attempt, { ...exit, message: r.summary });
        this.o.checkIn.setProgress(item.updateId, { state: 'installed', waitingFor: null, lastError: null, settled: true, clearedAt: item.retriesClearedAt });
        this.o.log.write(`${kb}: installed${code}`);
        return true;
      case 'reboot':
        this.o.events.add(item, 'reboot-pending', attempt, { ...exit, message: r.summary });
        this.o.checkIn.setProgress(item.updateId, {
          state: 'reboot-pending',
          waitingFor: 'a restart of this computer',
          lastError: null,
          settled: true,
          clearedAt: item.retriesClearedAt,
        });
        this.o.log.write(
          `${kb}: installed, restart required (${r.code === null ? 'no exit code' : `exit code ${formatExitCode(r.code)}`}; restart mode ${policy.installation.restart.mode})`,
        );
        return true;
      case 'not-applicable':
        // No attempt counted: nothing failed, the update is not for this computer.
        this.o.events.add(item, 'install-not-applicable', attempt, { ...exit, message: r.summary });
        this.o.checkIn.setProgress(item.updateId, {
          state: 'not-applicable',
          waitingFor: null,
          lastError: null,
          settled: true,
          clearedAt: item.retriesClearedAt,
        });
        this.o.log.write(`${kb}: not applicable to this computer${code}: no step applied`);
        return false;
      case 'failed': {
        const failed = r.steps.find((s) => s.outcome === 'failed');
        const message = `${failed ? describeStep(failed) : r.summary}${failed?.output ? `; output: ${failed.output}` : ''}`;
        const cause = failed?.why ?? (r.code === null ? 'no exit code' : `exit code ${formatExitCode(r.code)}`);
        this.o.log.write(`${kb}: install failed (attempt ${attempt} of ${ceilings.install}): ${cause}${failed?.output ? `; output: ${failed.output}` : ''}`);
        return installFailed(message, r.code);
      }
    }
  }
}
