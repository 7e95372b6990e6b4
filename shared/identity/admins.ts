// Admin accounts: unique email, PBKDF2 password hash, roles. Logins take the same time and give
// the same answer whether the email is unknown or the password wrong. Role and access changes go
// through one guard document, so none leaves the platform without an active admin (see update).
import type { Collection, Db, Filter } from 'mongodb';
import { backoffDelay, type Clock, sleep } from '../core/clock.ts';
import { type IndexPlan, isDuplicateKeyError } from '../core/db.ts';
import { ConflictError, LastAdminError, LockTimeoutError } from '../core/errors.ts';
import { hashPassword, needsRehash, verifyPasswordAtCost } from './password.ts';
import type { AdminState, Role } from './sessions.ts';

export interface AdminDoc {
  _id: string;
  email: string;
  name: string;
  passwordHash: string;
  roles: Role[];
  disabled: boolean;
  createdAt: Date;
  /** Bumped by every role change or disable: sessions started under an older one are ended. */
  sessionEpoch?: number;
  /** Bumped by every change made through update(); a pending change is written only over its own. */
  version?: number;
}

type AdminChanges = { roles?: Role[]; disabled?: boolean };

/** A change decided at a guard version and not yet known to be written to its admin. */
interface PendingChange {
  adminId: string;
  fromVersion: number;
  set: AdminChanges;
  endsSessions: boolean;
}

/** The one document every role or access change of an admin is claimed on. */
interface AdminChangeGuard {
  _id: 'changes';
  version: number;
  pending: PendingChange | null;
}

const GUARD_ID = 'changes';
const GUARD_ATTEMPTS = 50;

/** Enabled and holding the 'admin' role: what the platform must always keep at least one of. */
export function isActiveAdmin(admin: { roles: Role[]; disabled: boolean }): boolean {
  return !admin.disabled && admin.roles.includes('admin');
}

export type PublicAdmin = Omit<AdminDoc, 'passwordHash'>;

export const adminIndexes: IndexPlan = {
  collection: 'admins',
  indexes: [{ key: { email: 1 }, name: 'email_unique', unique: true }],
};

/** Who created or changed which admin account, and how: the trail for role and access changes. */
export interface AdminAuditEntry {
  _id: string;
  at: Date;
  /** The admin who made the change. */
  actor: string;
  action: 'admin.create' | 'admin.update';
  adminId: string;
  changes: { email?: string; roles?: Role[]; disabled?: boolean };
  requestId?: string;
}

export const adminAuditIndexes: IndexPlan = {
  collection: 'admin_audit',
  indexes: [{ key: { adminId: 1, at: 1 }, name: 'adminId_at' }],
};

export function normalizeEmail(email: string): string {
  return email.trim().toLowerCase();
}

export function toPublic({ passwordHash: _, ...admin }: AdminDoc): PublicAdmin {
  return admin;
}

export class Admins {
  readonly collection: Collection<AdminDoc>;
  private readonly iterations: number;
  private readonly clock: Clock;

  constructor(db: Db, options: { passwordIterations: number; clock: Clock }) {
    this.collection = db.collection<AdminDoc>('admins');
    this.iterations = options.passwordIterations;
    this.clock = options.clock;
  }

  async create(input: { email: string; name?: string; password: string; roles: Role[] }): Promise<PublicAdmin> {
    const doc: AdminDoc = {
      _id: crypto.randomUUID(),
      email: normalizeEmail(input.email),
      name: input.name ?? input.email,
      passwordHash: await hashPassword(input.password, this.iterations),
      roles: input.roles,
      disabled: false,
      createdAt: new Date(this.clock.now()),
    };
    try {
      await this.collection.insertOne(doc);
    } catch (error) {
      if (isDuplicateKeyError(error)) {
        throw new ConflictError(`an admin with email ${doc.email} exists`, null, 'conflict', { cause: error });
      }
      throw error;
    }
    return toPublic(doc);
  }

  /**
   * The admin whose email and password match, else null. Every check costs one PBKDF2 at the
   * configured iterations, so timing tells neither which emails exist nor how old a stored hash is.
   */
  async authenticate(email: string, password: string): Promise<PublicAdmin | null> {
    const admin = await this.collection.findOne({ email: normalizeEmail(email) });
    const stored = admin && !admin.disabled ? admin.passwordHash : null;
    if (!(await verifyPasswordAtCost(password, stored, this.iterations)) || !admin) return null;
    if (needsRehash(admin.passwordHash, this.iterations)) {
      const passwordHash = await hashPassword(password, this.iterations);
      await this.collection.updateOne({ _id: admin._id, passwordHash: admin.passwordHash }, { $set: { passwordHash } });
    }
    return toPublic(admin);
  }

  /** Records a change to an admin account (after the change itself succeeded). */
  async audit(entry: Omit<AdminAuditEntry, '_id' | 'at'>): Promise<void> {
    await this.collection.db
      .collection<AdminAuditEntry>('admin_audit')
      .insertOne({ _id: crypto.randomUUID(), at: new Date(this.clock.now()), ...entry });
  }

  async get(id: string): Promise<PublicAdmin | null> {
    const admin = await this.collection.findOne({ _id: id }, { projection: { passwordHash: 0 } });
    return admin as PublicAdmin | null;
  }

  /** The names of these admins (ids that are no admin are left out): what screens show for an id. */
  async names(ids: readonly string[]): Promise<{ id: string; name: string }[]> {
    const found = await this.collection.find({ _id: { $in: [...ids] } }, { projection: { name: 1 } }).toArray();
    return found.map((admin) => ({ id: admin._id, name: admin.name }));
  }

  /** What sessions check at login and on every refresh. */
  async sessionState(id: string): Promise<AdminState | null> {
    const admin = await this.collection.findOne(
      { _id: id },
      { projection: { roles: 1, disabled: 1, sessionEpoch: 1 } },
    );
    return admin && { roles: admin.roles, disabled: admin.disabled, epoch: admin.sessionEpoch ?? 0 };
  }

  /** Creates the first admin from ADMIN_EMAIL/ADMIN_PASSWORD when there is no admin at all. */
  async bootstrap(email: string | undefined, password: string | undefined): Promise<'created' | 'exists' | 'skipped'> {
    if (!email || !password) return 'skipped';
    if (await this.collection.findOne({}, { projection: { _id: 1 } })) return 'exists';
    try {
      await this.create({ email, password, roles: ['admin'], name: 'First admin' });
      return 'created';
    } catch (error) {
      // Another instance starting at the same moment created it.
      if (error instanceof ConflictError) return 'exists';
      throw error;
    }
  }

  /** Admins by email, `limit` at a time after `afterEmail` (the unique email index serves the sort). */
  async list(options: { limit: number; afterEmail?: string }): Promise<PublicAdmin[]> {
    const filter = options.afterEmail === undefined ? {} : { email: { $gt: options.afterEmail } };
    const admins = await this.collection
      .find(filter, { projection: { passwordHash: 0 }, sort: { email: 1 }, limit: options.limit })
      .toArray();
    return admins as PublicAdmin[];
  }

  /**
   * Sets roles and/or the disabled flag; the admin as it is afterwards, or null when there is none.
   * LastAdminError when it would leave no active admin, however many changes race (no transactions).
   *
   * Every change is decided at a version of the guard document (the count of other active admins read
   * after it) and claimed by a compare-and-set on that version, so decisions are serialised. The claim
   * stays pending until the change is written to its admin, and whoever finds a change pending writes it
   * first (idempotent: conditional on the admin's version), so no count runs while a change is in flight
   * and a process dying mid-change blocks nobody. A lease would not do: a holder paused past its TTL
   * would write after its successor counted, and a fencing token guards one document, not a count.
   * `endSessions` is called for an admin whose pending change this call wrote on another's behalf.
   */
  async update(
    id: string,
    changes: AdminChanges,
    endSessions?: (adminId: string) => Promise<void>,
  ): Promise<PublicAdmin | null> {
    const set: AdminChanges = {};
    if (changes.roles !== undefined) set.roles = changes.roles;
    if (changes.disabled !== undefined) set.disabled = changes.disabled;
    // An unknown admin writes nothing, not even the guard document.
    if (Object.keys(set).length === 0 || !(await this.get(id))) return this.get(id);
    for (let attempt = 1; attempt <= GUARD_ATTEMPTS; attempt++) {
      const guard = await this.guard();
      if (guard.pending) {
        await this.complete(guard.version, guard.pending);
        if (guard.pending.endsSessions) await endSessions?.(guard.pending.adminId);
        continue;
      }
      const admin = await this.get(id);
      if (!admin) return null;
      if (isActiveAdmin(admin) && !isActiveAdmin({ ...admin, ...set }) && (await this.countActive(id)) === 0)
        throw new LastAdminError('This is the last active admin: promote or enable another admin first.');
      const pending: PendingChange = {
        adminId: id,
        fromVersion: admin.version ?? 0,
        set,
        endsSessions: set.roles !== undefined || set.disabled === true,
      };
      const claimed = await this.guards.updateOne(
        { _id: GUARD_ID, version: guard.version, pending: null },
        { $set: { pending }, $inc: { version: 1 } },
      );
      if (claimed.modifiedCount === 1) {
        await this.complete(guard.version + 1, pending);
        return this.get(id);
      }
      // Another change was claimed since the read: decide again on what it left.
      await sleep(backoffDelay(attempt, { base: 2, cap: 50 }));
    }
    throw new LockTimeoutError('Too many admin changes at once; try again.');
  }

  private get guards(): Collection<AdminChangeGuard> {
    return this.collection.db.collection<AdminChangeGuard>('admin_guard');
  }

  private async guard(): Promise<AdminChangeGuard> {
    const found = await this.guards.findOne({ _id: GUARD_ID });
    if (found) return found;
    await this.guards
      .updateOne({ _id: GUARD_ID }, { $setOnInsert: { version: 0, pending: null } }, { upsert: true })
      .catch((error: unknown) => {
        // Two first changes at once: the other upsert created it.
        if (!isDuplicateKeyError(error)) throw error;
      });
    return (await this.guards.findOne({ _id: GUARD_ID }))!;
  }

  /** Writes a claimed change to its admin (once: only over the version it was decided on), then frees the guard. */
  private async complete(guardVersion: number, pending: PendingChange): Promise<void> {
    const { adminId, fromVersion, set, endsSessions } = pending;
    // Admins written before versions existed have none: that is version 0.
    const atVersion: Filter<AdminDoc> =
      fromVersion === 0 ? { $or: [{ version: 0 }, { version: { $exists: false } }] } : { version: fromVersion };
    await this.collection.updateOne(
      { _id: adminId, ...atVersion },
      { $set: { ...set, version: fromVersion + 1 }, ...(endsSessions ? { $inc: { sessionEpoch: 1 } } : {}) },
    );
    await this.guards.updateOne({ _id: GUARD_ID, version: guardVersion }, { $set: { pending: null } });
  }

  private countActive(exceptId: string): Promise<number> {
    return this.collection.countDocuments({ _id: { $ne: exceptId }, roles: 'admin', disabled: { $ne: true } });
  }
}
