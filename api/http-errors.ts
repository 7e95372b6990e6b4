// The one place where errors become HTTP responses: {error: {code, message, details?}}.
import { HTTPException } from 'hono/http-exception';
import {
  MongoBulkWriteError,
  MongoNetworkError,
  MongoOperationTimeoutError,
  MongoServerSelectionError,
  MongoTopologyClosedError,
} from 'mongodb';
import { AppError, ConflictError, ForbiddenError, PreconditionFailedError } from '../shared/core/errors.ts';

/** An error the HTTP layer raises itself (auth, content type, size...), with its status. */
export class HttpError extends AppError {
  readonly status: number;
  readonly headers?: Record<string, string>;
  constructor(status: number, code: string, message: string, details?: unknown, headers?: Record<string, string>) {
    super(code, message, details);
    this.status = status;
    this.headers = headers;
  }
}

/** The client closed the connection before the answer was ready. */
export class ClientGoneError extends Error {
  override readonly name = 'AbortError';
}

const statusByCode: Record<string, number> = {
  validation: 400,
  not_found: 404,
  conflict: 409,
  lock_timeout: 503,
  lock_lost: 503,
  stale_token: 409,
  last_admin: 409,
};

export interface ErrorBody {
  error: { code: string; message: string; details?: unknown };
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

/** Every 503 says when to retry, whichever path raised it (a lease not acquired, a database down, overload). */
export function mapError(error: unknown): MappedError {
  const mapped = mapErrorOnly(error);
  if (mapped.status === 503 && !Object.keys(mapped.headers).some((name) => name.toLowerCase() === 'retry-after')) {
    mapped.headers = { ...mapped.headers, 'Retry-After': RETRY_AFTER_S };
  }
  return mapped;
}

function mapErrorOnly(error: unknown): MappedError {
  if (error instanceof HttpError) {
    return { status: error.status, body: bodyOf(error), headers: error.headers ?? {}, bug: false };
  }
  if (error instanceof HTTPException && error.status < 500) {
    // Raised by Hono itself, e.g. its validator on a body that is not JSON at all.
    const code = error.status === 400 ? 'validation' : 'http_error';
    return { status: error.status, body: { error: { code, message: error.message } }, headers: {}, bug: false };
  }
  if (error instanceof ConflictError) {
    return { status: 409, body: { ...bodyOf(error), current: error.current }, headers: {}, bug: false };
  }
  if (error instanceof ForbiddenError) {
    return { status: 403, body: bodyOf(error), headers: {}, bug: false };
  }
  if (error instanceof PreconditionFailedError) {
    return { status: 412, body: { ...bodyOf(error), current: error.current }, headers: {}, bug: false };
  }
  if (error instanceof AppError && statusByCode[error.code]) {
    return { status: statusByCode[error.code] ?? 500, body: bodyOf(error), headers: {}, bug: false };
  }
  if (error instanceof Error && error.name === 'AbortError') {
    // The client went away and its database read was abandoned; nobody reads this answer.
    return {
      status: 499,
      body: { error: { code: 'client_closed_request', message: 'The client closed the request.' } },
      headers: {},
      bug: false,
    };
  }
  if (isDatabaseUnavailable(error)) {
    return {
      status: 503,
      body: { error: { code: 'unavailable', message: 'The database is not reachable; try again shortly.' } },
      headers: { 'Retry-After': RETRY_AFTER_S },
      bug: false,
    };
  }
  return {
    status: 500,
    body: { error: { code: 'internal', message: 'Internal error' } },
    headers: {},
    bug: true,
  };
}

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
