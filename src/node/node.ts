import { chmod, mkdir, rm } from 'node:fs/promises';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { createAdaptorServer } from '@hono/node-server';
import type { Server } from 'node:http';
import { createLogger, logDestination, type Logger } from '../lib/log.js';
import { openDatabase, type Database } from '../db/index.js';
import { AuthGuard } from '../http/guard.js';
import { plainHttpOnly } from '../http/plain.js';
import { checkedService } from '../replication/wire.js';
import { hostname } from 'node:os';
import { createServer as createHttpsServer, type Server as HttpsServer } from 'node:https';
import { certNames, grpcServerCredentials, nodeTls, signChild, type NodeTls } from '../tls/node-ca.js';
import { upstreamTls } from '../tls/upstream.js';
import { openConn, type SqlConn } from '../db/exec.js';
import { TokenService } from '../auth/tokens.js';
import { SettingsService } from '../settings/service.js';
import { CatalogImporter } from '../catalog/importer.js';
import { CatalogFeed, type FeedState } from '../catalog/feed.js';
import { loadTrustedKeys } from '../catalog/signing.js';
import { createApp } from '../http/app.js';
import { createContent, type Content } from '../content/index.js';
import { createMetrics } from './metrics.js';
import { GrpcServer } from './grpc.js';
import { ensureIdentity } from '../replication/identity.js';
import { ReplicationParent, childLanguages } from '../replication/parent.js';
import { ReplicationChild } from '../replication/child.js';
import { replicationDefinition } from '../replication/protocol.js';
import { replicatedKinds } from './kinds.js';
import { debounced, nodeEvents } from './events.js';
import type { NodeConfig } from './config.js';
import { createAssessment, type Assessment } from '../assessment/index.js';
import { createDelivery, type DeliveryService } from '../delivery/index.js';
import { createReports, type ReportsService } from '../reports/index.js';
import { Rollup } from '../reports/rollup.js';
import { TreeViews } from '../reports/tree.js';
import { Freshness } from '../freshness/freshness.js';
import { fileClock, systemClock } from '../lib/clock.js';
import { putOffCatalogWork } from './catalog-work.js';
import { VERSION } from './version.js';

/**
 * One patchtree node: services built by hand and started in order (database,
 * HTTP, gRPC, feed), stopped in reverse. No container, no globals: every part
 * gets the config, the database and a scoped logger from here.
 */
export class PatchtreeNode {
  readonly logger: Logger;
  db!: Database;
  httpPort = 0;
  httpsPort = 0;
  /** The node's TLS material (its own CA and certificate, or the given ones). */
  tls: NodeTls | null = null;
  #https: HttpsServer | null = null;
  #renewTimer: NodeJS.Timeout | null = null;
  parent!: ReplicationParent;
  grpcPort = 0;
  #http: Server | null = null;
  #grpc: GrpcServer | null = null;
  #feed: CatalogFeed | null = null;
  #content: Content | null = null;
  #assessment: Assessment | null = null;
  get assessment(): Assessment | null {
    return this.#assessment;
  }
  #child: ReplicationChild | null = null;
  /** The replication parent's reads of the catalog (snapshot pages, log entries' states). */
  #replicaReads: SqlConn | null = null;
  #delivery: DeliveryService | null = null;
  #reports: ReportsService | null = null;
  #rollup: Rollup | null = null;
  #freshness: Freshness | null = null;
  get reports(): ReportsService | null {
    return this.#reports;
  }
  get delivery(): DeliveryService | null {
    return this.#delivery;
  }

  constructor(
    readonly config: NodeConfig,
    logger?: Logger,
  ) {
    this.logger = logger ?? createLogger(config.logLevel, logDestination(config.logFormat));
  }

  async start(): Promise<void> {
    const { config } = this;
    const log = this.logger;
    // The data folder holds the database, keys and tokens: its owner's only.
    await mkdir(config.data, { recursive: true, mode: 0o700 });
    await chmod(config.data, 0o700);
    const tmpDir = join(config.data, 'tmp');
    await rm(tmpDir, { recursive: true, force: true }); // partial uploads of a previous run
    await mkdir(tmpDir, { recursive: true });

    this.db = await openDatabase(config.databaseUrl, config.databaseAuthToken);
    // The node's TLS: its own CA and certificate in <data>/tls/, or the ones given.
    const tls = await nodeTls({
      data: config.data,
      name: config.name,
      names: certNames(hostname(), config.tlsSan),
      ...(config.tlsCert && config.tlsKey ? { given: { cert: config.tlsCert, key: config.tlsKey, ca: config.tlsCa } } : {}),
    });
    this.tls = tls;
    log.info({ database: this.db.filePath ?? config.databaseUrl.replace(/\/\/[^@/]*@/, '//***@') }, 'database ready');

    const tokens = new TokenService(this.db.orm);
    const boot = await tokens.bootstrap(config.data, config.adminToken);
    if (boot.generated) log.warn({ file: boot.generated }, `admin token generated: read it from ${boot.generated}`);

    let trusted: Awaited<ReturnType<typeof loadTrustedKeys>>;
    try {
      trusted = await loadTrustedKeys(config.trustedKeys);
    } catch (err) {
      throw new Error(`invalid --trusted-key: ${(err as Error).message}`);
    }
    if (trusted.size === 0 && !config.upstream) log.warn('no --trusted-key given: catalog imports will be refused until one is configured');

    const metrics = createMetrics();
    const clock = config.clockFile ? fileClock(config.clockFile) : systemClock;
    if (config.clockFile) log.warn({ file: config.clockFile }, 'TESTING: the clock for catalog freshness is read from a file');
    const identity = await ensureIdentity(this.db.orm);
    const self = { nodeId: identity.nodeId, name: config.name };
    // What one part tells the others (node/events.ts): each part is given a hook at
    // construction that emits here, and the node wires the reactions once all exist.
    const events = nodeEvents();
    const settings = new SettingsService(this.db.orm, config.data, { nodeId: identity.nodeId, notify: () => events.emit('appended') });

    // TLS for the tree: given files, else the node's own certificate (children join with a token
    // that pins its CA and get a client certificate signed by it); plaintext only with --insecure, loudly.
    const grpcTls = Boolean(config.tlsCert && config.tlsKey) || !config.insecure;
    if (config.insecure) log.warn('INSECURE: --insecure is set; replication traffic (catalog, credentials, files) travels in plaintext');
    const serverCreds = grpcServerCredentials(tls, config);

    // Languages whose files this node needs: its own and its whole subtree's.
    let subtree = await childLanguages(this.db.orm);
    const allLanguages = () => [...new Set([...config.languages, ...subtree])].sort();
    const kinds = replicatedKinds();
    let child: ReplicationChild | null = null;
    if (config.upstream) {
      const up = await upstreamTls({
        data: config.data,
        address: config.upstream,
        joinToken: config.joinToken,
        nodeId: identity.nodeId,
        insecure: config.insecure,
        tlsCa: config.tlsCa,
        tlsCert: config.tlsCert,
        tlsKey: config.tlsKey,
      });
      child = new ReplicationChild({
        db: this.db,
        identity,
        name: config.name,
        version: VERSION,
        ownLanguages: config.languages,
        subtreeLanguages: () => childLanguages(this.db!.orm),
        upstream: {
          address: config.upstream,
          joinToken: config.joinToken,
          credentials: up.credentials,
          prepareJoin: up.prepareJoin,
          acceptCertificate: (pem) => up.accept(pem),
        },
        kinds,
        logger: log.child({ module: 'upstream' }),
        clock,
        initialSync: config.initialSync,
        catchUp: config.catchUp,
        onApplied: (changed, applied) => events.emit('replicated', changed, applied),
        onConnected: () => events.emit('upstream-connected'),
      });
      this.#child = child;
    }
    /** In a burst from the parent (catching up, or in a complete resync): the work that follows a catalog change waits for its end. */
    const inBurst = () => ({ resyncing: child?.resyncing ?? false, catchingUp: child?.catchingUp ?? false });
    const busy = () => {
      const b = inBurst();
      return b.resyncing || b.catchingUp;
    };
    const upstreamFiles = child ? child.fetchFile.bind(child) : null;
    const content = createContent(this.db.orm, settings, allLanguages, log, upstreamFiles, {
      onVerified: (sha256) => events.emit('verified', sha256),
      now: clock,
    });
    this.#content = content;
    const assessment = createAssessment(this.db, this.db.orm, settings, log, (ids) => events.emit('assessed', ids));
    this.#assessment = assessment;
    const delivery = createDelivery(
      this.db,
      assessment,
      settings,
      log,
      { ...self, notify: () => events.emit('appended') },
      {
        policyChanged: () => events.emit('policy-changed'),
        statusChanged: () => events.emit('status-changed'),
      },
    );
    this.#delivery = delivery;
    const reports = createReports(this.db, assessment, log);
    this.#reports = reports;
    const views = new TreeViews(this.db.reader, reports.reports, self, () => child?.parentId() ?? null, Date.now);
    const freshness = new Freshness({
      reader: this.db.reader,
      orm: this.db.orm,
      settings,
      clock,
      self,
      languages: allLanguages,
      needsAllFiles: async () => (await content.settings()).need === 'languages',
      logger: log.child({ module: 'freshness' }),
      reported: () => views.freshness(),
      busy,
      onOverdue: (byNode) => {
        metrics.freshnessOverdue.reset();
        for (const n of byNode.values()) metrics.freshnessOverdue.set({ node: n.name }, n.seconds);
      },
    });
    this.#freshness = freshness;
    const rollup = new Rollup({
      orm: this.db.orm,
      reader: this.db.reader,
      reports: reports.reports,
      views,
      policyTotals: () => delivery.policies.allTotals(),
      self,
      parentId: () => child?.parentId() ?? null,
      intervalMs: config.reportInterval * 1000,
      extra: async () => ({ languages: allLanguages(), freshness: await freshness.own() }),
      send: child ? (r, gone) => child.report(r, gone) : null,
      logger: log.child({ module: 'rollup' }),
    });
    this.#rollup = rollup;
    const guard = new AuthGuard(metrics.authFailures, log.child({ module: 'auth' }));
    this.#replicaReads = openConn(this.db);
    const parent = new ReplicationParent({
      orm: this.db.orm,
      reads: this.#replicaReads,
      identity,
      name: config.name,
      kinds,
      snapshotDir: join(config.data, 'snapshots'),
      dbFile: this.db.filePath ?? null,
      verifiedFile: (sha256) => content.service.verifiedFile(sha256),
      reports: rollup,
      logger: log.child({ module: 'replication' }),
      enabled: Boolean(grpcTls) || config.insecure,
      // Children joining with a certificate request get a client certificate from this node's CA, and must present it.
      certificates: tls.own && !config.insecure ? { sign: (csr, nodeId) => signChild(tls, csr, nodeId), caPem: tls.caPem! } : null,
      onLanguages: () => events.emit('subtree-changed'),
      onAuthFailure: (peer, why) => guard.failed('grpc', peer.replace(/^ipv[46]:/, '').replace(/:\d+$/, ''), why),
      upstreamBusy: busy,
    });
    this.parent = parent;
    const importer = new CatalogImporter(this.db, trusted, log.child({ module: 'catalog' }), (o) => events.emit('imported', o), identity.nodeId, clock);

    // The reactions, now that every part exists.
    const later = debounced(log);
    const reconcileSoon = later(200, 'content reconcile failed', () => content.service.reconcile());
    const compactSoon = later(5_000, 'change log compaction failed', () => parent.compact(config.changeLogRetention));
    events.on('appended', () => parent.notify());
    events.on('subtree-changed', () => {
      void childLanguages(this.db!.orm).then((l) => {
        const changed = l.join(',') !== subtree.join(',');
        subtree = l;
        if (changed) {
          reconcileSoon();
          child?.resubscribe();
        }
      });
    });
    const catalogWork = putOffCatalogWork(inBurst, () => {
      assessment.assessor.catalogChanged();
      delivery.catalogChanged();
      reconcileSoon();
      rollup.markChanged();
    });
    events.on('replicated', (changed, applied) => {
      parent.notify();
      for (const a of applied) if (a.kind === 'policy') delivery.engine.policyChanged(a.key);
      if (changed > 0) compactSoon();
      catalogWork(changed); // the report up too: once a burst, not once a batch
    });
    events.on('upstream-connected', () => void content.downloader.retryDeferred().catch((err) => log.error({ err }, 'retrying deferred downloads failed')));
    events.on('assessed', (ids) => {
      delivery.engine.computersAssessed(ids);
      rollup.markChanged();
    });
    events.on('policy-changed', () => {
      reconcileSoon();
      rollup.markChanged();
    });
    events.on('status-changed', () => rollup.markChanged());
    events.on('verified', () => {
      delivery.engine.invalidateAll();
      rollup.markChanged();
    });
    events.on('imported', (o) => {
      metrics.catalogImports.inc({ outcome: o.ok ? 'ok' : (o.code ?? 'error') });
      if (o.ok) metrics.catalogImportDuration.observe(o.seconds);
      // A release may need new files (or no longer need some).
      if (o.ok) {
        rollup.markChanged();
        assessment.assessor.catalogChanged();
        delivery.catalogChanged();
        parent.notify();
        parent.compact(config.changeLogRetention).catch((err) => log.error({ err }, 'change log compaction failed'));
        content.service.reconcile().catch((err) => log.error({ err }, 'content reconcile failed'));
      }
    });

    await assessment.start();
    await delivery.start();
    reports.start();
    // The upstream link first: a new child's complete resync is built by its parent
    // while this node builds its API and opens its listeners.
    await child?.start();
    const app = createApp({
      db: this.db,
      logger: log,
      tokens,
      settings,
      importer,
      content,
      assessment,
      delivery,
      reports,
      rollup,
      freshness,
      hierarchy: { identity, parent, child, languages: config.languages, subtreeLanguages: allLanguages },
      metrics,
      guard,
      // Tokens pin the node's own CA only: a server with given files may not send its root.
      tls: { caSha256: tls.caSha256, pin: tls.own ? tls.caSha256 : null, certNotAfter: () => tls.certNotAfter, hsts: !config.insecureHttp },
      node: { name: config.name, version: VERSION, languages: config.languages, startedAt: Date.now() },
      tmpDir,
      maxCatalogBytes: config.maxCatalogBytes,
    });
    // Plain HTTP: everything with --insecure-http (a lab), else health, metrics and the API document only.
    if (config.insecureHttp) log.warn('INSECURE: --insecure-http is set; the API, agent API and console are served on plain HTTP too');
    const plainFetch = config.insecureHttp ? app.fetch : plainHttpOnly(app.fetch, () => this.httpsPort);
    const server = await listen(createAdaptorServer({ fetch: plainFetch }) as Server, config.httpPort, config.httpHost);
    this.#http = server;
    this.httpPort = (server.address() as AddressInfo).port;
    log.info({ port: this.httpPort, host: config.httpHost }, 'HTTP listening');
    // HTTPS with the node's own certificate (or the given one): the same API, console and agent API.
    const https = await listen(
      createAdaptorServer({ fetch: app.fetch, createServer: createHttpsServer, serverOptions: { key: tls.key, cert: tls.certChain } }) as HttpsServer,
      config.httpsPort,
      config.httpHost,
    );
    this.#https = https;
    this.httpsPort = (https.address() as AddressInfo).port;
    log.info({ port: this.httpsPort, host: config.httpHost, caSha256: tls.caSha256, certNotAfter: tls.certNotAfter, own: tls.own }, 'HTTPS listening');
    // The node's own certificate is renewed while it runs (checked daily; clients see the new one on their next connection).
    if (tls.own) {
      this.#renewTimer = setInterval(() => {
        void nodeTls({ data: config.data, name: config.name, names: certNames(hostname(), config.tlsSan) })
          .then((t) => {
            if (t.certNotAfter !== tls.certNotAfter) {
              https.setSecureContext({ key: t.key, cert: t.certChain });
              serverCreds.renew(t);
              tls.certNotAfter = t.certNotAfter;
              log.info({ certNotAfter: t.certNotAfter }, 'node certificate renewed');
            }
          })
          .catch((err) => log.error({ err }, 'node certificate renewal failed'));
      }, 86_400_000);
      this.#renewTimer.unref();
    }

    await content.start();

    this.#grpc = new GrpcServer(log.child({ module: 'grpc' }));
    this.#grpc.addService(checkedService(replicationDefinition()), parent.handlers());
    this.#grpc.enableReflection(['grpc/health/v1/health.proto', 'patchtree/replication/v1/replication.proto']);
    this.grpcPort = await this.#grpc.start(config.grpcHost, config.grpcPort, serverCreds);
    rollup.start();
    freshness.start(Math.min(10_000, config.reportInterval * 1000));

    if (config.catalogUrl) {
      this.#feed = new CatalogFeed(
        config.catalogUrl,
        config.catalogInterval * 1000,
        importer,
        { get: () => settings.get<FeedState>('catalogFeed'), put: (s) => settings.put('catalogFeed', s, 'catalog feed') },
        tmpDir,
        config.maxCatalogBytes,
        log.child({ module: 'feed' }),
      );
      this.#feed.start();
    }
    log.info(
      {
        name: config.name,
        languages: config.languages,
        http: this.httpPort,
        https: this.httpsPort,
        grpc: this.grpcPort,
        caSha256: tls.caSha256,
        version: VERSION,
      },
      'node started',
    );
  }

  async stop(): Promise<void> {
    await this.#feed?.stop();
    await this.#rollup?.stop();
    this.#freshness?.stop();
    // Downloads first: they read from the upstream channel, and a stop must leave
    // them pending (resumable), not failed.
    await this.#content?.stop();
    await this.#child?.stop();
    await this.#grpc?.stop();
    this.parent?.snapshots.close();
    this.#replicaReads?.close();
    if (this.#renewTimer) clearInterval(this.#renewTimer);
    for (const http of [this.#http, this.#https]) {
      if (!http) continue;
      await new Promise<void>((resolve) => {
        http.close(() => resolve());
        http.closeIdleConnections();
        setTimeout(() => http.closeAllConnections(), 2000).unref();
      });
    }
    this.#reports?.stop();
    await this.#delivery?.stop();
    await this.#assessment?.stop();
    this.db?.close();
    this.logger.info('node stopped');
    this.logger.flush();
  }
}

/** Listens with the node's HTTP timeouts: none for a request (large catalog uploads on slow links), a minute for headers. */
async function listen<S extends Server | HttpsServer>(server: S, port: number, host: string): Promise<S> {
  server.requestTimeout = 0;
  server.headersTimeout = 60_000;
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => resolve());
  });
  return server;
}
