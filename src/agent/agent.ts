import { createHash, randomUUID } from 'node:crypto';
import { createReadStream, createWriteStream, existsSync, mkdirSync, renameSync, rmSync, statSync, chmodSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { hostname } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { CatalogIndex } from '../assessment/catalog-index.js';
import { facts, type Inventory } from '../assessment/evaluate.js';
import { installDecision, type Installation } from '../delivery/installation.js';
import { assignmentsSchema, type AssignedFile, type Assignment, type Assignments } from '../agent-api/assignments.js';
import { FILE_NAME, formatExitCode } from '../delivery/installers.js';
import type { EventType } from '../agent-api/events.js';
import { describeStep, runSteps } from './installer.js';
import { fetchPinnedCa, fetchTrusting, readPinnedCa, writePinnedCa, type Fetch } from './trust.js';
import { splitPinnedToken } from '../tls/pin.js';
import { describeError, updateStatuses, waitingText, type Progress } from './status.js';
import { AgentStore, readCredentials, writeCredentials, type Credentials, type QueuedEvent } from './store.js';
import { PatchLog } from './log.js';
import type { InventoryProvider } from './inventory.js';
import { controlPath } from './control.js';

/**
 * The patchtree agent: enrols once, then on its own schedule scans (inventory,
 * local evaluation with the shared evaluator, upload), checks in (config and
 * assignments with ETags), downloads (resumed with Range, verified by SHA-256),
 * installs inside the allowed windows or by deadline, and reports events through
 * a durable queue. Patch tasks run one at a time and can be started and stopped
 * through the control socket; everything they do goes to the patch log.
 */

export interface AgentOptions {
  server: string;
  state: string;
  enrollmentToken?: string | undefined;
  inventory: InventoryProvider;
  name?: string | undefined;
  /** Seconds between check-ins (the deploy task's schedule). */
  intervalSeconds: number;
  /** Seconds an installer may run before it is killed and counted as failed. */
  installTimeoutSeconds: number;
  /** Plain HTTP allowed (a lab): an enrolment token's CA pin is then not used. */
  insecure?: boolean;
  version: string;
}

export type TaskName = 'scan' | 'deploy';

export const TASKS: Record<TaskName, { description: string; schedule: string; scan: boolean; deploy: boolean }> = {
  scan: { description: 'Scan only: collect the inventory, evaluate it against the catalog, report it', schedule: 'every scan interval set by the node', scan: true, deploy: false },
  deploy: { description: 'Scan and deploy: check in, scan when due, download and install what the policies assign', schedule: 'every check-in interval', scan: true, deploy: true },
};

interface ConfigDoc {
  scanIntervalMinutes: number;
  installation: Installation;
  nodeTime: string;
}

interface ScanResult {
  at: string;
  required: number;
  unknown: number;
  bySeverity: Record<string, number>;
}

class Unreachable extends Error {}
class Revoked extends Error {}

const jitter = (ms: number) => Math.round(ms * (0.5 + Math.random()));
const localZone = () => Intl.DateTimeFormat().resolvedOptions().timeZone || 'UTC';

async function sha256File(path: string): Promise<string> {
  const h = createHash('sha256');
  await pipeline(createReadStream(path), h);
  return h.digest('hex');
}

export class Agent {
  readonly store: AgentStore;
  readonly log: PatchLog;
  #creds: Credentials | null;
  #stopping = false;
  #loopDone: Promise<void> = Promise.resolve();
  /** Aborted by stop(): ends a request of the loop's own (sending events) at once. */
  readonly #stopCtl = new AbortController();
  #wake: (() => void) | null = null;
  #running: { name: TaskName; trigger: string; startedAt: string; ctl: AbortController; step: string; done: Promise<void> } | null = null;
  #control: Server | null = null;
  #flushBackoff = 0;
  #checkinBackoff = 0;
  /** Set by a deploy that could not check in and worked from the last assignments. */
  #offline: string | null = null;
  #nextCheckin = 0;
  #nextFlush = 0;
  #lastError: string | null = null;
  /** Updates already said to be waiting for a window, by the instant they wait for (so it is logged once). */
  #waiting = new Map<string, string>();

  /** Absolute: every command line names its files by absolute path. */
  readonly #downloads: string;
  readonly #work: string;
  #flushing: Promise<void> | null = null;
  /** Fetch that trusts the pinned CA of the node (ca.pem), else the system's CAs. */
  #http: Fetch;
  #flushTimer: NodeJS.Timeout | null = null;

  constructor(private readonly o: AgentOptions) {
    mkdirSync(o.state, { recursive: true, mode: 0o700 });
    this.#downloads = resolve(o.state, 'downloads');
    this.#work = resolve(o.state, 'work');
    mkdirSync(this.#downloads, { recursive: true });
    mkdirSync(this.#work, { recursive: true });
    this.store = new AgentStore(o.state);
    this.log = new PatchLog(o.state);
    this.#creds = readCredentials(o.state);
    this.#http = fetchTrusting(readPinnedCa(o.state));
  }

  /* ---------------- node API ---------------- */

  async #fetch(path: string, init: RequestInit & { timeoutMs?: number } = {}, signal?: AbortSignal): Promise<Response> {
    const creds = this.#creds!;
    const signals = [AbortSignal.timeout(init.timeoutMs ?? 60_000), ...(signal ? [signal] : [])];
    let res: Response;
    try {
      res = await this.#http(new URL(path, creds.server), { ...init, headers: { authorization: `Bearer ${creds.secret}`, ...(init.headers as Record<string, string>) }, signal: AbortSignal.any(signals) });
    } catch (err) {
      if (signal?.aborted) throw err;
      throw new Unreachable(`${creds.server} unreachable: ${describeError(err)}`);
    }
    // The node answers: events held back by a backoff can go now.
    if (this.#flushBackoff) {
      this.#flushBackoff = 0;
      this.#nextFlush = 0;
      if (this.store.queued()) this.#kickFlush();
    }
    if (res.status === 401) {
      await res.body?.cancel();
      throw new Revoked('the node refused this agent\'s credentials (revoked?): enrol again with --enrollment-token');
    }
    if (res.status >= 500) {
      const text = await res.text();
      throw new Unreachable(`${path}: HTTP ${res.status} ${text.slice(0, 200)}`);
    }
    return res;
  }

  async #json<T>(path: string, init: RequestInit = {}, signal?: AbortSignal): Promise<T> {
    const res = await this.#fetch(path, { ...init, headers: { 'content-type': 'application/json', ...(init.headers as Record<string, string>) } }, signal);
    const text = await res.text();
    if (!res.ok) throw new Error(`${init.method ?? 'GET'} ${path}: HTTP ${res.status} ${text.slice(0, 300)}`);
    return JSON.parse(text) as T;
  }

  async enroll(token: string | undefined): Promise<Credentials> {
    if (this.#creds) return this.#creds;
    if (!token) throw new Error(`this agent is not enrolled: give --enrollment-token (state ${this.o.state})`);
    const name = this.o.name ?? hostname();
    // A token that pins the node's CA: fetch the CA, check it, and trust it alone from now on.
    const { caSha256 } = splitPinnedToken(token);
    if (caSha256 && !(this.o.insecure && this.o.server.startsWith('http:'))) {
      const ca = await fetchPinnedCa(this.o.server, caSha256);
      writePinnedCa(this.o.state, ca);
      this.#http = fetchTrusting(ca);
      this.log.write(`the node's CA matches the enrolment token (sha256 ${caSha256}); trusting it alone`);
    }
    const res = await this.#http(new URL('/agent/v1/enroll', this.o.server), { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ enrollmentToken: token, name, agentVersion: this.o.version }) });
    const body = (await res.json()) as { agentId?: string; secret?: string; detail?: string };
    if (res.status !== 201 || !body.agentId || !body.secret) throw new Error(`enrolment refused: HTTP ${res.status} ${body.detail ?? ''}`);
    this.#creds = { server: this.o.server, agentId: body.agentId, secret: body.secret, enrolledAt: new Date().toISOString() };
    writeCredentials(this.o.state, this.#creds);
    this.log.write(`enrolled with ${this.o.server} as ${name} (agent ${body.agentId})`);
    return this.#creds;
  }

  /* ---------------- the loop ---------------- */

  async run(): Promise<void> {
    let done!: () => void;
    this.#loopDone = new Promise<void>((r) => (done = r));
    try {
      await this.#loop();
    } finally {
      done();
    }
  }

  async #loop(): Promise<void> {
    await this.enroll(this.o.enrollmentToken);
    await this.#listen();
    this.log.write(`agent started (version ${this.o.version}, inventory ${this.o.inventory.name}, check-in every ${this.o.intervalSeconds} s)`);
    while (!this.#stopping) {
      const now = Date.now();
      if (!this.#running) {
        try {
          if (this.#scanDue(now)) await this.#start('scan', 'schedule').done;
          if (!this.#stopping && now >= this.#nextCheckin) await this.#start('deploy', 'schedule').done;
        } catch {
          /* the task logged it */
        }
      }
      if (!this.#stopping && now >= this.#nextFlush) await this.flushEvents();
      const until = Math.min(this.#nextCheckin, this.#nextScan(), this.store.queued() ? this.#nextFlush : Infinity);
      await this.#sleep(Math.max(50, Math.min(until - Date.now(), 60_000)));
    }
  }

  #sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const t = setTimeout(done, ms);
      const self = this;
      function done() {
        clearTimeout(t);
        self.#wake = null;
        resolve();
      }
      this.#wake = done;
    });
  }

  #nextScan(): number {
    const cfg = this.store.get<ConfigDoc>('config');
    const last = this.store.get<ScanResult>('lastScan');
    if (!last || this.store.get<boolean>('scanRequested')) return 0;
    return Date.parse(last.at) + (cfg?.scanIntervalMinutes ?? 1440) * 60_000;
  }

  /** A scan is due by the interval (or asked for), unless the node is away and the backoff not over. */
  #scanDue(now: number): boolean {
    return this.#nextScan() <= now && (this.#checkinBackoff === 0 || now >= this.#nextCheckin);
  }

  async stop(): Promise<void> {
    this.#stopping = true;
    this.#stopCtl.abort();
    this.#running?.ctl.abort(new Error('the agent is stopping'));
    await this.#running?.done.catch(() => {});
    this.#wake?.();
    if (this.#flushTimer) clearTimeout(this.#flushTimer);
    await this.#loopDone; // the loop may be sending events: the store stays open until it is out
    await this.#flushing;
    await new Promise<void>((r) => (this.#control ? this.#control.close(() => r()) : r()));
    this.log.write('agent stopped');
    this.store.close();
  }

  /* ---------------- tasks ---------------- */

  #start(name: TaskName, trigger: string): { done: Promise<void> } {
    if (this.#running) throw new Error(`task "${this.#running.name}" is running; stop it first`);
    const ctl = new AbortController();
    const startedAt = new Date().toISOString();
    this.log.write(`task ${name} started (${trigger})`);
    const task = { name, trigger, startedAt, ctl, step: 'starting', done: Promise.resolve() };
    task.done = (async () => {
      try {
        this.#offline = null;
        if (name === 'scan') await this.#scan(ctl.signal, (s) => (task.step = s));
        else await this.#deploy(ctl.signal, (s) => (task.step = s));
        // Worked from the last assignments: the node is still away, and the status says why.
        if (!this.#offline) this.#checkinBackoff = 0;
        this.#setLastError(this.#offline);
        this.log.write(`task ${name} finished`);
      } catch (err) {
        if (ctl.signal.aborted) {
          const reason = (ctl.signal.reason as Error | undefined)?.message ?? 'stopped';
          this.log.write(`task ${name} stopped during ${task.step}: ${reason}`);
        } else {
          this.#setLastError(describeError(err));
          if (err instanceof Unreachable) {
            this.#checkinBackoff = Math.min(Math.max(this.#checkinBackoff * 2, 1000), 300_000);
            this.log.write(`task ${name} failed: ${(err as Error).message}; next try in about ${Math.round(this.#checkinBackoff / 1000)} s`);
          } else this.log.write(`task ${name} failed: ${(err as Error).message}`);
          throw err;
        }
      } finally {
        if (name === 'deploy' || this.#checkinBackoff) this.#nextCheckin = Date.now() + (this.#checkinBackoff ? jitter(this.#checkinBackoff) : jitter(this.o.intervalSeconds * 1000));
        this.#running = null;
      }
    })();
    this.#running = task;
    task.done.catch(() => {});
    return task;
  }

  #setLastError(e: string | null): void {
    if (e === this.#lastError) return;
    this.#lastError = e;
    this.store.put('lastError', e);
  }

  /** Starts a task by hand (control socket); it runs in the background. */
  runTask(name: string): { started: TaskName } {
    if (!(name in TASKS)) throw new Error(`no task "${name}"; tasks: ${Object.keys(TASKS).join(', ')}`);
    this.#start(name as TaskName, 'started by hand');
    return { started: name as TaskName };
  }

  /** Stops the running task; says so when none runs. */
  stopTask(): { stopped: string | null; message: string } {
    if (!this.#running) {
      this.log.write('stop requested: no task was running');
      return { stopped: null, message: 'no task is running' };
    }
    const name = this.#running.name;
    this.#running.ctl.abort(new Error('stopped by user'));
    return { stopped: name, message: `task ${name} stopped` };
  }

  /** Check in now: fetch config and assignments (and scan at the next turn). */
  async updateData(): Promise<{ assignments: number; waiting: number; scanIntervalMinutes: number }> {
    const cfg = await this.#config();
    const a = await this.#assignments();
    this.log.write(`patch data updated by hand: ${a.items.length} assignment(s), ${a.waiting.length} waiting`);
    this.store.put('scanRequested', true);
    this.#wake?.();
    return { assignments: a.items.length, waiting: a.waiting.length, scanIntervalMinutes: cfg.scanIntervalMinutes };
  }

  /** Resets the retry counters here and on the node. */
  async clearRetries(by: string): Promise<{ cleared: number }> {
    const cleared = this.store.clearCounters();
    this.store.put('progress', {}); // what was settled or failed is tried again
    this.log.write(`retry counts cleared (${by}): ${cleared} update(s)`);
    try {
      await this.#json('/agent/v1/retries/clear', { method: 'POST', body: '{}' });
    } catch (err) {
      this.log.write(`the node could not be told of the cleared retry counts yet: ${(err as Error).message}`);
    }
    this.store.put('assignments', null); // fetch them afresh
    this.#nextCheckin = 0;
    this.#wake?.();
    return { cleared };
  }

  status() {
    const cfg = this.store.get<ConfigDoc>('config');
    const a = this.#cachedAssignments();
    return {
      agentId: this.#creds?.agentId ?? null,
      server: this.#creds?.server ?? this.o.server,
      running: true,
      task: this.#running ? { name: this.#running.name, trigger: this.#running.trigger, startedAt: this.#running.startedAt, step: this.#running.step } : null,
      lastScan: this.store.get<ScanResult>('lastScan'),
      lastCheckIn: this.store.get<string>('lastCheckIn'),
      nextCheckIn: this.#nextCheckin ? new Date(this.#nextCheckin).toISOString() : null,
      scanIntervalMinutes: cfg?.scanIntervalMinutes ?? null,
      assignments: a?.body.items.length ?? 0,
      waitingForFiles: a?.body.waitingForFiles ?? 0,
      eventsQueued: this.store.queued(),
      retries: this.store.allCounters().filter((c) => c.download > 0 || c.install > 0),
      lastError: this.#lastError,
      updates: updateStatuses(a?.body ?? null, this.#progress()),
    };
  }

  /* ---------------- scan ---------------- */

  async #config(signal?: AbortSignal): Promise<ConfigDoc> {
    const cfg = await this.#json<ConfigDoc>('/agent/v1/config', {}, signal);
    const skew = Date.parse(cfg.nodeTime) - Date.now();
    if (Math.abs(skew) > 5 * 60_000) this.log.write(`warning: this computer's clock is ${Math.round(skew / 1000)} s off the node's`);
    this.store.put('config', cfg);
    this.store.put('configAt', new Date().toISOString());
    this.store.put('lastCheckIn', new Date().toISOString());
    return cfg;
  }

  async #scan(signal: AbortSignal, step: (s: string) => void): Promise<void> {
    step('configuration');
    await this.#config(signal);
    step('inventory');
    const inv = await this.o.inventory.collect(signal);
    step('uploading the inventory');
    const creds = this.#creds!;
    await this.#json('/agent/v1/inventory', { method: 'POST', body: JSON.stringify({ agentKey: creds.agentId, name: this.o.name ?? hostname(), agentVersion: this.o.version, full: inv }) }, signal);
    step('evaluating');
    const result = await this.#evaluate(inv, signal);
    this.store.put('lastScan', result);
    this.store.put('scanRequested', false);
    const sev = Object.entries(result.bySeverity).map(([k, v]) => `${k} ${v}`).join(', ');
    this.log.write(`scan: ${result.required} update(s) required${sev ? ` (${sev})` : ''}, ${result.unknown} undecided`);
  }

  /** Evaluates the inventory here, against the node's rules (fetched again only when they changed). */
  async #evaluate(inv: Inventory, signal: AbortSignal): Promise<ScanResult> {
    const file = join(this.o.state, 'rules.ndjson');
    const etag = existsSync(file) ? this.store.get<string>('rulesEtag') : null;
    const res = await this.#fetch('/agent/v1/rules', { headers: etag ? { 'if-none-match': etag } : {}, timeoutMs: 600_000 }, signal);
    if (res.status === 200 && res.body) {
      await pipeline(Readable.fromWeb(res.body as never), createWriteStream(`${file}.tmp`), { signal });
      renameSync(`${file}.tmp`, file);
      this.store.put('rulesEtag', res.headers.get('etag'));
    } else if (res.status !== 304) throw new Error(`GET /agent/v1/rules: HTTP ${res.status}`);
    else await res.body?.cancel();
    const index = new CatalogIndex();
    if (existsSync(file))
      for await (const line of createInterface({ input: createReadStream(file) })) {
        if (!line) continue;
        const r = JSON.parse(line) as { id: string; kb: string | null; product: string; severity: string | null; applicability: unknown; installed: unknown; supersedes: unknown };
        index.set({ id: r.id, kb: r.kb, product: r.product, severity: r.severity, applicability: JSON.stringify(r.applicability), installed: JSON.stringify(r.installed), supersedes: JSON.stringify(r.supersedes) });
      }
    const states = index.assess(facts(inv));
    const bySeverity: Record<string, number> = {};
    let required = 0;
    let unknown = 0;
    for (const [id, s] of states) {
      if (s === 'unknown') unknown++;
      if (s !== 'required') continue;
      required++;
      const sev = index.get(id)?.severity ?? 'Unrated';
      bySeverity[sev] = (bySeverity[sev] ?? 0) + 1;
    }
    return { at: new Date().toISOString(), required, unknown, bySeverity };
  }

  /* ---------------- deploy ---------------- */

  /** The last assignments, if they are of this version's shape (an upgraded agent fetches them afresh). */
  #cachedAssignments(): { etag: string; body: Assignments } | null {
    const c = this.store.get<{ etag: string; body: unknown }>('assignments');
    const body = c ? assignmentsSchema.safeParse(c.body) : null;
    return c && body?.success ? { etag: c.etag, body: body.data } : null;
  }

  async #assignments(signal?: AbortSignal): Promise<Assignments> {
    const cached = this.#cachedAssignments();
    const res = await this.#fetch('/agent/v1/assignments', { headers: cached ? { 'if-none-match': cached.etag } : {} }, signal);
    this.store.put('lastCheckIn', new Date().toISOString());
    if (res.status === 304 && cached) return cached.body;
    const text = await res.text();
    if (res.status !== 200) throw new Error(`GET /agent/v1/assignments: HTTP ${res.status} ${text.slice(0, 200)}`);
    let raw: unknown;
    try {
      raw = JSON.parse(text);
    } catch (err) {
      throw new Error(`GET /agent/v1/assignments: not JSON: ${(err as Error).message}`);
    }
    const parsed = assignmentsSchema.safeParse(raw);
    if (!parsed.success) {
      const i = parsed.error.issues[0];
      throw new Error(`GET /agent/v1/assignments: not understood (${i?.path.join('.')}: ${i?.message}); is the node a different version?`);
    }
    const body = parsed.data;
    this.store.put('assignments', { etag: res.headers.get('etag') ?? '', body });
    // What the node no longer lists is done with here too.
    const listed = new Set([...body.items, ...body.waiting].map((i) => i.updateId));
    const progress = this.#progress();
    if (Object.keys(progress).some((id) => !listed.has(id))) this.store.put('progress', Object.fromEntries(Object.entries(progress).filter(([id]) => listed.has(id))));
    return body;
  }

  #progress(): Record<string, Progress> {
    return this.store.get<Record<string, Progress>>('progress') ?? {};
  }

  /** Records what an update is doing now (the status shows it, also when the agent is not running). */
  #setProgress(updateId: string, p: Omit<Progress, 'at' | 'lastError'> & { lastError?: string | null }): void {
    const all = this.#progress();
    const prev = all[updateId];
    all[updateId] = { ...p, lastError: p.lastError === undefined ? (prev?.lastError ?? null) : p.lastError, at: new Date().toISOString() };
    this.store.put('progress', all);
  }

  async #deploy(signal: AbortSignal, step: (s: string) => void): Promise<void> {
    step('checking in');
    let assignments: Assignments;
    try {
      // A quiet check-in is one 304: the configuration is read by scans, and here
      // only when it is an hour old.
      const lastConfig = this.store.get<string>('configAt');
      if (!lastConfig || Date.now() - Date.parse(lastConfig) > 3_600_000) await this.#config(signal);
      assignments = await this.#assignments(signal);
    } catch (err) {
      // Without the node, what was assigned before is still installed on schedule.
      const cached = this.#cachedAssignments();
      if (!(err instanceof Unreachable) || !cached) throw err;
      this.log.write(`check-in failed (${(err as Error).message}); working from the last assignments`);
      this.#offline = describeError(err);
      this.#checkinBackoff = Math.min(Math.max(this.#checkinBackoff * 2, 1000), 300_000);
      assignments = cached.body;
    }
    // Said once per reason; a ceiling was said when it was reached.
    for (const w of assignments.waiting ?? []) {
      if (w.reason === 'retry-ceiling') continue;
      const kb = w.kb ? `KB${w.kb}` : w.updateId;
      const text = waitingText(w);
      if (this.#waiting.get(w.updateId) !== text) {
        this.#waiting.set(w.updateId, text);
        this.log.write(w.reason === 'no-file-in-languages' ? `${kb}: assigned, but not for this computer: ${text}` : `${kb}: assigned, waiting for ${text}`);
      }
    }
    let installed = 0;
    for (const item of assignments.items) {
      if (signal.aborted) break;
      const policy = assignments.policies.find((p) => p.id === item.policyId);
      if (!policy) continue;
      if (await this.#deliver(item, policy, signal, step)) installed++;
      if (this.#progress()[item.updateId]?.settled) this.#removeDownloads(item, assignments.items);
    }
    if (installed) {
      // The next scan shows the node what is installed now.
      this.store.put('scanRequested', true);
    }
  }

  /** Downloads and (when allowed) installs one update; true when something installed. */
  async #deliver(item: Assignment, policy: Assignments['policies'][number], signal: AbortSignal, step: (s: string) => void): Promise<boolean> {
    const kb = item.kb ? `KB${item.kb}` : item.updateId;
    let c = this.store.counters(item.updateId);
    const cleared = Boolean(item.retriesClearedAt && item.retriesClearedAt !== c.clearedAt);
    if (cleared) {
      c = { download: 0, install: 0, clearedAt: item.retriesClearedAt, ceilingReported: false };
      this.store.setCounters(item.updateId, c);
      this.log.write(`${kb}: retry counts cleared by the node`);
    }
    // Installed, restart pending or not applicable here: not run again (the node stops listing it once it has the events).
    const done = this.#progress()[item.updateId];
    if (done?.settled && !cleared && (done.clearedAt ?? null) === item.retriesClearedAt) return false;
    const ceilings = policy.installation.retries;
    // Said once, as soon as a failure reaches the ceiling (the node stops offering
    // the update when it counts the same failures, so there may be no next time).
    const atCeiling = (): boolean => {
      if (c.download < ceilings.download && c.install < ceilings.install) return false;
      const what = c.download >= ceilings.download ? `${c.download} failed downloads` : `${c.install} failed installs`;
      this.#setProgress(item.updateId, { state: 'ceiling-reached', waitingFor: `the retry counts to be cleared (retry ceiling reached after ${what}): patchtree agent clear-retries, or the node's clear` });
      if (!c.ceilingReported) {
        this.log.write(`${kb}: retry ceiling reached after ${what}; not trying it again until the retry counts are cleared`);
        this.#event(item, 'ceiling-reached', Math.max(c.download, c.install), { message: what });
        c = { ...c, ceilingReported: true };
        this.store.setCounters(item.updateId, c);
      }
      return true;
    };
    if (atCeiling()) return false;
    const downloadFailed = (message: string): false => {
      c = { ...c, download: c.download + 1 };
      this.store.setCounters(item.updateId, c);
      this.#event(item, 'download-failed', c.download, { message });
      this.#setProgress(item.updateId, { state: 'failed', waitingFor: `the next try (download attempt ${c.download} of ${ceilings.download} failed)`, lastError: message });
      atCeiling();
      return false;
    };
    // Download (at any time), then install when a window or the deadline allows.
    step(`downloading ${kb}`);
    const paths: string[] = [];
    for (const f of item.files) {
      let path: string;
      try {
        path = this.#downloadPath(f);
      } catch (err) {
        this.log.write(`${kb}: ${(err as Error).message}`);
        return downloadFailed((err as Error).message);
      }
      if (!existsSync(path)) {
        const attempt = c.download + 1;
        this.#event(item, 'download-started', attempt);
        this.#setProgress(item.updateId, { state: 'downloading', waitingFor: `${f.name} (${f.size} bytes) from the node` });
        try {
          await this.#download(f, path, signal);
          this.#event(item, 'download-completed', attempt);
          this.log.write(`${kb}: downloaded ${f.name} (${f.size} bytes, sha256 verified)`);
        } catch (err) {
          if (signal.aborted) throw err;
          const why = describeError(err);
          this.log.write(`${kb}: download of ${f.name} failed (attempt ${attempt} of ${ceilings.download}): ${why}`);
          return downloadFailed(`${f.name}: ${why}`);
        }
      }
      paths.push(path);
    }
    const d = installDecision(policy.installation, { startAt: new Date(policy.startAt), deadline: policy.deadline ? new Date(policy.deadline) : null }, new Date(), localZone());
    if (!d.install) {
      const next = d.next ? d.next.toISOString() : 'no window in the next week';
      const until = `a maintenance window (${d.reason}; next opens ${next})${policy.deadline ? ` or the deadline ${policy.deadline}` : ''}`;
      this.#setProgress(item.updateId, { state: 'downloaded', waitingFor: until });
      if (this.#waiting.get(item.updateId) !== next) {
        this.#waiting.set(item.updateId, next);
        this.log.write(`${kb}: downloaded; waiting for a maintenance window to install (${d.reason}; next: ${next})`);
      }
      return false;
    }
    this.#waiting.delete(item.updateId);
    // Verified again right before the install: nothing tampered with since the download runs.
    for (const [i, f] of item.files.entries()) {
      const got = await sha256File(paths[i]!);
      if (got !== f.sha256) {
        rmSync(paths[i]!, { force: true });
        this.log.write(`${kb}: ${f.name} refused before install: sha256 is ${got}, expected ${f.sha256}; deleted`);
        return downloadFailed(`sha256 mismatch before install: ${got}`);
      }
    }
    step(`installing ${kb}`);
    const attempt = c.install + 1;
    const installFailed = (message: string, exitCode: number | null): false => {
      c = { ...c, install: c.install + 1 };
      this.store.setCounters(item.updateId, c);
      this.#event(item, 'install-failed', attempt, { ...(exitCode !== null ? { exitCode } : {}), message });
      this.#setProgress(item.updateId, { state: 'failed', waitingFor: `the next try (install attempt ${attempt} of ${ceilings.install} failed)`, lastError: message });
      atCeiling();
      return false;
    };
    this.#event(item, 'install-started', attempt);
    this.#setProgress(item.updateId, { state: 'installing', waitingFor: null });
    const why = d.reason === 'deadline' ? 'deadline passed' : d.reason === 'window' ? 'inside a maintenance window' : 'any time allowed';
    const runnable = item.files.filter((f) => f.installer).length;
    if (!runnable) {
      const message = `the catalog names no installer for ${item.files.map((f) => f.name).join(', ') || 'any file'}; nothing can install it`;
      this.log.write(`${kb}: install failed (attempt ${attempt} of ${ceilings.install}): ${message}`);
      return installFailed(message, null);
    }
    this.log.write(`${kb}: installing (attempt ${attempt} of ${ceilings.install}, ${why}): ${runnable} file(s) to install`);
    let n = 0;
    const r = await runSteps(item, paths, {
      work: this.#work,
      timeoutSeconds: this.o.installTimeoutSeconds,
      signal,
      onStep: (cmd) => this.log.write(`${kb}: step ${++n}: ${cmd.line}`),
      onResult: (s) => this.log.write(`${kb}: step ${n}: ${describeStep(s)}`),
    });
    if (signal.aborted) throw signal.reason as Error;
    const exit = r.code !== null ? { exitCode: r.code } : {};
    const code = r.code === null ? '' : ` (exit code ${formatExitCode(r.code)})`;
    switch (r.result) {
      case 'installed':
        this.#event(item, 'install-succeeded', attempt, { ...exit, message: r.summary });
        this.#setProgress(item.updateId, { state: 'installed', waitingFor: null, lastError: null, settled: true, clearedAt: item.retriesClearedAt });
        this.log.write(`${kb}: installed${code}`);
        return true;
      case 'reboot':
        this.#event(item, 'reboot-pending', attempt, { ...exit, message: r.summary });
        this.#setProgress(item.updateId, { state: 'reboot-pending', waitingFor: 'a restart of this computer', lastError: null, settled: true, clearedAt: item.retriesClearedAt });
        this.log.write(`${kb}: installed, restart required (${r.code === null ? 'no exit code' : `exit code ${formatExitCode(r.code)}`}; restart mode ${policy.installation.restart.mode})`);
        return true;
      case 'not-applicable':
        // No attempt counted: nothing failed, the update is not for this computer.
        this.#event(item, 'install-not-applicable', attempt, { ...exit, message: r.summary });
        this.#setProgress(item.updateId, { state: 'not-applicable', waitingFor: null, lastError: null, settled: true, clearedAt: item.retriesClearedAt });
        this.log.write(`${kb}: not applicable to this computer${code}: no step applied`);
        return false;
      case 'failed': {
        const failed = r.steps.find((s) => s.outcome === 'failed');
        const message = `${failed ? describeStep(failed) : r.summary}${failed?.output ? `; output: ${failed.output}` : ''}`;
        const cause = failed?.why ?? (r.code === null ? 'no exit code' : `exit code ${formatExitCode(r.code)}`);
        this.log.write(`${kb}: install failed (attempt ${attempt} of ${ceilings.install}): ${cause}${failed?.output ? `; output: ${failed.output}` : ''}`);
        return installFailed(message, r.code);
      }
    }
  }

  /** A settled update's files are deleted, unless another assigned update still needs one. */
  #removeDownloads(done: Assignment, items: readonly Assignment[]): void {
    const progress = this.#progress();
    const needed = new Set(items.filter((i) => i !== done && !progress[i.updateId]?.settled).flatMap((i) => i.files.map((f) => f.sha256)));
    let bytes = 0;
    for (const f of done.files) {
      const dir = join(this.#downloads, f.sha256);
      if (needed.has(f.sha256) || !existsSync(dir)) continue;
      rmSync(dir, { recursive: true, force: true });
      bytes += f.size;
    }
    if (bytes) this.log.write(`${done.kb ? `KB${done.kb}` : done.updateId}: its downloads removed (${bytes} bytes)`);
  }

  /** `<state>/downloads/<sha256>/<catalog file name>`, absolute; a file of the old layout (`downloads/<sha256>`) is moved there. */
  #downloadPath(f: AssignedFile): string {
    if (!FILE_NAME.test(f.name)) throw new Error(`refused the file name ${JSON.stringify(f.name)}: not a plain file name`);
    const dir = join(this.#downloads, f.sha256);
    const path = join(dir, f.name);
    if (existsSync(dir) && !statSync(dir).isDirectory()) {
      renameSync(dir, `${dir}.old`);
      mkdirSync(dir, { recursive: true });
      renameSync(`${dir}.old`, path);
    }
    if (existsSync(`${dir}.part`)) {
      mkdirSync(dir, { recursive: true });
      renameSync(`${dir}.part`, `${path}.part`);
    }
    return path;
  }

  /** Fetches a file from the node into `path`, resuming a partial download with Range; verified before it is kept. */
  async #download(f: AssignedFile, path: string, signal: AbortSignal): Promise<void> {
    mkdirSync(dirname(path), { recursive: true });
    const part = `${path}.part`;
    let have = existsSync(part) ? statSync(part).size : 0;
    if (have > f.size) {
      rmSync(part);
      have = 0;
    }
    const res = await this.#fetch(f.url, { headers: have ? { range: `bytes=${have}-` } : {}, timeoutMs: 24 * 3_600_000 }, signal);
    if (res.status !== 200 && res.status !== 206) {
      const text = await res.text().catch(() => '');
      throw new Error(`HTTP ${res.status}${text ? ` ${text.slice(0, 200)}` : ''}`);
    }
    const append = res.status === 206;
    if (append) this.log.write(`${f.name}: resuming at byte ${have} of ${f.size}`);
    await pipeline(Readable.fromWeb(res.body as never), createWriteStream(part, { flags: append ? 'a' : 'w' }), { signal });
    const size = statSync(part).size;
    if (size !== f.size) throw new Error(`got ${size} of ${f.size} bytes`);
    const got = await sha256File(part);
    if (got !== f.sha256) {
      rmSync(part, { force: true });
      throw new Error(`sha256 mismatch: got ${got}, expected ${f.sha256}; refused`);
    }
    renameSync(part, path);
  }

  /* ---------------- events ---------------- */

  /** Queues an event; it is sent within a moment, while the task goes on (the node sees each step as it happens). */
  #event(item: Assignment, type: EventType, attempt: number, extra: { exitCode?: number; message?: string } = {}): void {
    const e: QueuedEvent = { id: randomUUID(), updateId: item.updateId, policyId: item.policyId, type, attempt: Math.max(1, attempt), at: new Date().toISOString(), ...extra };
    if (e.message) e.message = e.message.slice(0, 2000);
    this.store.enqueue(e);
    this.#kickFlush();
  }

  /** A flush soon: 100 ms gathers the events of one step into a batch; a backoff from a failed send still holds. */
  #kickFlush(): void {
    if (this.#stopping || this.#flushTimer) return;
    this.#flushTimer = setTimeout(() => {
      this.#flushTimer = null;
      void this.flushEvents();
    }, Math.max(100, this.#nextFlush - Date.now()));
  }

  /** Sends queued events until the queue is empty or the node is away (then backs off with jitter); one flush at a time. */
  flushEvents(): Promise<void> {
    this.#flushing ??= this.#flush().finally(() => (this.#flushing = null));
    return this.#flushing;
  }

  async #flush(): Promise<void> {
    for (;;) {
      if (this.#stopping && this.#stopCtl.signal.aborted) return;
      const batch = this.store.pending(500);
      if (!batch.length) return;
      try {
        const res = await this.#fetch('/agent/v1/events', { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ events: batch.map((b) => b.event) }) }, this.#stopCtl.signal);
        const text = await res.text();
        if (res.status === 409) {
          // No computer yet (no inventory reported): after the next scan.
          this.#nextFlush = Date.now() + 5_000;
          return;
        }
        if (res.status >= 400) {
          // Refused for good (a malformed event, an update the node no longer knows): kept in the log, dropped from the queue.
          this.log.write(`the node refused ${batch.length} event(s) (HTTP ${res.status}: ${text.slice(0, 300)}); dropped`);
        }
        this.store.ack(batch[batch.length - 1]!.seq);
        this.#flushBackoff = 0;
      } catch (err) {
        this.#flushBackoff = Math.min(Math.max(this.#flushBackoff * 2, 1000), 300_000);
        this.#nextFlush = Date.now() + jitter(this.#flushBackoff);
        if (this.#flushBackoff === 1000 || this.#flushBackoff === 300_000) this.log.write(`events kept for later (${this.store.queued()} queued): ${(err as Error).message}`);
        return;
      }
    }
  }

  /* ---------------- control socket ---------------- */

  async #listen(): Promise<void> {
    const path = controlPath(this.o.state);
    if (process.platform !== 'win32') rmSync(path, { force: true });
    this.#control = createServer((sock) => {
      createInterface({ input: sock }).once('line', (line) => {
        void (async () => {
          let out: unknown;
          try {
            const req = JSON.parse(line) as { cmd: string; task?: string; by?: string };
            switch (req.cmd) {
              case 'status':
                out = this.status();
                break;
              case 'tasks':
                out = this.tasks();
                break;
              case 'run':
                out = this.runTask(req.task ?? '');
                break;
              case 'stop':
                out = this.stopTask();
                break;
              case 'update-data':
                out = await this.updateData();
                break;
              case 'clear-retries':
                out = await this.clearRetries(req.by ?? 'by hand');
                break;
              default:
                throw new Error(`unknown command ${req.cmd}`);
            }
            sock.end(`${JSON.stringify({ ok: true, result: out })}\n`);
          } catch (err) {
            sock.end(`${JSON.stringify({ ok: false, error: (err as Error).message })}\n`);
          }
        })();
      });
      sock.on('error', () => {});
    });
    await new Promise<void>((resolve, reject) => {
      this.#control!.once('error', reject);
      this.#control!.listen(path, () => resolve());
    });
    if (process.platform !== 'win32') chmodSync(path, 0o600);
  }

  tasks() {
    return Object.entries(TASKS).map(([name, t]) => ({
      name,
      description: t.description,
      schedule: t.schedule,
      manual: true,
      running: this.#running?.name === name,
    }));
  }
}
