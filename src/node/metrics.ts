import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

/**
 * The node's Prometheus metrics, in a registry of its own (never the global one),
 * so two nodes in one process (tests) do not share counters.
 */
/**
 * How often the event loop's delay is sampled for `patchtree_nodejs_eventloop_lag_*`.
 * prom-client's default (10 ms) wakes an idle node a hundred times a second: about
 * 10 ms of CPU a second per process, most of an idle node's cost, and a tree's many
 * nodes on one machine pay it each. A lag worth an alert lasts far longer than 100 ms.
 */
export const EVENT_LOOP_SAMPLE_MS = 100;

export function createMetrics() {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry, prefix: 'patchtree_', eventLoopMonitoringPrecision: EVENT_LOOP_SAMPLE_MS });
  return {
    registry,
    httpRequests: new Counter({
      name: 'patchtree_http_requests_total',
      help: 'HTTP requests by method, route and status',
      labelNames: ['method', 'route', 'status'] as const,
      registers: [registry],
    }),
    httpDuration: new Histogram({
      name: 'patchtree_http_request_duration_seconds',
      help: 'HTTP request duration by method and route',
      labelNames: ['method', 'route'] as const,
      buckets: [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10, 60],
      registers: [registry],
    }),
    authFailures: new Counter({
      name: 'patchtree_auth_failures_total',
      help: 'Failed authentications by surface (api, agent, enrolment, console, grpc)',
      labelNames: ['surface'] as const,
      registers: [registry],
    }),
    catalogImports: new Counter({
      name: 'patchtree_catalog_imports_total',
      help: 'Catalog imports by outcome (ok, or the error code)',
      labelNames: ['outcome'] as const,
      registers: [registry],
    }),
    catalogImportDuration: new Histogram({
      name: 'patchtree_catalog_import_duration_seconds',
      help: 'Duration of successful catalog imports',
      buckets: [0.1, 0.5, 1, 2, 5, 10, 30, 60, 120, 300],
      registers: [registry],
    }),
    replicationHead: new Gauge({ name: 'patchtree_replication_head_seq', help: "Last sequence of this node's change log", registers: [registry] }),
    upstreamConnected: new Gauge({ name: 'patchtree_upstream_connected', help: '1 when the subscription to the upstream node is open', registers: [registry] }),
    upstreamLag: new Gauge({ name: 'patchtree_upstream_lag_entries', help: 'Change-log entries of the upstream not yet applied here', registers: [registry] }),
    upstreamLagSeconds: new Gauge({
      name: 'patchtree_upstream_lag_seconds',
      help: 'Seconds since the last applied batch while behind the upstream',
      registers: [registry],
    }),
    childConnected: new Gauge({
      name: 'patchtree_child_connected',
      help: '1 when the child is subscribed',
      labelNames: ['child'] as const,
      registers: [registry],
    }),
    childLag: new Gauge({
      name: 'patchtree_child_lag_entries',
      help: 'Change-log entries the child has not acknowledged',
      labelNames: ['child'] as const,
      registers: [registry],
    }),
    childLagSeconds: new Gauge({
      name: 'patchtree_child_lag_seconds',
      help: 'Age of the oldest entry the child has not acknowledged',
      labelNames: ['child'] as const,
      registers: [registry],
    }),
    childFilesPending: new Gauge({
      name: 'patchtree_child_files_pending',
      help: 'Files the child still has to fetch, as it last reported',
      labelNames: ['child'] as const,
      registers: [registry],
    }),
    freshnessOverdue: new Gauge({
      name: 'patchtree_freshness_overdue_seconds',
      help: 'Per node of the subtree: how far past its goal the oldest catalog release still incomplete there is (0: none)',
      labelNames: ['node'] as const,
      registers: [registry],
    }),
    catalogUpdates: new Gauge({
      name: 'patchtree_catalog_updates',
      help: 'Updates in the catalog by state (live, expired)',
      labelNames: ['state'] as const,
      registers: [registry],
    }),
  };
}

export type Metrics = ReturnType<typeof createMetrics>;
