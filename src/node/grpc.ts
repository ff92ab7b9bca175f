import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { ReflectionService } from '@grpc/reflection';
import type { Logger } from '../lib/log.js';
import { AppError } from '../lib/errors.js';
import { toStatus } from '../replication/wire.js';
import { PROTO_DIR } from '../replication/protocol.js';
import type { ProtoGrpcType as HealthProto } from '../gen/proto/health.js';
import type { HealthHandlers } from '../gen/proto/grpc/health/v1/Health.js';
import type { HealthCheckRequest__Output } from '../gen/proto/grpc/health/v1/HealthCheckRequest.js';
import type { HealthCheckResponse } from '../gen/proto/grpc/health/v1/HealthCheckResponse.js';

type Status = 'SERVING' | 'NOT_SERVING';

/**
 * The node's gRPC server. For now it carries the standard health service, so a
 * load balancer or `grpc_health_probe` can watch the node; replication services
 * join it in the tree issue.
 */
export class GrpcServer {
  readonly server = new grpc.Server();
  #status: Status = 'NOT_SERVING';
  #watchers = new Set<grpc.ServerWritableStream<HealthCheckRequest__Output, HealthCheckResponse>>();
  port = 0;

  constructor(private readonly logger: Logger) {
    const def = protoLoader.loadSync('grpc/health/v1/health.proto', { includeDirs: [PROTO_DIR], keepCase: true, enums: String });
    const pkg = grpc.loadPackageDefinition(def) as object as HealthProto;
    const handlers: HealthHandlers = {
      Check: (call, cb) => {
        if (call.request.service && call.request.service !== 'patchtree')
          return cb(toStatus(new AppError('not-found', `unknown service ${call.request.service}`)));
        cb(null, { status: this.#status });
      },
      Watch: (call) => {
        call.write({ status: this.#status });
        this.#watchers.add(call);
        call.on('cancelled', () => this.#watchers.delete(call));
      },
    };
    this.server.addService(pkg.grpc.health.v1.Health.service, handlers);
  }

  addService(service: grpc.ServiceDefinition, impl: grpc.UntypedServiceImplementation): void {
    this.server.addService(service, impl);
  }

  /** Server reflection over these proto files (paths under proto/), so grpcurl and friends can list the node. */
  enableReflection(files: string[]): void {
    new ReflectionService(protoLoader.loadSync(files, { includeDirs: [PROTO_DIR], keepCase: true })).addToServer(this.server);
  }

  async start(host: string, port: number, credentials: grpc.ServerCredentials = grpc.ServerCredentials.createInsecure()): Promise<number> {
    this.port = await new Promise<number>((resolve, reject) =>
      this.server.bindAsync(`${host}:${port}`, credentials, (err, p) => (err ? reject(err) : resolve(p))),
    );
    this.setStatus('SERVING');
    this.logger.info({ port: this.port }, 'gRPC listening');
    return this.port;
  }

  setStatus(s: Status): void {
    this.#status = s;
    for (const w of this.#watchers) w.write({ status: s });
  }

  async stop(): Promise<void> {
    this.setStatus('NOT_SERVING');
    for (const w of this.#watchers) w.end();
    this.#watchers.clear();
    await new Promise<void>((resolve) => {
      const t = setTimeout(() => {
        this.server.forceShutdown();
        resolve();
      }, 2000);
      this.server.tryShutdown(() => {
        clearTimeout(t);
        resolve();
      });
    });
  }
}
