// "Someone is editing this right now": the console renews its own mark while an edit form has unsaved
// changes, and reads everyone's marks (one shared, briefly cached answer per API instance).
import { api, get } from './api.ts';
import type { Presence } from './types.ts';

export const PRESENCE_RENEW_MS = 5_000;

export async function editingNow(): Promise<Map<string, Presence[]>> {
  const { editing } = await get<{ editing: Presence[] }>('/api/presence');
  const byApplication = new Map<string, Presence[]>();
  for (const mark of editing)
    byApplication.set(mark.applicationId, [...(byApplication.get(mark.applicationId) ?? []), mark]);
  return byApplication;
}

export const markEditing = (applicationId: string) =>
  api('PUT', `/api/applications/${applicationId}/presence`, { editing: true }).catch(() => undefined);
export const unmarkEditing = (applicationId: string) =>
  api('DELETE', `/api/applications/${applicationId}/presence`).catch(() => undefined);
