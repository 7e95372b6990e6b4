// What follows a written change: its audit entry and the job of the status it entered. Both are keyed
// by (application, version), so writing them again (a retried request, a replay) adds nothing.
import type { Queue } from '../../concurrency/queue/index.ts';
import { type AuditAction, type AuditEntry, type AuditLog, auditId } from '../audit.ts';
import { type Application, financialFields, type LastChange } from './schemas.ts';
import { type ApplicationStatus, jobIdFor, jobOnEntering, jobRetry } from './status.ts';

/** A change that reached the database: the application as it left it, and who did what. */
export interface WrittenChange {
  app: Application;
  from: ApplicationStatus | null;
  at: Date;
  actor: string;
  action: AuditAction;
  fields?: string[];
  requestId?: string;
}

/** The change a write made, as the lastChange it stored tells it. */
export function writtenChange(app: Application, from: ApplicationStatus | null, change: LastChange): WrittenChange {
  const { at, actor, action, fields, requestId } = change;
  return { app, from, at, actor, action, fields, requestId };
}

export function withoutUndefined<T extends object>(value: T): T {
  return Object.fromEntries(Object.entries(value).filter(([, v]) => v !== undefined)) as T;
}

function auditEntryOf(change: WrittenChange): AuditEntry {
  return withoutUndefined<AuditEntry>({
    _id: auditId(change.app._id, change.app.version),
    at: change.at,
    actor: change.actor,
    action: change.action,
    applicationId: change.app._id,
    from: change.from,
    to: change.app.status,
    version: change.app.version,
    fields: change.fields,
    requestId: change.requestId,
  });
}

/** The job a change starts: entering a status starts its work; new figures under review need a new score. */
function jobNameOf(change: WrittenChange): string | undefined {
  if (change.from !== change.app.status) return jobOnEntering[change.app.status];
  const rescore = change.from === 'under_review' && !!change.fields?.some((field) => financialFields.includes(field));
  return rescore ? jobOnEntering.under_review : undefined;
}

/** The audit entries and jobs of written changes: one insert each, both idempotent. */
export async function recordEffects(changes: WrittenChange[], audit: AuditLog, queue: Queue): Promise<void> {
  if (changes.length === 0) return;
  const jobs = changes.flatMap((change) => {
    const name = jobNameOf(change);
    if (!name) return [];
    const data = { applicationId: change.app._id, version: change.app.version };
    return [{ name, data, opts: { jobId: jobIdFor(name, change.app._id, change.app.version), ...jobRetry } }];
  });
  await Promise.all([audit.record(changes.map(auditEntryOf)), jobs.length > 0 ? queue.addBulk(jobs) : undefined]);
}
