import { EventEmitter } from 'node:events';
import type { Applied } from '../changelog/index.js';
import type { ImportOutcome } from '../catalog/importer.js';
import type { Logger } from '../lib/log.js';

/**
 * What the parts of a node tell each other. Each part is given a hook at construction
 * that emits here (it knows nothing of the others); node.ts wires the reactions once
 * every part exists. One list, so what happens after an import, a replicated batch or
 * an agent's event reads in one place.
 */
export interface NodeEventMap {
  /** The change log grew: this node's subscribers are woken. */
  appended: [];
  /** A child joined, left or changed its languages: the subtree may need other files. */
  'subtree-changed': [];
  /** A batch from the parent was applied: how many entities changed, and what. */
  replicated: [changed: number, applied: readonly Applied[]];
  /** The upstream stream is (re)connected: files it held back may be asked for again. */
  'upstream-connected': [];
  /** Computers' assessment results were stored. */
  assessed: [computerIds: number[]];
  /** A policy changed (the files the node needs may have). */
  'policy-changed': [];
  /** Agents' delivery states changed. */
  'status-changed': [];
  /** A file was downloaded and verified. */
  verified: [sha256: string];
  /** A catalog import ended (well or not). */
  imported: [outcome: ImportOutcome];
}

export type NodeEvents = EventEmitter<NodeEventMap>;

export const nodeEvents = (): NodeEvents => new EventEmitter<NodeEventMap>();

/**
 * Runs work at most once per `ms` however often it is asked for (a burst of changes
 * costs one reconcile); a failure is logged, not thrown.
 */
export function debounced(log: Logger) {
  return (ms: number, failure: string, work: () => Promise<unknown>): (() => void) => {
    let timer: NodeJS.Timeout | null = null;
    return () => {
      if (timer) return;
      timer = setTimeout(() => {
        timer = null;
        work().catch((err) => log.error({ err }, failure));
      }, ms);
      timer.unref();
    };
  };
}
