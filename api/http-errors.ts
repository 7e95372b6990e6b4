// The one place where errors become HTTP responses: {error: {code, message, details?}}.
import { HTTPException } from 'hono/http-exception';
import {
  MongoBulkWriteError,
  MongoNetworkError,
  MongoOperationTimeoutError,
  MongoServerSelectionError,
  MongoTopologyClosedError,
} from 'mongodb';
import {
  AppError,
  ConflictError,
  type ErrorCode,
  PreconditionFailedError,
  UnauthorizedError,
} from '../shared/core/errors.ts';

/** The HTTP status of every error code; a 500 is a bug of ours and answers only `internal`. */
export const statusByCode = {
  validation: 400,
  page_too_deep: 400,
  unsupported_media_type: 415,
  payload_too_large: 413,
  image_too_large: 422,
  precondition_required: 428,
  // Hono's own HTTPException keeps its status; this is the status of one raised as ours.
  http_error: 400,
  unauthorized: 401,
  invalid_credentials: 401,
  token_expired: 401,
  token_revoked: 401,
  session_revoked: 401,
  refresh_reused: 401,
  forbidden: 403,
  // A console (cookie) session's state-changing request without its X-CSRF-Token.
  csrf_failed: 403,
  four_eyes_preparer_cannot_approve: 403,
  four_eyes_preparer_cannot_disburse: 403,
  four_eyes_approver_cannot_disburse: 403,
  rate_limited: 429,
  too_many_streams: 429,
  not_found: 404,
  conflict: 409,
  evidence_frozen: 409,
  merge_conflict: 409,
  merge_base_too_old: 409,
  last_admin: 409,
  stale_token: 409,
  precondition_failed: 412,
  lock_timeout: 503,
  lock_lost: 503,
  overloaded: 503,
  unavailable: 503,
  // Live events need a long-lived instance (Node, Deno); Workers answer this.
  events_unsupported: 501,
  // nginx's word for a client that left: nobody reads the answer.
  client_closed_request: 499,
  internal: 500,
  misconfigured: 500,
  config: 500,
  unreadable_document: 500,
  payment_refused: 502,
} as const satisfies Record<ErrorCode, number>;

type StatusOf<C extends ErrorCode> = (typeof statusByCode)[C];

/**
 * An error the HTTP layer raises itself (content type, size, rate...), with headers of its own. Its
 * status must be the code's in the table (a mismatch fails the type check): it is there to be read.
 */
export class HttpError<C extends ErrorCode = ErrorCode> extends AppError {
  readonly status: StatusOf<C>;
  readonly headers?: Record<string, string>;
  constructor(status: StatusOf<C>, code: C, message: string, details?: unknown, headers?: Record<string, string>) {
    super(code, message, details);
    this.status = status;
    this.headers = headers;
  }
}

/** The client closed the connection before the answer was ready. */
export class ClientGoneError extends Error {
  override readonly name = 'AbortError';
}

export interface ErrorBody {
  error: { code: ErrorCode; message: string; details?: unknown };
  current?: unknown;
}

export interface MappedError {
  status: number;
  body: ErrorBody;
  headers: Record<string, string>;
  /** True when the error is ours to fix (a 500): log it with its stack. */
  bug: boolean;
}

/** Seconds a client should wait before retrying a 503 (RFC 9110: a 503 may say when to come back). */
export const RETRY_AFTER_S = '1';

/** The realm every 401 names (RFC 7235: a 401 carries a challenge). */
const REALM = 'loan-admin';

/** Every 503 says when to retry, whichever path raised it (a lease not acquired, a database down, overload). */
export function mapError(error: unknown): MappedError {
  const mapped = mapErrorOnly(error);
  if (mapped.status === 503 && !hasHeader(mapped.headers, 'retry-after')) {
    mapped.headers = { ...mapped.headers, 'Retry-After': RETRY_AFTER_S };
  }
  return mapped;
}

function mapErrorOnly(error: unknown): MappedError {
  if (error instanceof AppError) return mapAppError(error);
  if (error instanceof HTTPException && error.status < 500) {
    // Raised by Hono itself, e.g. its validator on a body that is not JSON at all.
    const code = error.status === 400 ? 'validation' : 'http_error';
    return { status: error.status, body: { error: { code, message: error.message } }, headers: {}, bug: false };
  }
  if (error instanceof Error && error.name === 'AbortError') {
    // The client went away and its database read was abandoned; nobody reads this answer.
    return answer('client_closed_request', 'The client closed the request.');
  }
  if (isDatabaseUnavailable(error)) {
    return answer('unavailable', 'The database is not reachable; try again shortly.', {
      'Retry-After': RETRY_AFTER_S,
    });
  }
  return { ...answer('internal', 'Internal error'), bug: true };
}

function mapAppError(error: AppError): MappedError {
  const status = statusByCode[error.code];
  // A process's own failure (a bad configuration, say) tells a client nothing but that it is ours.
  if (status === 500) return { ...answer('internal', 'Internal error'), bug: true };
  const headers = { ...(error instanceof HttpError ? error.headers : undefined) };
  if (status === 401 && !hasHeader(headers, 'www-authenticate')) headers['WWW-Authenticate'] = challenge(error);
  const body =
    error instanceof ConflictError || error instanceof PreconditionFailedError
      ? { ...bodyOf(error), current: error.current }
      : bodyOf(error);
  return { status, body, headers, bug: false };
}

/** RFC 6750: error="invalid_token" when a token was presented and refused, the bare challenge otherwise. */
function challenge(error: AppError): string {
  const invalid = error instanceof UnauthorizedError && error.invalidToken;
  return invalid ? `Bearer realm="${REALM}", error="invalid_token"` : `Bearer realm="${REALM}"`;
}

function answer(code: ErrorCode, message: string, headers: Record<string, string> = {}): MappedError {
  return { status: statusByCode[code], body: { error: { code, message } }, headers, bug: false };
}

const hasHeader = (headers: Record<string, string>, name: string) =>
  Object.keys(headers).some((key) => key.toLowerCase() === name);

/**
 * The database did not answer (down, frozen, restarting, timed out): 503, never a 500. A bulk write
 * (insertMany) wraps the network error it met in a MongoBulkWriteError with no write errors.
 */
export function isDatabaseUnavailable(error: unknown): boolean {
  if (
    error instanceof MongoServerSelectionError ||
    error instanceof MongoNetworkError ||
    error instanceof MongoOperationTimeoutError ||
    error instanceof MongoTopologyClosedError
  ) {
    return true;
  }
  if (error instanceof MongoBulkWriteError) return isDatabaseUnavailable(error.errorResponse);
  // The driver lets a socket error through unwrapped when the server closes a connection mid-write
  // (measured: "This socket has been ended by the other party" on a graceful stop); the only peer an
  // API instance writes to is the database.
  const code = (error as { code?: unknown } | null)?.code;
  return typeof code === 'string' && socketErrorCodes.has(code);
}

const socketErrorCodes = new Set(['EPIPE', 'ECONNRESET', 'ECONNREFUSED', 'ETIMEDOUT']);

function bodyOf(error: AppError): ErrorBody {
  return {
    error: {
      code: error.code,
      message: error.message,
      ...(error.details === undefined ? {} : { details: error.details }),
    },
  };
}
