// List cursors: opaque to clients, they name where a keyset page ends.
import { z } from 'zod';
import { ValidationError } from '../../core/errors.ts';
import { applicationIdSchema, sortOptions } from './schemas.ts';
import { statuses } from './status.ts';

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
