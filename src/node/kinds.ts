import { KindRegistry } from '../changelog/index.js';
import { levelsKind, updateKind } from '../catalog/replicated.js';
import { settingKind } from '../settings/replicated.js';
import { releaseKind } from '../freshness/release.js';
import { policyKind } from '../delivery/replication.js';

/**
 * The kinds this node replicates, one line each, in the order a complete resync sends
 * them: levels and settings first (small, and updates name their levels), the
 * releases (a child applies them while its parent builds the updates' file; each
 * update is stamped visible for the releases waiting for it as it arrives), then the
 * updates, and the policies that refer to them.
 */
export const replicatedKinds = (): KindRegistry => new KindRegistry([levelsKind, settingKind, releaseKind, updateKind, policyKind]);
