import { KindRegistry } from '../changelog/index.js';
import { levelsKind, updateKind } from '../catalog/replicated.js';
import { settingKind } from '../settings/replicated.js';
import { releaseKind } from '../freshness/release.js';
import { policyKind } from '../delivery/replication.js';

/**
 * The kinds this node replicates, one line each, in the order a complete resync sends
 * them: levels and settings first (small, and updates name their levels), then the
 * updates, the releases that list them, and the policies that refer to them.
 */
export const replicatedKinds = (): KindRegistry => new KindRegistry([levelsKind, settingKind, updateKind, releaseKind, policyKind]);
