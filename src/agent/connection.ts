import { hostname } from 'node:os';
import { enrolResponseSchema, type EnrolRequest } from '../agent-api/enrolment.js';
import { splitPinnedToken } from '../tls/pin.js';
import { fetchPinnedCa, fetchTrusting, readPinnedCa, writePinnedCa, type Fetch } from './trust.js';
import { describeError } from './status.js';
import { readCredentials, writeCredentials, type Credentials } from './store.js';
import type { PatchLog } from './log.js';

/**
 * The agent's connection to its node: enrolment (once), then every request with
 * the agent's secret, through a fetch that trusts the node's pinned CA (ca.pem),
 * else the system's CAs. A node that cannot be reached, or answers with a 5xx, is
 * `Unreachable` (a passing reason: tried again later); a 401 is `Revoked`.
 */

export class Unreachable extends Error {}
export class Revoked extends Error {}

export interface ConnectionOptions {
  server: string;
  state: string;
  name?: string | undefined;
  /** Plain HTTP allowed (a lab): an enrolment token's CA pin is then not used. */
  insecure?: boolean | undefined;
  version: string;
  log: PatchLog;
  /** Called when the node answers a request (events held back by a backoff can go). */
  onAnswer: () => void;
}

export class NodeConnection {
  #creds: Credentials | null;
  #http: Fetch;

  constructor(private readonly o: ConnectionOptions) {
    this.#creds = readCredentials(o.state);
    this.#http = fetchTrusting(readPinnedCa(o.state));
  }

  get credentials(): Credentials | null {
    return this.#creds;
  }

  async enroll(token: string | undefined): Promise<Credentials> {
    if (this.#creds) return this.#creds;
    const o = this.o;
    if (!token) throw new Error(`this agent is not enrolled: give --enrollment-token (state ${o.state})`);
    const name = o.name ?? hostname();
    // A token that pins the node's CA: fetch the CA, check it, and trust it alone from now on.
    const { caSha256 } = splitPinnedToken(token);
    if (caSha256 && !(o.insecure && o.server.startsWith('http:'))) {
      const ca = await fetchPinnedCa(o.server, caSha256);
      writePinnedCa(o.state, ca);
      this.#http = fetchTrusting(ca);
      o.log.write(`the node's CA matches the enrolment token (sha256 ${caSha256}); trusting it alone`);
    }
    const request: EnrolRequest = { enrollmentToken: token, name, agentVersion: o.version };
    const init = { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(request) };
    const res = await this.#http(new URL('/agent/v1/enroll', o.server), init);
    const raw = (await res.json()) as { detail?: string };
    const body = enrolResponseSchema.safeParse(raw);
    if (res.status !== 201 || !body.success || !body.data.agentId || !body.data.secret) {
      throw new Error(`enrolment refused: HTTP ${res.status} ${raw.detail ?? ''}`);
    }
    this.#creds = { server: o.server, agentId: body.data.agentId, secret: body.data.secret, enrolledAt: new Date().toISOString() };
    writeCredentials(o.state, this.#creds);
    o.log.write(`enrolled with ${o.server} as ${name} (agent ${body.data.agentId})`);
    return this.#creds;
  }

  /** A request to the node with the agent's secret; a 401 is `Revoked`, a 5xx or no answer `Unreachable`. */
  async fetch(path: string, init: RequestInit & { timeoutMs?: number } = {}, signal?: AbortSignal): Promise<Response> {
    const creds = this.#creds!;
    const signals = [AbortSignal.timeout(init.timeoutMs ?? 60_000), ...(signal ? [signal] : [])];
    let res: Response;
    try {
      res = await this.#http(new URL(path, creds.server), {
        ...init,
        headers: { authorization: `Bearer ${creds.secret}`, ...(init.headers as Record<string, string>) },
        signal: AbortSignal.any(signals),
      });
    } catch (err) {
      if (signal?.aborted) throw err;
      throw new Unreachable(`${creds.server} unreachable: ${describeError(err)}`);
    }
    if (res.status === 401) {
      await res.body?.cancel();
      throw new Revoked("the node refused this agent's credentials (revoked?): enrol again with --enrollment-token");
    }
    if (res.status >= 500) {
      const text = await res.text();
      throw new Unreachable(`${path}: HTTP ${res.status} ${text.slice(0, 200)}`);
    }
    // Not on a 5xx: a node that fails every request is backed off from, not hammered.
    this.o.onAnswer();
    return res;
  }

  /** A JSON request; anything but a 2xx is an error naming the status. */
  async json<T>(path: string, init: RequestInit = {}, signal?: AbortSignal): Promise<T> {
    const res = await this.fetch(path, { ...init, headers: { 'content-type': 'application/json', ...(init.headers as Record<string, string>) } }, signal);
    const text = await res.text();
    if (!res.ok) throw new Error(`${init.method ?? 'GET'} ${path}: HTTP ${res.status} ${text.slice(0, 300)}`);
    return JSON.parse(text) as T;
  }
}
