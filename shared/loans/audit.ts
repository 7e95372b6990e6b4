// The audit trail: who changed which application, from which status to which, and when. One entry per
// version of an application, keyed `<applicationId>:<version>`, so writing an entry twice (a retry, a
// replay after a crash) is harmless: the second insert meets the first and is ignored.
import type { Collection, Db } from 'mongodb';
import { type IndexPlan, onlyDuplicateKeyErrors } from '../core/db.ts';

export const AUDIT_COLLECTION = 'audit';

export type AuditAction = 'create' | 'update' | 'batch-update';

export interface AuditEntry {
  /** `<applicationId>:<version>`: one entry per version, whoever writes it. */
  _id: string;
  at: Date;
  /** The admin's id. */
  actor: string;
  action: AuditAction;
  applicationId: string;
  /** The status before the change (null on create). */
  from: string | null;
  /** The status after the change (equal to `from` for an edit that kept the status). */
  to: string;
  /** The application's version after the change. */
  version: number;
  /** Applicant fields the change edited, if any. */
  fields?: string[];
  requestId?: string;
}

export const auditId = (applicationId: string, version: number) => `${applicationId}:${version}`;

/** An application's history by version; an admin's actions by time. */
export const auditIndexes: IndexPlan = {
  collection: AUDIT_COLLECTION,
  indexes: [
    { key: { applicationId: 1, version: 1 }, name: 'by_application' },
    { key: { actor: 1, at: -1 }, name: 'by_actor' },
  ],
};

export const auditQueries = {
  /** An application's entries, after a version when paging (the by_application index serves both). */
  ofApplication: (applicationId: string, afterVersion?: number) =>
    afterVersion === undefined ? { applicationId } : { applicationId, version: { $gt: afterVersion } },
  historyOrder: { version: 1 } as const,
};

export interface HistoryPage {
  /** At most `limit` entries after `afterVersion`, oldest (lowest version) first. */
  limit?: number;
  afterVersion?: number;
  signal?: AbortSignal;
}

export class AuditLog {
  readonly collection: Collection<AuditEntry>;

  constructor(db: Db, collection = AUDIT_COLLECTION) {
    this.collection = db.collection<AuditEntry>(collection);
  }

  /** Writes the entries in one command; entries that exist already (same _id) are left as they are. */
  async record(entries: AuditEntry[]): Promise<void> {
    if (entries.length === 0) return;
    try {
      await this.collection.insertMany(entries, { ordered: false });
    } catch (error) {
      if (!onlyDuplicateKeyErrors(error)) throw error;
    }
  }

  /** The application's entries by version, oldest first; all of them unless a page is asked for. */
  async history(applicationId: string, page: HistoryPage = {}): Promise<AuditEntry[]> {
    const cursor = this.collection
      .find(auditQueries.ofApplication(applicationId, page.afterVersion), page.signal ? { signal: page.signal } : {})
      .sort(auditQueries.historyOrder);
    if (page.limit !== undefined) cursor.limit(page.limit);
    return cursor.toArray();
  }
}
