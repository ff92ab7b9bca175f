import { mkdirSync } from 'node:fs';
import type { Server } from 'node:net';
import { resolve } from 'node:path';
import { backoffMs } from '../lib/backoff.js';
import { CheckIn, type ConfigDoc } from './checkin.js';
import { NodeConnection, Unreachable } from './connection.js';
import { listenControl } from './control-server.js';
import { Deployer } from './deploy.js';
import { Downloads } from './downloads.js';
import { EventQueue } from './event-queue.js';
import type { InventoryProvider } from './inventory.js';
import { PatchLog } from './log.js';
import { Scanner, type ScanResult } from './scan.js';
import { describeError, updateStatuses } from './status.js';
import { AgentStore, type Credentials } from './store.js';

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
  scan: {
    description: 'Scan only: collect the inventory, evaluate it against the catalog, report it',
    schedule: 'every scan interval set by the node',
    scan: true,
    deploy: false,
  },
  deploy: {
    description: 'Scan and deploy: check in, scan when due, download and install what the policies assign',
    schedule: 'every check-in interval',
    scan: true,
    deploy: true,
  },
};

/** Waits after a check-in the node did not answer. */
const CHECKIN_BACKOFF = { baseMs: 1000, maxMs: 300_000 } as const;

const jitter = (ms: number) => Math.round(ms * (0.5 + Math.random()));

/**
 * The scheduler: runs the tasks (one at a time) when they are due, by hand through
 * the control socket, and backs off while the node is away; the jobs themselves are
 * the connection (enrolment, requests), the check-in, the scanner, the deployer
 * (downloads and installs) and the event queue.
 */
export class Agent {
  readonly store: AgentStore;
  readonly log: PatchLog;
  readonly #connection: NodeConnection;
  readonly #checkIn: CheckIn;
  readonly #scanner: Scanner;
  readonly #deployer: Deployer;
  readonly #events: EventQueue;
  #stopping = false;
  #loopDone: Promise<void> = Promise.resolve();
  /** Aborted by stop(): ends a request of the loop's own (sending events) at once. */
  readonly #stopCtl = new AbortController();
  #wake: (() => void) | null = null;
  #running: { name: TaskName; trigger: string; startedAt: string; ctl: AbortController; step: string; done: Promise<void> } | null = null;
  #control: Server | null = null;
  /** Check-ins in a row the node did not answer: the backoff's attempt. */
  #checkinFailures = 0;
  /** Set by a deploy that could not check in and worked from the last assignments. */
  #offline: string | null = null;
  #nextCheckin = 0;
  #lastError: string | null = null;

  constructor(private readonly o: AgentOptions) {
    mkdirSync(o.state, { recursive: true, mode: 0o700 });
    const work = resolve(o.state, 'work');
    mkdirSync(work, { recursive: true });
    this.store = new AgentStore(o.state);
    this.log = new PatchLog(o.state);
    const log = this.log;
    const store = this.store;
    const onAnswer = () => this.#events.nodeAnswered();
    const connection = new NodeConnection({ server: o.server, state: o.state, name: o.name, insecure: o.insecure, version: o.version, log, onAnswer });
    this.#connection = connection;
    this.#events = new EventQueue({ store, log, connection, stopSignal: this.#stopCtl.signal });
    this.#checkIn = new CheckIn(connection, store, log);
    this.#scanner = new Scanner({ state: o.state, name: o.name, version: o.version, inventory: o.inventory, connection, checkIn: this.#checkIn, store, log });
    const downloads = new Downloads(resolve(o.state, 'downloads'), connection, log);
    const installTimeoutSeconds = o.installTimeoutSeconds;
    this.#deployer = new Deployer({ store, log, checkIn: this.#checkIn, downloads, events: this.#events, work, installTimeoutSeconds });
  }

  enroll(token: string | undefined): Promise<Credentials> {
    return this.#connection.enroll(token);
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
    this.#control = await listenControl(this.o.state, this);
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
      if (!this.#stopping && now >= this.#events.nextFlush) await this.flushEvents();
      const until = Math.min(this.#nextCheckin, this.#nextScan(), this.store.queued() ? this.#events.nextFlush : Infinity);
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
    return this.#nextScan() <= now && (this.#checkinFailures === 0 || now >= this.#nextCheckin);
  }

  async stop(): Promise<void> {
    this.#stopping = true;
    this.#stopCtl.abort();
    this.#running?.ctl.abort(new Error('the agent is stopping'));
    await this.#running?.done.catch(() => {});
    this.#wake?.();
    const flushed = this.#events.stop();
    await this.#loopDone; // the loop may be sending events: the store stays open until it is out
    await flushed;
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
    let retryIn = 0;
    task.done = (async () => {
      try {
        this.#offline = null;
        if (name === 'scan') await this.#scanner.scan(ctl.signal, (s) => (task.step = s));
        else this.#offline = (await this.#deployer.deploy(ctl.signal, (s) => (task.step = s))).offline;
        // Worked from the last assignments: the node is still away, and the status says why.
        if (this.#offline) this.#checkinFailures++;
        else this.#checkinFailures = 0;
        this.#setLastError(this.#offline);
        this.log.write(`task ${name} finished`);
      } catch (err) {
        if (ctl.signal.aborted) {
          const reason = (ctl.signal.reason as Error | undefined)?.message ?? 'stopped';
          this.log.write(`task ${name} stopped during ${task.step}: ${reason}`);
        } else {
          this.#setLastError(describeError(err));
          if (err instanceof Unreachable) {
            retryIn = backoffMs(++this.#checkinFailures, CHECKIN_BACKOFF);
            this.log.write(`task ${name} failed: ${(err as Error).message}; next try in about ${Math.round(retryIn / 1000)} s`);
          } else this.log.write(`task ${name} failed: ${(err as Error).message}`);
          throw err;
        }
      } finally {
        const failures = this.#checkinFailures;
        const wait = failures ? retryIn || backoffMs(failures, CHECKIN_BACKOFF) : jitter(this.o.intervalSeconds * 1000);
        if (name === 'deploy' || failures) this.#nextCheckin = Date.now() + wait;
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
    const cfg = await this.#checkIn.config();
    const a = await this.#checkIn.assignments();
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
      await this.#connection.json('/agent/v1/retries/clear', { method: 'POST', body: '{}' });
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
    const a = this.#checkIn.cachedAssignments();
    const creds = this.#connection.credentials;
    return {
      agentId: creds?.agentId ?? null,
      server: creds?.server ?? this.o.server,
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
      updates: updateStatuses(a?.body ?? null, this.#checkIn.progress()),
    };
  }

  /** Sends queued events until the queue is empty or the node is away (then backs off with jitter); one flush at a time. */
  flushEvents(): Promise<void> {
    return this.#events.flush();
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
