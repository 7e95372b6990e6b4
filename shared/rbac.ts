// Who may do what. Roles are sets of permissions, not a ladder: a disburser cannot approve, an
// approver cannot disburse. Moving an application to a status needs `status:<target>`; whether the
// move itself is legal is the state machine's business (shared/applications), not this table's.
import type { Role } from './sessions.ts';

export const permissions = [
  'applications:read',
  'applications:create',
  'applications:edit',
  'status:under_review',
  'status:approved',
  'status:rejected',
  'status:disbursed',
  'queue:stats',
  'admins:manage',
] as const;
export type Permission = (typeof permissions)[number];

export const rolePermissions: Record<Role, readonly Permission[]> = {
  viewer: ['applications:read'],
  reviewer: ['applications:read', 'applications:create', 'applications:edit', 'status:under_review'],
  approver: ['applications:read', 'status:approved', 'status:rejected'],
  disburser: ['applications:read', 'status:disbursed'],
  admin: permissions,
};

export function can(roles: readonly Role[], permission: Permission): boolean {
  return roles.some((role) => rolePermissions[role]?.includes(permission));
}
