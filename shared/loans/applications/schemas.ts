// What an application is: its id, the applicant fields a client may send, and the stored document.
import { z } from 'zod';
import type { TraceCarrier } from '../../core/tracing.ts';
import type { AuditAction } from '../audit.ts';
import type { ChangeEntry } from './history.ts';
import { type ApplicationStatus, adminTargetStatuses } from './status.ts';

export const applicationIdSchema = z.string().regex(/^APP-[0-9A-Za-z-]{8,64}$/, 'not an application id');
export const newApplicationId = () => `APP-${crypto.randomUUID()}`;

/** Whole currency units: no floats for money. */
const applicantShape = {
  applicantName: z.string().trim().min(1).max(200),
  email: z.email().max(254).optional(),
  monthlyIncome: z.number().int().min(0).max(10_000_000),
  loanAmount: z.number().int().min(100).max(10_000_000),
  termMonths: z.number().int().min(1).max(480),
  purpose: z.string().trim().min(1).max(500).optional(),
  identityNumber: z
    .string()
    .regex(/^[A-Za-z0-9-]{4,32}$/, 'letters, digits and dashes, 4 to 32')
    .optional(),
};
export const editableFields = Object.keys(applicantShape) as (keyof typeof applicantShape)[];
/** The fields that set the money: whoever changes one prepares the loan, and the score must be redone. */
export const financialFields: readonly string[] = ['monthlyIncome', 'loanAmount', 'termMonths'];

export const applicationInputSchema = z.object(applicantShape).strict();
export type ApplicationInput = z.infer<typeof applicationInputSchema>;

/** PUT: a target status and/or applicant fields to edit, plus the version the writer read. */
export const applicationUpdateSchema = applicationInputSchema
  .partial()
  .extend({
    status: z.enum(adminTargetStatuses).optional(),
    version: z.number().int().min(1).max(Number.MAX_SAFE_INTEGER).optional(),
  })
  .strict();
export type ApplicationUpdate = z.infer<typeof applicationUpdateSchema>;

/** Keys of entries in the keyed collections (notes, checklist): they become path segments, so no dots or $. */
export const entryKeySchema = z.string().regex(/^[A-Za-z0-9_-]{1,64}$/, 'letters, digits, _ and -, 1 to 64');
export const contactShape = {
  phone: z
    .string()
    .trim()
    .regex(/^\+?[0-9 ()-]{3,32}$/, 'digits, spaces, ( ) and -, optionally after +'),
  email: z.email().max(254),
  address: z.string().trim().min(1).max(500),
};
/** What a client sends for a note or a checklist item; the server adds who and when. */
export const noteInputSchema = z.object({ text: z.string().trim().min(1).max(4000) }).strict();
export const checklistInputSchema = z.object({ done: z.boolean() }).strict();
/** Bounds of the keyed collections, checked on the version a patch is judged against. */
export const MAX_NOTES = 200;
export const MAX_CHECKLIST_ITEMS = 200;

export interface Note {
  text: string;
  by: string;
  at: Date;
}
export interface ChecklistItem {
  done: boolean;
  by: string;
  at: Date;
}

/**
 * A list's search (q): an application id matches that application, anything else is a case-insensitive
 * prefix of the applicant's name. Trimmed, 1 to 100 characters, no control characters.
 */
export const searchSchema = z
  .string()
  .trim()
  .min(1)
  .max(100)
  // Control characters (C0, DEL, C1) spelled out: JSON Schema tools do not all read \p{Cc}.
  // biome-ignore lint/suspicious/noControlCharactersInRegex: refusing them is the point
  .regex(/^[^\u0000-\u001f\u007f-\u009f]*$/, 'no control characters');

export const sortOptions = ['-createdAt', 'createdAt', '-updatedAt', 'updatedAt'] as const;
export type SortOption = (typeof sortOptions)[number];
export type SortField = 'createdAt' | 'updatedAt';

export function parseSort(sort: SortOption): { field: SortField; dir: 1 | -1 } {
  return sort.startsWith('-') ? { field: sort.slice(1) as SortField, dir: -1 } : { field: sort as SortField, dir: 1 };
}

/** What the last write did, stored in the same atomic write, so its audit entry and job can be redone. */
export interface LastChange {
  /**
   * The version this change produced. Other writers (OCR results, recommendations) bump the version
   * without a lastChange, so the replay must not take the document's current version for this one.
   */
  version?: number;
  at: Date;
  actor: string;
  action: AuditAction;
  /** Present when the write changed the status (the filter pinned the one source state). */
  from?: ApplicationStatus;
  fields?: string[];
  requestId?: string;
  /** The id of the change-log entry this write pushed, when it could not pin its version (a merge). */
  change?: string;
}

export interface Application extends ApplicationInput {
  _id: string;
  status: ApplicationStatus;
  version: number;
  createdAt: Date;
  updatedAt: Date;
  createdBy: string;
  updatedBy: string;
  /** The creator, financial-field editors and document uploaders (four eyes: see shared/identity/rbac.ts). */
  preparedBy?: string[];
  approvedBy?: string;
  /** Nested data that merges per entry (PATCH): contact details, notes and a review checklist keyed by id. */
  contact?: { phone?: string; email?: string; address?: string };
  notes?: Record<string, Note>;
  checklist?: Record<string, ChecklistItem>;
}

export interface ApplicationDoc extends Application {
  lastChange: LastChange;
  /**
   * The trace context of the write that approved it (while tracing is on): the disbursement continues that
   * trace, so one trace runs from the upload through OCR and approval to the payment. Never in responses.
   */
  approvalTrace?: TraceCarrier;
  /** The recent changes, one per version (history.ts); never shown in responses. */
  changes?: ChangeEntry[];
  changeHead?: string;
}

export interface Actor {
  /** The admin's id. */
  id: string;
  requestId?: string;
}
