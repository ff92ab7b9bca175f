import type { Orm } from '../db/index.js';
import type { Logger } from '../lib/log.js';
import type { SettingsService } from '../settings/service.js';
import { ContentService } from './service.js';
import { ContentStore } from './store.js';
import { Downloader, type UpstreamSource } from './downloader.js';
import { DEFAULT_CONTENT_SETTINGS, contentSettingsSchema, type ContentSettings } from './settings.js';

export { ContentStore, hashFile } from './store.js';
export { ContentService } from './service.js';
export { Downloader, type UpstreamSource } from './downloader.js';
export { DEFAULT_CONTENT_SETTINGS, contentSettingsSchema, type ContentSettings } from './settings.js';

/** The content domain wired together: store, settings, downloader, service. */
export function createContent(
  orm: Orm,
  settings: SettingsService,
  /** The languages whose files this node needs: its own and its subtree's. */
  languages: () => readonly string[],
  logger: Logger,
  upstream: UpstreamSource | null = null,
  hooks: { onVerified?: (sha256: string) => void; now?: () => number } = {},
) {
  const store = async () => new ContentStore(await settings.storagePath());
  const current = async (): Promise<ContentSettings> => ({ ...DEFAULT_CONTENT_SETTINGS, ...(await settings.get<Partial<ContentSettings>>('content')) });
  const downloader = new Downloader(orm, store, current, logger.child({ module: 'downloader' }), upstream, hooks.onVerified, hooks.now);
  const service = new ContentService(orm, languages, store, current, downloader, logger.child({ module: 'content' }));
  return {
    store,
    settings: current,
    downloader,
    service,
    /** Merges a partial change, validates the whole, saves it, and re-derives what is needed. */
    async updateSettings(patch: Partial<ContentSettings>, by: string | null): Promise<ContentSettings> {
      const next = contentSettingsSchema.parse({ ...(await current()), ...patch });
      await settings.put('content', next, by);
      await service.reconcile();
      return next;
    },
    async start(): Promise<void> {
      await downloader.start();
      await service.reconcile();
    },
    stop: () => downloader.stop(),
  };
}

export type Content = ReturnType<typeof createContent>;
