// The status machine of an application: its legal moves, and the job each status it enters publishes.

export const statuses = ['pending', 'under_review', 'approved', 'rejected', 'disbursed'] as const;
export type ApplicationStatus = (typeof statuses)[number];

/** Legal moves. A same-status "move" is not a move: it is refused like any other illegal one. */
export const transitions: Record<ApplicationStatus, readonly ApplicationStatus[]> = {
  pending: ['under_review'],
  under_review: ['approved', 'rejected'],
  approved: ['disbursed'],
  rejected: [],
  disbursed: [],
};

/** Statuses a move can lead to (nothing leads back to pending). */
export const targetStatuses = ['under_review', 'approved', 'rejected', 'disbursed'] as const;
export type TargetStatus = (typeof targetStatuses)[number];
/**
 * What PUT and batch-update may set. 'disbursed' is reached only through POST .../disburse, which
 * writes the ledger entry first: a status change alone must never move money on paper.
 */
export const adminTargetStatuses = ['under_review', 'approved', 'rejected'] as const;

/** Applicant fields can be edited until a decision is made; after that the application is frozen. */
export const editableStatuses: readonly ApplicationStatus[] = ['pending', 'under_review'];
/** Statuses in which evidence (documents, OCR results) may still be added: the decision is not taken. */
export const evidenceStatuses: readonly ApplicationStatus[] = ['pending', 'under_review'];

export const canMove = (from: ApplicationStatus, to: ApplicationStatus) => transitions[from].includes(to);
export const sourcesOf = (to: ApplicationStatus) => statuses.filter((from) => canMove(from, to));

/** The job published when an application enters a status: the work that follows it. */
export const jobOnEntering: Partial<Record<ApplicationStatus, string>> = {
  under_review: 'application.review',
  approved: 'application.approved',
};
/** One job per (application, version): a retried request or a replay publishes nothing new. */
export const jobIdFor = (name: string, applicationId: string, version: number) => `${name}:${applicationId}:${version}`;
/**
 * Retries of the jobs that follow a change: a failure is mostly transient (a database hiccup, a
 * conflict storm), and the handlers are idempotent. Runs after 1, 2, 4 and 8 s, then dead-lettered.
 */
export const jobRetry = { attempts: 5, backoff: { type: 'exponential' as const, delay: 1_000 } };

export function invalidTransition(from: ApplicationStatus, to: ApplicationStatus): string {
  const allowed = transitions[from];
  return `cannot move an application from ${from} to ${to} (allowed from ${from}: ${allowed.length ? allowed.join(', ') : 'none'})`;
}
