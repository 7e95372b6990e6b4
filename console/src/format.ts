// How values read on screen: money, dates, statuses, short ids.
export const money = (n: number | undefined) =>
  n === undefined ? '—' : new Intl.NumberFormat('en-GB', { maximumFractionDigits: 0 }).format(n);
export const when = (iso: string | number | undefined) =>
  iso === undefined ? '—' : new Date(iso).toLocaleString('en-GB', { dateStyle: 'medium', timeStyle: 'medium' });
export const statusLabel = (status: string) => status.replace('_', ' ');
export const shortId = (id: string) => id.slice(0, 12);
export const percent = (confidence: number) => `${Math.round(confidence * 100)}%`;
