// Admin accounts: unique email, PBKDF2 password hash, roles. Logins take the same time and give
// the same answer whether the email is unknown or the password wrong.
import type { Collection, Db } from 'mongodb';
import type { Clock } from './clock.ts';
import type { IndexPlan } from './db.ts';
import { ConflictError } from './errors.ts';
import { hashPassword, needsRehash, verifyPassword } from './password.ts';
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
  private dummyHash: Promise<string> | null = null;

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
      if ((error as { code?: number }).code === 11000) {
        throw new ConflictError(`an admin with email ${doc.email} exists`, null);
      }
      throw error;
    }
    return toPublic(doc);
  }

  /** The admin whose email and password match, else null; the same work either way. */
  async authenticate(email: string, password: string): Promise<PublicAdmin | null> {
    const admin = await this.collection.findOne({ email: normalizeEmail(email) });
    if (!admin || admin.disabled) {
      // Spend the same time as a real check, so timing does not tell which emails exist.
      this.dummyHash ??= hashPassword('not-a-password', this.iterations);
      await verifyPassword(password, await this.dummyHash);
      return null;
    }
    if (!(await verifyPassword(password, admin.passwordHash))) return null;
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

  /** Sets roles and/or the disabled flag; the admin as it is afterwards, or null when there is none. */
  async update(id: string, changes: { roles?: Role[]; disabled?: boolean }): Promise<PublicAdmin | null> {
    const $set: Partial<Pick<AdminDoc, 'roles' | 'disabled'>> = {};
    if (changes.roles !== undefined) $set.roles = changes.roles;
    if (changes.disabled !== undefined) $set.disabled = changes.disabled;
    if (Object.keys($set).length === 0) return this.get(id);
    const endsSessions = changes.roles !== undefined || changes.disabled === true;
    const admin = await this.collection.findOneAndUpdate(
      { _id: id },
      { $set, ...(endsSessions ? { $inc: { sessionEpoch: 1 } } : {}) },
      { returnDocument: 'after', projection: { passwordHash: 0 } },
    );
    return admin as PublicAdmin | null;
  }
}
