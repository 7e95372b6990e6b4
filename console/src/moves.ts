// The status moves an admin may make from the console and what each is called. Roles, the status machine
// and four eyes decide, as they do in the API: a move shown here is one the API accepts.
import { fourEyesRefusal } from '../../shared/identity/rbac.ts';
import { adminTargetStatuses, canMove } from '../../shared/loans/applications/status.ts';
import type { Viewer } from './main.tsx';
import type { Application } from './types.ts';

export const moveLabels: Record<string, string> = {
  under_review: 'Start review',
  approved: 'Approve',
  rejected: 'Reject',
};

/** The moves the viewer's roles allow at all. */
export const movesOf = (viewer: Viewer) => adminTargetStatuses.filter((to) => viewer.can(`status:${to}`));

/** Of those, the ones this application allows the viewer now. */
export const movesOn = (viewer: Viewer, app: Application) =>
  movesOf(viewer).filter(
    (to) => canMove(app.status, to) && !(to === 'approved' && fourEyesRefusal('approve', app, viewer.id)),
  );
