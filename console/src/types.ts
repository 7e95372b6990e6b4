// The API's JSON as the console reads it (dates are strings on the wire).
import type { ApplicationStatus } from '../../shared/loans/applications/status.ts';

export interface OcrField {
  value: string | number;
  confidence: number;
  label?: string;
}
export interface Application {
  _id: string;
  applicantName: string;
  email?: string;
  monthlyIncome: number;
  loanAmount: number;
  termMonths: number;
  purpose?: string;
  identityNumber?: string;
  status: ApplicationStatus;
  version: number;
  createdAt: string;
  updatedAt: string;
  createdBy: string;
  updatedBy: string;
  preparedBy?: string[];
  approvedBy?: string;
  ocr?: { documentId: string; fields: Record<string, OcrField | undefined> };
  recommendation?: { recommendation: string; reasons: string[] };
  repaymentPlan?: { monthlyPayment: number; termMonths: number; annualRate: number; total: number };
  disbursement?: { idempotencyKey: string; amount: number; state: string };
  contact?: { phone?: string; email?: string; address?: string };
  mergedOver?: { version: number; by: string; at: string; paths: string[] }[];
}
export interface ApplicationList {
  items: Application[];
  page?: number;
  limit: number;
  total?: number;
  nextCursor?: string | null;
}
export interface Presence {
  applicationId: string;
  adminId: string;
  adminName?: string;
}
export interface MergeConflict {
  path: string;
  /** The path their change touched, when it is not the same as yours (a parent or a child of it). */
  theirPath?: string;
  base: unknown;
  theirs: unknown;
  yours: unknown;
  by: string;
  byName?: string;
  at: string;
  version: number;
}
