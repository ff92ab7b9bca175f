export * as changelog from './log.js';
export type { Entry, LogRow } from './log.js';
export {
  KindRegistry,
  filterUpdateList,
  pages,
  type ApplyTx,
  type Applied,
  type Change,
  type KindApplier,
  type KeyRange,
  type KindFile,
  type KindSource,
  type ReplicatedKind,
  type SourceContext,
} from './kind.js';
