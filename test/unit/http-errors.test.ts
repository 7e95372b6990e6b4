// The status table covers every error code (the type check is the main guard: a code without a status,
// or a status that disagrees with the table, does not compile); here every code is answered for real.
import { HTTPException } from 'hono/http-exception';
import { describe, expect, it } from 'vitest';
import { HttpError, mapError, statusByCode } from '../../api/http-errors.ts';
import { AppError, ConflictError, errorCodes, UnauthorizedError } from '../../shared/core/errors.ts';

describe('the error code -> status table', () => {
  it('names every code of the union, and nothing else', () => {
    expect(Object.keys(statusByCode).sort()).toEqual([...errorCodes].sort());
    for (const status of Object.values(statusByCode)) expect(status).toBeGreaterThanOrEqual(400);
  });

  it('answers every code with its status and {error: {code, message, details?}}', () => {
    for (const code of errorCodes) {
      const status = statusByCode[code];
      for (const error of [
        new AppError(code, `about ${code}`, [{ path: 'x', message: 'y' }]),
        new HttpError(status, code, `about ${code}`),
      ]) {
        const mapped = mapError(error);
        expect(mapped.status, code).toBe(status);
        if (status === 500) {
          // Ours to fix: the client learns nothing more than that.
          expect(mapped.body, code).toEqual({ error: { code: 'internal', message: 'Internal error' } });
          expect(mapped.bug, code).toBe(true);
          continue;
        }
        const details = error instanceof HttpError ? {} : { details: [{ path: 'x', message: 'y' }] };
        expect(mapped.body, code).toEqual({ error: { code, message: `about ${code}`, ...details } });
        expect(mapped.bug, code).toBe(false);
        if (status === 401) expect(mapped.headers['WWW-Authenticate'], code).toBe('Bearer realm="loan-admin"');
        if (status === 503) expect(mapped.headers['Retry-After'], code).toBe('1');
      }
    }
  });
});

describe('the mapper beside the table', () => {
  it('a conflict keeps its current document; a wrapped cause stays out of the body', () => {
    const conflict = mapError(new ConflictError('stale', { version: 3 }, 'evidence_frozen'));
    expect(conflict).toMatchObject({
      status: 409,
      body: { error: { code: 'evidence_frozen' }, current: { version: 3 } },
    });
    const inner = new Error('jose says no');
    const refused = new UnauthorizedError('The token is not valid.', 'unauthorized', {
      invalidToken: true,
      cause: inner,
    });
    expect(refused.cause).toBe(inner);
    const mapped = mapError(refused);
    expect(mapped.body).toEqual({ error: { code: 'unauthorized', message: 'The token is not valid.' } });
    expect(mapped.headers).toEqual({ 'WWW-Authenticate': 'Bearer realm="loan-admin", error="invalid_token"' });
  });

  it("a 401 that names its own challenge keeps it; Hono's own exceptions keep their status", () => {
    const metrics = new HttpError(401, 'unauthorized', 'token', undefined, {
      'WWW-Authenticate': 'Bearer realm="metrics"',
    });
    expect(mapError(metrics).headers).toEqual({ 'WWW-Authenticate': 'Bearer realm="metrics"' });
    expect(mapError(new HTTPException(400, { message: 'Malformed JSON' }))).toMatchObject({
      status: 400,
      body: { error: { code: 'validation', message: 'Malformed JSON' } },
    });
    expect(mapError(new HTTPException(405, { message: 'no' }))).toMatchObject({
      status: 405,
      body: { error: { code: 'http_error' } },
    });
  });
});
