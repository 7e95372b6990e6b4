// Admin ids to names, asked once per id and kept for the page's life: the audit trail, the conflict
// dialog and the "being edited" marks all name people, not ids.
import { useEffect, useState } from 'preact/hooks';
import { get } from './api.ts';

const known = new Map<string, string>();
const asked = new Set<string>();
const listeners = new Set<() => void>();

async function ask(ids: string[]) {
  const missing = ids.filter((id) => !asked.has(id));
  if (missing.length === 0) return;
  for (const id of missing) asked.add(id);
  try {
    const { items } = await get<{ items: { id: string; name: string }[] }>(
      `/api/admins/names?${new URLSearchParams({ ids: missing.join(',') })}`,
    );
    for (const { id, name } of items) known.set(id, name);
    for (const listener of listeners) listener();
  } catch {
    for (const id of missing) asked.delete(id);
  }
}

/** A function from id to name (the id itself until the name is known, or for the workers). */
export function useNames(ids: (string | undefined)[]): (id: string | undefined) => string {
  const [, redraw] = useState(0);
  const key = [...new Set(ids.filter((id): id is string => !!id))].sort().join(',');
  useEffect(() => {
    const listener = () => redraw((n) => n + 1);
    listeners.add(listener);
    if (key) void ask(key.split(','));
    return () => void listeners.delete(listener);
  }, [key]);
  return (id) => (id ? (known.get(id) ?? id) : '—');
}
