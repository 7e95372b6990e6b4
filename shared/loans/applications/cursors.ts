// List cursors: opaque to clients, they name where a keyset page ends.
import { z } from 'zod';
import { ValidationError } from '../../core/errors.ts';
import type { KeysetPosition } from './queries.ts';
import { applicationIdSchema, parseSort, type SortOption, searchSchema, sortOptions } from './schemas.ts';
import { type ApplicationStatus, statuses } from './status.ts';

const cursorSchema = z
  .object({
    s: z.enum(sortOptions),
    st: z.enum(statuses).nullable(),
    v: z.number().int(),
    i: applicationIdSchema,
    /** The search the list was made for (absent: none). */
    q: searchSchema.optional(),
  })
  .strict();
export type CursorPosition = z.infer<typeof cursorSchema>;

/**
 * Opaque to clients: base64url of the UTF-8 JSON of the sort, the status filter, the search and the last
 * (sort value, _id) seen. (UTF-8 because a search may hold any character; ASCII cursors are as before.)
 */
export function encodeCursor(position: CursorPosition): string {
  const bytes = new TextEncoder().encode(JSON.stringify(position));
  let binary = '';
  for (const byte of bytes) binary += String.fromCharCode(byte);
  return btoa(binary).replaceAll('+', '-').replaceAll('/', '_').replace(/=+$/, '');
}

const strictUtf8 = new TextDecoder('utf-8', { fatal: true });

export function decodeCursor(cursor: string): CursorPosition {
  let parsed: unknown;
  try {
    const binary = atob(cursor.replaceAll('-', '+').replaceAll('_', '/'));
    parsed = JSON.parse(strictUtf8.decode(Uint8Array.from(binary, (char) => char.charCodeAt(0))));
  } catch {
    parsed = undefined;
  }
  const result = cursorSchema.safeParse(parsed);
  if (!result.success) throw new ValidationError('cursor is not valid', [{ path: 'cursor', message: 'not a cursor' }]);
  return result.data;
}

/** What a list reads, once its cursor (if any) is decoded: the effective sort, status and search, and where it starts. */
export interface ListPlan {
  sort: SortOption;
  status: ApplicationStatus | undefined;
  q: string | undefined;
  after: KeysetPosition | undefined;
  skip: number;
}

/**
 * The list a query names. A cursor carries its sort, status and search: a query may repeat them, not
 * contradict them (ValidationError). Page mode skips (page - 1) * limit rows.
 */
export function listPlan(query: {
  status?: ApplicationStatus;
  sort?: SortOption;
  q?: string;
  limit: number;
  page?: number;
  cursor?: string;
}): ListPlan {
  if (query.cursor === undefined) {
    const skip = query.page ? (query.page - 1) * query.limit : 0;
    return { sort: query.sort ?? '-createdAt', status: query.status, q: query.q, after: undefined, skip };
  }
  const position = decodeCursor(query.cursor);
  if (
    (query.sort && query.sort !== position.s) ||
    (query.status && query.status !== position.st) ||
    (query.q !== undefined && query.q !== position.q)
  ) {
    throw new ValidationError('the cursor was made for another sort, status filter or search', [
      { path: 'cursor', message: 'sort, status and q must match the cursor, or be left out' },
    ]);
  }
  const after = { ...parseSort(position.s), value: new Date(position.v), id: position.i };
  return { sort: position.s, status: position.st ?? undefined, q: position.q, after, skip: 0 };
}
