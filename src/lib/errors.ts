/**
 * One catalogue of error codes for the whole node. Every error that crosses a
 * boundary (HTTP, gRPC, CLI) is an AppError carrying its code; the HTTP and gRPC
 * adapters map it in one place each, so a code means the same thing everywhere.
 */

/** gRPC status codes used by the catalogue (numeric values from the gRPC spec). */
export const GrpcStatus = {
  INVALID_ARGUMENT: 3,
  NOT_FOUND: 5,
  ALREADY_EXISTS: 6,
  PERMISSION_DENIED: 7,
  RESOURCE_EXHAUSTED: 8,
  FAILED_PRECONDITION: 9,
  ABORTED: 10,
  OUT_OF_RANGE: 11,
  UNIMPLEMENTED: 12,
  INTERNAL: 13,
  UNAVAILABLE: 14,
  UNAUTHENTICATED: 16,
} as const;

interface CodeSpec {
  status: number;
  grpc: number;
  title: string;
}

export const ERROR_CODES = {
  'bad-request': { status: 400, grpc: GrpcStatus.INVALID_ARGUMENT, title: 'The request is malformed' },
  'validation-failed': { status: 400, grpc: GrpcStatus.INVALID_ARGUMENT, title: 'The request failed validation' },
  unauthenticated: { status: 401, grpc: GrpcStatus.UNAUTHENTICATED, title: 'Authentication is required' },
  forbidden: { status: 403, grpc: GrpcStatus.PERMISSION_DENIED, title: 'The token lacks the required role' },
  'not-found': { status: 404, grpc: GrpcStatus.NOT_FOUND, title: 'Not found' },
  conflict: { status: 409, grpc: GrpcStatus.FAILED_PRECONDITION, title: 'The request conflicts with the current state' },
  'catalog-version-conflict': { status: 409, grpc: GrpcStatus.ALREADY_EXISTS, title: 'This catalog version was already imported with different content' },
  'catalog-stale': { status: 409, grpc: GrpcStatus.FAILED_PRECONDITION, title: 'The catalog is older than the one already imported' },
  'delta-base-mismatch': {
    status: 409,
    grpc: GrpcStatus.FAILED_PRECONDITION,
    title: 'The inventory delta does not apply to the last report; send a full inventory',
  },
  'payload-too-large': { status: 413, grpc: GrpcStatus.RESOURCE_EXHAUSTED, title: 'The request body is too large' },
  'unsupported-media-type': { status: 415, grpc: GrpcStatus.INVALID_ARGUMENT, title: 'Unsupported content type' },
  'catalog-invalid': { status: 422, grpc: GrpcStatus.INVALID_ARGUMENT, title: 'The catalog is invalid; nothing was imported' },
  'signature-invalid': { status: 422, grpc: GrpcStatus.INVALID_ARGUMENT, title: 'The catalog signature does not verify; nothing was imported' },
  'untrusted-publisher': {
    status: 422,
    grpc: GrpcStatus.PERMISSION_DENIED,
    title: 'The catalog is not signed by a trusted publisher key; nothing was imported',
  },
  'storage-unusable': { status: 422, grpc: GrpcStatus.FAILED_PRECONDITION, title: 'The storage location cannot be used' },
  'https-required': { status: 403, grpc: GrpcStatus.FAILED_PRECONDITION, title: 'Plain HTTP carries no tokens or agent secrets: use HTTPS' },
  'too-many-requests': { status: 429, grpc: GrpcStatus.RESOURCE_EXHAUSTED, title: 'Too many failed attempts from this address; try again later' },
  'already-joined': { status: 409, grpc: GrpcStatus.ALREADY_EXISTS, title: 'This node is already a child here' },
  'protocol-unsupported': { status: 409, grpc: GrpcStatus.FAILED_PRECONDITION, title: 'The protocol version is not supported' },
  aborted: { status: 409, grpc: GrpcStatus.ABORTED, title: 'Interrupted by a newer request or a change; try again' },
  'out-of-range': { status: 416, grpc: GrpcStatus.OUT_OF_RANGE, title: 'The offset is outside the file' },
  'not-implemented': { status: 501, grpc: GrpcStatus.UNIMPLEMENTED, title: 'Not supported by this node' },
  /** Not now, not a failure: `retryAfterMs` (extra) says when to ask again. */
  deferred: { status: 503, grpc: GrpcStatus.UNAVAILABLE, title: 'Not served now; ask again later' },
  'import-busy': { status: 503, grpc: GrpcStatus.UNAVAILABLE, title: 'Another catalog import is running' },
  unavailable: { status: 503, grpc: GrpcStatus.UNAVAILABLE, title: 'Temporarily unavailable' },
  'insufficient-storage': { status: 507, grpc: GrpcStatus.RESOURCE_EXHAUSTED, title: "The node's disk is full; nothing was stored" },
  internal: { status: 500, grpc: GrpcStatus.INTERNAL, title: 'Internal error' },
} as const satisfies Record<string, CodeSpec>;

export type ErrorCode = keyof typeof ERROR_CODES;

/** Whether an error is a full disk: the file system's ENOSPC (or EDQUOT), or SQLite's SQLITE_FULL. */
export function isDiskFull(err: unknown): boolean {
  const e = err as { code?: unknown; message?: unknown } | null;
  const code = typeof e?.code === 'string' ? e.code : '';
  return (
    code === 'ENOSPC' || code === 'EDQUOT' || code.startsWith('SQLITE_FULL') || (typeof e?.message === 'string' && /database or disk is full/.test(e.message))
  );
}

export class AppError extends Error {
  readonly code: ErrorCode;
  readonly status: number;
  readonly grpcStatus: number;
  readonly title: string;
  /** Extra members of the problem document (e.g. `errors` for validation). */
  readonly extra: Record<string, unknown>;

  constructor(code: ErrorCode, detail?: string, extra: Record<string, unknown> = {}) {
    const spec: CodeSpec = ERROR_CODES[code];
    super(detail ?? spec.title);
    this.name = 'AppError';
    this.code = code;
    this.status = spec.status;
    this.grpcStatus = spec.grpc;
    this.title = spec.title;
    this.extra = extra;
  }
}

/** A field-level problem, as listed in `errors` of a problem document. */
export interface FieldError {
  /** 1-based line of the input, where the input is line oriented (catalogs). */
  line?: number;
  /** Path to the field, e.g. `files[0].sha256`. */
  path: string;
  message: string;
}

export const problemType = (code: ErrorCode): string => `urn:patchtree:problem:${code}`;

/** RFC 9457 problem document for an AppError. */
export function toProblem(err: AppError, instance?: string): Record<string, unknown> {
  return {
    type: problemType(err.code),
    title: err.title,
    status: err.status,
    detail: err.message,
    code: err.code,
    ...(instance ? { instance } : {}),
    ...err.extra,
  };
}

/** Formats a zod-style issue path (`['files', 0, 'sha256']`) as `files[0].sha256`. */
export function formatPath(path: ReadonlyArray<PropertyKey>): string {
  let out = '';
  for (const p of path) {
    if (typeof p === 'number') out += `[${p}]`;
    else out += out ? `.${String(p)}` : String(p);
  }
  return out || '(root)';
}

/** An error's message with its causes: `fetch failed: connect ECONNREFUSED 10.0.0.5:8080`. */
export function describeError(err: unknown): string {
  const parts: string[] = [];
  let e: unknown = err;
  for (let depth = 0; e && depth < 4; depth++) {
    const msg = e instanceof Error ? e.message : String(e);
    if (msg && !parts.some((p) => p.includes(msg))) parts.push(msg);
    e = e instanceof Error ? (e as { cause?: unknown }).cause : undefined;
  }
  return parts.join(': ') || 'unknown error';
}
