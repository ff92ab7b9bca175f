import type { Database } from '../db/index.js';
import { openConn } from '../db/exec.js';
import type { Logger } from '../lib/log.js';
import type { SettingsService } from '../settings/service.js';
import type { Assessment } from '../assessment/index.js';
import { assessmentSettings, staleBefore } from '../assessment/settings.js';
import { AgentCredentials } from './agents.js';
import { Delivery, type DeliveryHooks } from './engine.js';
import { Policies, type PolicyPublisher } from './policies.js';
import { PolicyDeliveries } from './policy-delivery.js';
import { PolicyInput } from './policy-input.js';
import { PolicySupersedence } from './policy-supersedence.js';
import { DEFAULT_INSTALLATION, INSTALLATION_SETTING, type Installation } from './installation.js';

/** Agent events are kept this long: the delivery history, and the window in which a retried batch is recognised. */
export const EVENT_RETENTION_MS = 30 * 86_400_000;

/** Policies and endpoint delivery, wired: one connection of its own (a single writer), credentials, engine, policies. */
export function createDelivery(
  db: Database,
  assessment: Assessment,
  settings: SettingsService,
  logger: Logger,
  publisher: PolicyPublisher,
  hooks: DeliveryHooks = {},
) {
  const conn = openConn(db);
  const log = logger.child({ module: 'delivery' });
  let installation: Installation | null = null;
  const nodeInstallation = async (): Promise<Installation> =>
    (installation ??= { ...DEFAULT_INSTALLATION, ...(await settings.get<Partial<Installation>>(INSTALLATION_SETTING)) });
  const stale = async () => staleBefore(await assessmentSettings(settings));
  const engine = new Delivery(conn, assessment.computers, assessment.assessor.index, nodeInstallation, stale, log, hooks);
  const policies = new Policies(conn, new PolicyDeliveries(conn, publisher.nodeId), new PolicyInput(conn, assessment.computers, stale), engine, publisher);
  const supersedence = new PolicySupersedence(conn, engine, log, publisher);
  const agents = new AgentCredentials(conn, assessment.enrollment);
  let pruneTimer: NodeJS.Timeout | null = null;
  const prune = () => void engine.pruneEvents(Date.now() - EVENT_RETENTION_MS).catch((err) => log.error({ err }, 'pruning agent events failed'));
  return {
    engine,
    policies,
    agents,
    installation: nodeInstallation,
    async setInstallation(s: Installation, by: string | null): Promise<Installation> {
      await settings.put(INSTALLATION_SETTING, s, by);
      installation = null;
      engine.invalidateAll();
      return nodeInstallation();
    },
    /** The catalog changed: revise the policies that follow supersedence. */
    catalogChanged(): void {
      void supersedence.revise().catch((err) => log.error({ err }, 'revising policies for supersedence failed'));
    },
    async start(): Promise<void> {
      agents.start();
      await engine.start();
      await policies.publishUnshared();
      prune();
      pruneTimer = setInterval(prune, 86_400_000);
      pruneTimer.unref();
    },
    async stop(): Promise<void> {
      if (pruneTimer) clearInterval(pruneTimer);
      await agents.stop();
      await engine.stop();
      conn.close();
    },
  };
}

export type DeliveryService = ReturnType<typeof createDelivery>;
