/** The longest a child's catch-up puts off the work that follows its catalog. */
export const CATALOG_WORK_MAX_DELAY_MS = 10_000;

/**
 * The work that follows a change of a child's catalog (assessment, delivery, the
 * content reconcile), put off while the catalog is about to change again: during a
 * complete resync (its end is one more change) and while the parent has more behind
 * the last batch (a large import on its way down), so that each index is brought up
 * to date once for the burst, not once a batch. A catch-up puts it off
 * `maxDelayMs` at most, so a node far behind keeps its results fresh, and it is
 * looked at again then should no batch come (a stream stalled mid-burst). Returns
 * what to call after each applied batch, with how many entities it changed.
 */
export function putOffCatalogWork(
  state: () => { resyncing: boolean; catchingUp: boolean },
  run: () => void,
  maxDelayMs = CATALOG_WORK_MAX_DELAY_MS,
): (changed: number) => void {
  let since = 0; // when the work was first put off (0: none is)
  let recheck: NodeJS.Timeout | null = null;
  const applied = (changed: number): void => {
    if (changed === 0 && !since) return;
    const { resyncing, catchingUp } = state();
    if (resyncing || (catchingUp && (!since || Date.now() - since < maxDelayMs))) {
      since ||= Date.now();
      if (!recheck)
        recheck = setTimeout(() => {
          recheck = null;
          applied(0);
        }, maxDelayMs).unref();
      return;
    }
    since = catchingUp ? Date.now() : 0;
    run();
  };
  return applied;
}
