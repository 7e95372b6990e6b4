// The work queue: applications by status with counts, search, sort and pages; live (a change by anyone
// re-reads the page within a moment), with "being edited" marks, and batch moves on a selection.
import { useEffect, useRef, useState } from 'preact/hooks';
import { type ApplicationStatus, statuses } from '../../../shared/loans/applications/status.ts';
import { api, get } from '../api.ts';
import { money, statusLabel, when } from '../format.ts';
import { onChange } from '../live.ts';
import { go, type Viewer } from '../main.tsx';
import { moveLabels, movesOf, movesOn } from '../moves.ts';
import { editingNow, PRESENCE_RENEW_MS } from '../presence.ts';
import { useShortcuts } from '../shortcuts.ts';
import type { Application, ApplicationList, Presence } from '../types.ts';
import { errorText, Notice, ScrollTable, StatusBadge, useLoad, useThrottled } from './common.tsx';

const LIMIT = 25;
const sorts = [
  ['-createdAt', 'Newest first'],
  ['createdAt', 'Oldest first'],
  ['-updatedAt', 'Recently changed'],
  ['updatedAt', 'Longest untouched'],
] as const;

interface BatchResult {
  results: { id: string; outcome: string; version?: number; error?: string; code?: string }[];
  counts: Record<string, number>;
}

const queueHash = (query: URLSearchParams, changes: Record<string, string | null>) => {
  const next = new URLSearchParams(query);
  for (const [key, value] of Object.entries(changes)) {
    if (value === null || value === '') next.delete(key);
    else next.set(key, value);
  }
  if (!('page' in changes)) next.delete('page');
  const text = next.toString();
  return `#/queue${text ? `?${text}` : ''}`;
};

export function QueueView({ viewer, query }: { viewer: Viewer; query: URLSearchParams }) {
  const status = query.get('status') ?? '';
  const sort = query.get('sort') ?? '-createdAt';
  const q = query.get('q') ?? '';
  const page = Math.max(1, Number(query.get('page') ?? 1) || 1);
  const listPath = `/api/applications?${new URLSearchParams({
    limit: String(LIMIT),
    page: String(page),
    sort,
    ...(status ? { status } : {}),
    ...(q ? { q } : {}),
  })}`;
  const list = useLoad(() => get<ApplicationList>(listPath), [listPath]);
  const counts = useLoad(() => get<{ counts: Record<string, number>; total: number }>('/api/applications/counts'), []);
  const presence = useLoad(() => editingNow(), []);
  const [changed, setChanged] = useState<Set<string>>(new Set());
  const [selected, setSelected] = useState<Set<string>>(new Set());
  const [cursor, setCursor] = useState(0);
  const [batch, setBatch] = useState<BatchResult | null>(null);
  const [batchError, setBatchError] = useState<unknown>(null);
  const search = useRef<HTMLInputElement>(null);
  const rows = useRef<HTMLTableSectionElement>(null);

  const refresh = useThrottled(() => {
    void list.reload();
    void counts.reload();
  }, 100);
  useEffect(
    () =>
      onChange((change) => {
        if (change) setChanged((ids) => new Set(ids).add(change.applicationId));
        refresh();
      }),
    [refresh],
  );
  useEffect(() => {
    const timer = setInterval(() => void presence.reload(), PRESENCE_RENEW_MS);
    return () => clearInterval(timer);
  }, [presence.reload]);
  useEffect(() => setSelected(new Set()), [listPath]);

  const items = list.value?.items ?? [];
  const focusRow = (index: number) => {
    const bounded = Math.max(0, Math.min(items.length - 1, index));
    setCursor(bounded);
    rows.current?.querySelectorAll<HTMLAnchorElement>('a.open')[bounded]?.focus();
  };
  const toggle = (id: string) =>
    setSelected((ids) => {
      const next = new Set(ids);
      if (!next.delete(id)) next.add(id);
      return next;
    });
  const pages = list.value?.total === undefined ? 1 : Math.max(1, Math.ceil(list.value.total / LIMIT));
  useShortcuts(
    [
      { keys: '/', label: 'Search by applicant name or id', run: () => search.current?.focus() },
      { keys: 'j', label: 'Next application', run: () => focusRow(cursor + 1) },
      { keys: 'k', label: 'Previous application', run: () => focusRow(cursor - 1) },
      {
        keys: 'x',
        label: 'Select or unselect the current application',
        run: () => items[cursor] && toggle(items[cursor]._id),
      },
      { keys: ']', label: 'Next page', run: () => page < pages && go(queueHash(query, { page: String(page + 1) })) },
      { keys: '[', label: 'Previous page', run: () => page > 1 && go(queueHash(query, { page: String(page - 1) })) },
      { keys: 'r', label: 'Reload the list', run: () => refresh() },
    ],
    [cursor, items, page, pages, query],
  );

  const moves = movesOf(viewer);
  const runBatch = async (to: ApplicationStatus) => {
    setBatchError(null);
    try {
      setBatch(
        await api<BatchResult>('POST', '/api/applications/batch-update', { applicationIds: [...selected], status: to }),
      );
      setSelected(new Set());
      refresh();
    } catch (error) {
      setBatchError(error);
    }
  };
  const editors = (id: string): Presence[] =>
    (presence.value?.get(id) ?? []).filter((mark) => mark.adminId !== viewer.id);
  const selectable = (app: Application) => movesOn(viewer, app).length > 0;

  return (
    <section aria-labelledby="queue-title">
      <div class="title-row">
        <h1 id="queue-title">Work queue</h1>
        {viewer.can('applications:create') && (
          <a class="button" href="#/new" aria-keyshortcuts="c">
            New application
          </a>
        )}
      </div>
      <nav class="tabs" aria-label="Statuses">
        {['', ...statuses].map((value) => (
          <a
            key={value || 'all'}
            href={queueHash(query, { status: value || null })}
            aria-current={status === value ? 'page' : undefined}
          >
            {value ? statusLabel(value) : 'all'}{' '}
            <span class="count">{value ? (counts.value?.counts[value] ?? '…') : (counts.value?.total ?? '…')}</span>
          </a>
        ))}
      </nav>
      <form
        class="filters"
        onSubmit={(event) => {
          event.preventDefault();
          go(queueHash(query, { q: search.current?.value.trim() ?? '' }));
        }}
      >
        <label>
          Search
          <input
            ref={search}
            type="search"
            name="q"
            defaultValue={q}
            placeholder="Applicant name or APP- id"
            maxLength={100}
          />
        </label>
        <label>
          Sort
          <select
            value={sort}
            onChange={(event) => go(queueHash(query, { sort: (event.target as HTMLSelectElement).value }))}
          >
            {sorts.map(([value, label]) => (
              <option key={value} value={value}>
                {label}
              </option>
            ))}
          </select>
        </label>
        <button type="submit">Search</button>
      </form>
      {list.error ? <Notice kind="error">{errorText(list.error)}</Notice> : null}
      {selected.size > 0 && (
        <section class="batch" aria-label="Selection">
          <span>{selected.size} selected</span>
          {moves.map((to) => (
            <button key={to} type="button" onClick={() => runBatch(to)}>
              {moveLabels[to]} ({selected.size})
            </button>
          ))}
          <button type="button" class="quiet" onClick={() => setSelected(new Set())}>
            Clear
          </button>
        </section>
      )}
      {batchError ? <Notice kind="error">{errorText(batchError)}</Notice> : null}
      {batch && (
        <div class="batch-result" role="status">
          <p>
            Batch:{' '}
            {Object.entries(batch.counts)
              .filter(([, n]) => n > 0)
              .map(([outcome, n]) => `${n} ${outcome}`)
              .join(', ')}
          </p>
          <ul>
            {batch.results.map((result) => (
              <li key={result.id} class={result.outcome === 'updated' ? 'ok' : 'bad'}>
                <a href={`#/applications/${result.id}`}>{result.id}</a>: {result.outcome}
                {result.code ? ` (${result.code})` : ''}
                {result.error ? ` — ${result.error}` : ''}
              </li>
            ))}
          </ul>
          <button type="button" class="quiet" onClick={() => setBatch(null)}>
            Dismiss
          </button>
        </div>
      )}
      <ScrollTable label="Applications">
        <table class="queue">
          <caption class="visually-hidden">
            Applications, page {page} of {pages}
          </caption>
          <thead>
            <tr>
              {moves.length > 0 && (
                <th scope="col">
                  <span class="visually-hidden">Select</span>
                </th>
              )}
              <th scope="col">Applicant</th>
              <th scope="col" class="num">
                Amount
              </th>
              <th scope="col" class="wide num">
                Term
              </th>
              <th scope="col">Status</th>
              <th scope="col" class="wide">
                Updated
              </th>
            </tr>
          </thead>
          <tbody ref={rows}>
            {items.map((app, index) => (
              <tr
                key={app._id}
                class={`${changed.has(app._id) ? 'changed' : ''} ${index === cursor ? 'cursor' : ''}`}
                data-id={app._id}
              >
                {moves.length > 0 && (
                  <td>
                    {selectable(app) && (
                      <input
                        type="checkbox"
                        aria-label={`Select ${app.applicantName}`}
                        checked={selected.has(app._id)}
                        onChange={() => toggle(app._id)}
                      />
                    )}
                  </td>
                )}
                <td>
                  <a class="open" href={`#/applications/${app._id}`} onFocus={() => setCursor(index)}>
                    {app.applicantName}
                  </a>
                  <div class="sub">{app._id}</div>
                  {editors(app._id).map((mark) => (
                    <span key={mark.adminId} class="editing">
                      being edited by {mark.adminName ?? mark.adminId}
                    </span>
                  ))}
                </td>
                <td class="num">{money(app.loanAmount)}</td>
                <td class="wide num">{app.termMonths} mo</td>
                <td>
                  <StatusBadge status={app.status} />
                </td>
                <td class="wide">{when(app.updatedAt)}</td>
              </tr>
            ))}
          </tbody>
        </table>
      </ScrollTable>
      {list.value && items.length === 0 && <p>No applications match.</p>}
      <nav class="pager" aria-label="Pages">
        {page > 1 ? <a href={queueHash(query, { page: String(page - 1) })}>Previous page</a> : <span />}
        <span>
          Page {page} of {pages}
          {list.value?.total !== undefined ? ` · ${list.value.total} applications` : ''}
        </span>
        {page < pages ? <a href={queueHash(query, { page: String(page + 1) })}>Next page</a> : <span />}
      </nav>
    </section>
  );
}
