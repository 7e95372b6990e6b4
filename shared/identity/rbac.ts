// Who may do what. Roles are sets of permissions, not a ladder: a disburser cannot approve, an
// approver cannot disburse. Moving an application to a status needs `status:<target>`; whether the
// move itself is legal is the state machine's business (shared/loans/applications.ts), not this table's.
import { ForbiddenError } from '../core/errors.ts';
import type { Role } from './roles.ts';

export const permissions = [
  'applications:read',
  'applications:create',
  'applications:edit',
  'status:under_review',
  'status:approved',
  'status:rejected',
  'status:disbursed',
  'queue:stats',
  // Moving a dead-lettered job back to waiting (POST /api/admin/jobs/{id}/retry): reruns work, admins only.
  'queue:retry',
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

// ---- Four eyes on money -----------------------------------------------------------------------------
// Permissions say what a role may do; these rules say who may not do it to a given application: no one
// takes a loan from creation to payment alone. They are checked inside the conditional write (filters
// below) so that a concurrent preparation and decision cannot both succeed.

export const fourEyesRules = {
  preparerCannotApprove: 'four_eyes_preparer_cannot_approve',
  preparerCannotDisburse: 'four_eyes_preparer_cannot_disburse',
  approverCannotDisburse: 'four_eyes_approver_cannot_disburse',
} as const;
export type FourEyesRule = (typeof fourEyesRules)[keyof typeof fourEyesRules];

/** Who touched an application's money: recorded on it by the write that made each change. */
export interface Provenance {
  /** The creator, every admin who changed a financial field, every admin who uploaded a document. */
  preparedBy?: readonly string[];
  /** Who moved it to approved (an admin, or the approval worker). */
  approvedBy?: string;
  /** Counted as a preparer too, for applications written before preparedBy existed. */
  createdBy?: string;
}

const prepared = (app: Provenance, actor: string) => app.createdBy === actor || !!app.preparedBy?.includes(actor);

/** The rule that forbids `actor` to approve or disburse `app`, or null when none does. */
export function fourEyesRefusal(action: 'approve' | 'disburse', app: Provenance, actor: string): FourEyesRule | null {
  if (prepared(app, actor)) {
    return action === 'approve' ? fourEyesRules.preparerCannotApprove : fourEyesRules.preparerCannotDisburse;
  }
  if (action === 'disburse' && app.approvedBy === actor) return fourEyesRules.approverCannotDisburse;
  return null;
}

/** The same rules as a filter to AND into the write's own: it matches only if no rule forbids `actor`. */
export function fourEyesFilter(action: 'approve' | 'disburse', actor: string): Record<string, unknown> {
  const notPreparer = { createdBy: { $ne: actor }, preparedBy: { $ne: actor } };
  return action === 'approve' ? notPreparer : { ...notPreparer, approvedBy: { $ne: actor } };
}

export const fourEyesMessages: Record<FourEyesRule, string> = {
  four_eyes_preparer_cannot_approve:
    'You prepared this application (created it, changed its financial fields or uploaded a document): someone else must approve it.',
  four_eyes_preparer_cannot_disburse:
    'You prepared this application (created it, changed its financial fields or uploaded a document): someone else must disburse it.',
  four_eyes_approver_cannot_disburse: 'You approved this application: someone else must disburse it.',
};

export const fourEyesError = (rule: FourEyesRule, applicationId: string) =>
  new ForbiddenError(rule, fourEyesMessages[rule], { applicationId });
