// Errors are values with a code; the HTTP layer maps them to statuses in one place.

/**
 * Every code an error of ours carries, closed: the HTTP layer's status table must name each one, so a
 * typo or a code without a status fails the type check. Clients see these in `error.code`.
 */
export const errorCodes = [
  // The request itself
  'validation',
  'page_too_deep',
  'unsupported_media_type',
  'payload_too_large',
  'image_too_large',
  'precondition_required',
  'http_error',
  // Who asks
  'unauthorized',
  'invalid_credentials',
  'token_expired',
  'token_revoked',
  'session_revoked',
  'refresh_reused',
  'forbidden',
  'csrf_failed',
  'four_eyes_preparer_cannot_approve',
  'four_eyes_preparer_cannot_disburse',
  'four_eyes_approver_cannot_disburse',
  'rate_limited',
  'too_many_streams',
  // The record
  'not_found',
  'conflict',
  'evidence_frozen',
  'merge_conflict',
  'merge_base_too_old',
  'last_admin',
  'stale_token',
  'precondition_failed',
  // The service
  'lock_timeout',
  'lock_lost',
  'overloaded',
  'unavailable',
  'events_unsupported',
  'client_closed_request',
  'internal',
  'misconfigured',
  // Never a client's answer: a process's own failures
  'config',
  'unreadable_document',
  // The payment provider refused a disbursement's payment (4xx): asking again gets the same answer
  'payment_refused',
] as const;

export type ErrorCode = (typeof errorCodes)[number];

export class AppError extends Error {
  readonly code: ErrorCode;
  readonly details?: unknown;
  /** `options.cause`: the error this one wraps, kept for the logs (never sent to a client). */
  constructor(code: ErrorCode, message: string, details?: unknown, options?: ErrorOptions) {
    super(message, options);
    this.name = new.target.name;
    this.code = code;
    this.details = details;
  }
}

/** A write carried a stale version; `current` is the document as it is now (`details`: e.g. the merge conflicts). */
export class ConflictError<T = unknown> extends AppError {
  readonly current: T;
  constructor(
    message: string,
    current: T,
    code: ErrorCode = 'conflict',
    options?: ErrorOptions & { details?: unknown },
  ) {
    super(code, message, options?.details, options?.cause === undefined ? undefined : { cause: options.cause });
    this.current = current;
  }
}

/** The admin's roles allow the action, but a rule about this record forbids it to them (e.g. four eyes). */
export class ForbiddenError extends AppError {}

export class NotFoundError extends AppError {
  constructor(message: string, options?: ErrorOptions) {
    super('not_found', message, undefined, options);
  }
}

export class ValidationError extends AppError {
  constructor(message: string, details?: unknown, options?: ErrorOptions) {
    super('validation', message, details, options);
  }
}

/** A lease ended (expired or was taken over) while its holder still worked under it. */
export class LockLostError extends AppError {
  constructor(message: string, details?: unknown, options?: ErrorOptions) {
    super('lock_lost', message, details, options);
  }
}

/** A write carried a fencing token older than one already accepted for that resource. */
export class StaleTokenError extends AppError {
  constructor(message: string, details?: unknown, options?: ErrorOptions) {
    super('stale_token', message, details, options);
  }
}

export class ConfigError extends AppError {
  constructor(problems: string[]) {
    super('config', `Invalid configuration:\n${problems.map((p) => `  - ${p}`).join('\n')}`, problems);
  }
}

/** A lease could not be acquired within the time the caller was willing to wait. */
export class LockTimeoutError extends AppError {
  constructor(message: string, details?: unknown, options?: ErrorOptions) {
    super('lock_timeout', message, details, options);
  }
}

/**
 * The request carries no valid credentials (missing, malformed, expired, revoked; a failed login).
 * `invalidToken`: a token was presented and refused (HTTP: RFC 6750's error="invalid_token").
 */
export class UnauthorizedError extends AppError {
  readonly invalidToken: boolean;
  constructor(
    message: string,
    code: ErrorCode = 'unauthorized',
    options: ErrorOptions & { invalidToken?: boolean } = {},
  ) {
    super(code, message, undefined, options.cause === undefined ? undefined : { cause: options.cause });
    this.invalidToken = options.invalidToken ?? false;
  }
}

/** A request's If-Match precondition failed (RFC 9110: 412); `current` is the document as it is now. */
export class PreconditionFailedError<T = unknown> extends AppError {
  readonly current: T;
  constructor(message: string, current: T) {
    super('precondition_failed', message);
    this.current = current;
  }
}

/** Nothing usable could be read from a document (no text, no fields, a PDF without a text layer). */
export class UnreadableDocumentError extends AppError {
  constructor(message: string, details?: unknown, options?: ErrorOptions) {
    super('unreadable_document', message, details, options);
  }
}

/** The change would leave no active admin (enabled, holding the 'admin' role). */
export class LastAdminError extends AppError {
  constructor(message: string) {
    super('last_admin', message);
  }
}
