// The roles an admin can hold (what each may do is rbac.ts). Its own module so that the console's
// bundle takes the list without the session code behind it.
export const roles = ['viewer', 'reviewer', 'approver', 'disburser', 'admin'] as const;
export type Role = (typeof roles)[number];
