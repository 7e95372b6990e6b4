// Errors are values with a code; the HTTP layer maps them to statuses in one place.

export class AppError extends Error {
  readonly code: string;
  readonly details?: unknown;
  constructor(code: string, message: string, details?: unknown) {
    super(message);
    this.name = new.target.name;
    this.code = code;
    this.details = details;
  }
}

/** A write carried a stale version; `current` is the document as it is now. */
export class ConflictError<T = unknown> extends AppError {
  readonly current: T;
  constructor(message: string, current: T, code = 'conflict') {
    super(code, message);
    this.current = current;
  }
}

/** The admin's roles allow the action, but a rule about this record forbids it to them (e.g. four eyes). */
export class ForbiddenError extends AppError {}

export class NotFoundError extends AppError {
  constructor(message: string) {
    super('not_found', message);
  }
}

export class ValidationError extends AppError {
  constructor(message: string, details?: unknown) {
    super('validation', message, details);
  }
}

/** A lease ended (expired or was taken over) while its holder still worked under it. */
export class LockLostError extends AppError {
  constructor(message: string, details?: unknown) {
    super('lock_lost', message, details);
  }
}

/** A write carried a fencing token older than one already accepted for that resource. */
export class StaleTokenError extends AppError {
  constructor(message: string, details?: unknown) {
    super('stale_token', message, details);
  }
}

export class ConfigError extends AppError {
  constructor(problems: string[]) {
    super('config', `Invalid configuration:\n${problems.map((p) => `  - ${p}`).join('\n')}`, problems);
  }
}

/** A lease could not be acquired within the time the caller was willing to wait. */
export class LockTimeoutError extends AppError {
  constructor(message: string, details?: unknown) {
    super('lock_timeout', message, details);
  }
}

/** The request carries no valid credentials (missing, malformed, expired, revoked). */
export class UnauthorizedError extends AppError {
  constructor(message: string, code = 'unauthorized') {
    super(code, message);
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
  constructor(message: string, details?: unknown) {
    super('unreadable_document', message, details);
  }
}

/** The change would leave no active admin (enabled, holding the 'admin' role). */
export class LastAdminError extends AppError {
  constructor(message: string) {
    super('last_admin', message);
  }
}
