// List cursors: opaque to clients, they name where a keyset page ends.
import { z } from 'zod';
import { ValidationError } from '../../core/errors.ts';
import type { KeysetPosition } from './queries.ts';
import { applicationIdSchema, parseSort, type SortOption, sortOptions } from './schemas.ts';
import { type ApplicationStatus, statuses } from './status.ts';

const cursorSchema = z
  .object({
    s: z.enum(sortOptions),
    st: z.enum(statuses).nullable(),
    v: z.number().int(),
    i: applicationIdSchema,
  })
  .strict();
export type CursorPosition = z.infer<typeof cursorSchema>;

/** Opaque to clients: base64url of the sort, the status filter and the last (sort value, _id) seen. */
export function encodeCursor(position: CursorPosition): string {
  return btoa(JSON.stringify(position)).replaceAll('+', '-').replaceAll('/', '_').replace(/=+$/, '');
}

export function decodeCursor(cursor: string): CursorPosition {
  let parsed: unknown;
  try {
    parsed = JSON.parse(atob(cursor.replaceAll('-', '+').replaceAll('_', '/')));
  } catch {
    parsed = undefined;
  }
  const result = cursorSchema.safeParse(parsed);
  if (!result.success) throw new ValidationError('cursor is not valid', [{ path: 'cursor', message: 'not a cursor' }]);
  return result.data;
}

/** What a list reads, once its cursor (if any) is decoded: the effective sort and status, and where it starts. */
export interface ListPlan {
  sort: SortOption;
  status: ApplicationStatus | undefined;
  after: KeysetPosition | undefined;
  skip: number;
}

/**
 * The list a query names. A cursor carries its sort and status: a query may repeat them, not contradict
 * them (ValidationError). Page mode skips (page - 1) * limit rows.
 */
export function listPlan(query: {
  status?: ApplicationStatus;
  sort?: SortOption;
  limit: number;
  page?: number;
  cursor?: string;
}): ListPlan {
  if (query.cursor === undefined) {
    const skip = query.page ? (query.page - 1) * query.limit : 0;
    return { sort: query.sort ?? '-createdAt', status: query.status, after: undefined, skip };
  }
  const position = decodeCursor(query.cursor);
  if ((query.sort && query.sort !== position.s) || (query.status && query.status !== position.st)) {
    throw new ValidationError('the cursor was made for another sort or status filter', [
      { path: 'cursor', message: 'sort and status must match the cursor, or be left out' },
    ]);
  }
  const after = { ...parseSort(position.s), value: new Date(position.v), id: position.i };
  return { sort: position.s, status: position.st ?? undefined, after, skip: 0 };
}
