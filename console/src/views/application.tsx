// One application: its fields (edited as a draft over the version it was read at, saved with a JSON
// Merge Patch so that other admins' disjoint edits merge), documents, OCR with confidences, the
// recommendation, the audit trail, the ledger of a disbursed loan, and the actions the viewer's roles
// allow on it (absent when not allowed: roles, the status machine and four eyes decide).
import { useEffect, useRef, useState } from 'preact/hooks';
import { fourEyesRefusal } from '../../../shared/identity/rbac.ts';
import { editableStatuses } from '../../../shared/loans/applications/status.ts';
import { ApiError, api, get, newIdempotencyKey } from '../api.ts';
import { money, percent, when } from '../format.ts';
import { onChange } from '../live.ts';
import { go, type Viewer } from '../main.tsx';
import { moveLabels, movesOn } from '../moves.ts';
import { useNames } from '../names.ts';
import { editingNow, markEditing, PRESENCE_RENEW_MS, unmarkEditing } from '../presence.ts';
import { useShortcuts } from '../shortcuts.ts';
import type { Application, MergeConflict } from '../types.ts';
import { errorText, Notice, ScrollTable, StatusBadge, useLoad } from './common.tsx';
import { ConflictDialog } from './conflict.tsx';
import { Documents } from './documents.tsx';

/** The fields the form edits, as dotted paths (the merge patch's and the conflicts' names). */
export const formFields = [
  { path: 'applicantName', label: 'Applicant name', type: 'text' },
  { path: 'email', label: 'Email', type: 'email' },
  { path: 'monthlyIncome', label: 'Monthly income', type: 'number' },
  { path: 'loanAmount', label: 'Loan amount', type: 'number' },
  { path: 'termMonths', label: 'Term (months)', type: 'number' },
  { path: 'purpose', label: 'Purpose', type: 'text' },
  { path: 'identityNumber', label: 'Identity number', type: 'text' },
  { path: 'contact.phone', label: 'Phone', type: 'tel' },
  { path: 'contact.email', label: 'Contact email', type: 'email' },
  { path: 'contact.address', label: 'Address', type: 'text' },
] as const;
export const fieldLabel = (path: string) => formFields.find((field) => field.path === path)?.label ?? path;

export const readPath = (doc: unknown, path: string): unknown =>
  path
    .split('.')
    .reduce<unknown>(
      (at, key) => (at && typeof at === 'object' ? (at as Record<string, unknown>)[key] : undefined),
      doc,
    );

/** A merge patch of `values` (dotted paths): nested objects for contact.*, null to remove an emptied field. */
export function mergePatch(values: Record<string, unknown>): Record<string, unknown> {
  const patch: Record<string, unknown> = {};
  for (const [path, value] of Object.entries(values)) {
    const keys = path.split('.');
    let at = patch;
    for (const key of keys.slice(0, -1)) {
      at[key] ??= {};
      at = at[key] as Record<string, unknown>;
    }
    at[keys.at(-1)!] = value === '' ? null : value;
  }
  return patch;
}

interface AuditEntry {
  at: string;
  actor: string;
  action: string;
  from: string | null;
  to: string;
  version: number;
  fields?: string[];
}
interface LedgerEntry {
  seq: number;
  type: string;
  amount: number;
  at: string;
  hash: string;
}

const moveKeys: Record<string, string> = { under_review: 'v', approved: 'a', rejected: 'n' };

export function ApplicationView({ viewer, id }: { viewer: Viewer; id: string }) {
  const loaded = useLoad(() => get<Application>(`/api/applications/${id}`), [id]);
  const audit = useLoad(() => get<{ items: AuditEntry[] }>(`/api/applications/${id}/audit`), [id]);
  const app = loaded.value;
  const [draft, setDraft] = useState<Record<string, string>>({});
  const base = useRef<Application | undefined>(undefined);
  const [notice, setNotice] = useState<{ kind: 'ok' | 'info' | 'error'; text: string } | null>(null);
  const [conflicts, setConflicts] = useState<{
    conflicts: MergeConflict[];
    version: number;
    clean: Record<string, unknown>;
  } | null>(null);
  const [busy, setBusy] = useState(false);
  const [ledgerVersion, setLedgerVersion] = useState(0);
  const disburseKey = useRef<string | null>(null);
  /** The provider refused this loan's payment: a disburser may cancel it and disburse again with a new key. */
  const [refused, setRefused] = useState(false);
  const firstField = useRef<HTMLInputElement>(null);
  const dirty = Object.keys(draft).length > 0;
  const names = useNames([
    app?.createdBy,
    app?.updatedBy,
    app?.approvedBy,
    ...(audit.value?.items.map((e) => e.actor) ?? []),
  ]);

  /** Re-reads all the page shows of the application: after anyone's change, this page's included. */
  const reread = async () => {
    const read = loaded.reload();
    void audit.reload();
    setLedgerVersion((n) => n + 1);
    await read;
  };

  // Another admin's change: re-read. A draft stays a draft (its fields keep your values).
  useEffect(
    () =>
      onChange((change) => {
        if (change && change.applicationId !== id) return;
        if (change && app && change.version <= app.version) return;
        void reread();
        if (change && dirty)
          setNotice({
            kind: 'info',
            text: `Someone else changed this application (version ${change.version}); your unsaved edits are kept and merge on save.`,
          });
      }),
    [id, app, dirty, reread],
  );
  // Who else has a draft of this application now: re-read as often as marks are renewed.
  const presence = useLoad(() => editingNow(), []);
  useEffect(() => {
    const timer = setInterval(() => void presence.reload(), PRESENCE_RENEW_MS);
    return () => clearInterval(timer);
  }, [presence.reload]);
  const otherEditors = (presence.value?.get(id) ?? []).filter((mark) => mark.adminId !== viewer.id);
  // While there is a draft, others see "being edited".
  useEffect(() => {
    if (!dirty) return;
    void markEditing(id);
    const timer = setInterval(() => void markEditing(id), PRESENCE_RENEW_MS);
    return () => {
      clearInterval(timer);
      void unmarkEditing(id);
    };
  }, [dirty, id]);

  const editable = !!app && viewer.can('applications:edit') && editableStatuses.includes(app.status);
  const value = (path: string) => draft[path] ?? String(readPath(app, path) ?? '');
  const edit = (path: string, next: string) => {
    if (!dirty) base.current = app;
    setDraft((current) => {
      const updated = { ...current, [path]: next };
      if (next === String(readPath(base.current, path) ?? '')) delete updated[path];
      return updated;
    });
  };
  const typed = (path: string, text: string): unknown =>
    formFields.find((field) => field.path === path)?.type === 'number' && text !== '' ? Number(text) : text;

  const patch = async (baseVersion: number, values: Record<string, unknown>) => {
    const saved = await api<Application>('PATCH', `/api/applications/${id}`, { baseVersion, ...mergePatch(values) });
    loaded.setValue(saved);
    void audit.reload();
    return saved;
  };
  const save = async () => {
    if (!dirty || !app || busy) return;
    setBusy(true);
    setNotice(null);
    const values = Object.fromEntries(Object.entries(draft).map(([path, text]) => [path, typed(path, text)]));
    try {
      const saved = await patch((base.current ?? app).version, values);
      setDraft({});
      const merged = saved.mergedOver ?? [];
      setNotice({
        kind: 'ok',
        text: merged.length
          ? `Saved as version ${saved.version}, merged with ${merged.map((m) => `${names(m.by)}'s change to ${m.paths.map(fieldLabel).join(', ')}`).join('; ')}.`
          : `Saved as version ${saved.version}.`,
      });
    } catch (error) {
      if (error instanceof ApiError && error.code === 'merge_conflict') {
        const details = error.details as { version: number; conflicts: MergeConflict[] };
        const overlapping = new Set(details.conflicts.map((conflict) => conflict.path));
        const clean = Object.fromEntries(Object.entries(values).filter(([path]) => !overlapping.has(path)));
        setConflicts({ conflicts: details.conflicts, version: details.version, clean });
        if (error.current) loaded.setValue(error.current as Application);
      } else setNotice({ kind: 'error', text: errorText(error) });
    } finally {
      setBusy(false);
    }
  };
  const resolve = async (mine: Record<string, unknown>) => {
    if (!conflicts) return;
    const values = { ...conflicts.clean, ...mine };
    setConflicts(null);
    if (Object.keys(values).length === 0) {
      setDraft({});
      await loaded.reload();
      return setNotice({ kind: 'ok', text: 'Kept their values; nothing of yours was left to save.' });
    }
    base.current = undefined;
    try {
      const saved = await patch(conflicts.version, values);
      setDraft({});
      setNotice({ kind: 'ok', text: `Saved as version ${saved.version} after resolving the conflict.` });
    } catch (error) {
      setNotice({ kind: 'error', text: errorText(error) });
    }
  };

  const moves = app ? movesOn(viewer, app) : [];
  const move = async (to: string) => {
    if (!app || busy) return;
    setBusy(true);
    try {
      const saved = await patch(app.version, { status: to });
      setNotice({ kind: 'ok', text: `Moved to ${to.replace('_', ' ')} (version ${saved.version}).` });
    } catch (error) {
      if (error instanceof ApiError && error.code === 'merge_conflict') {
        // A decision is taken on what you saw: evidence that changed since is shown before you decide again.
        const paths = (error.details as { conflicts: MergeConflict[] }).conflicts.map((c) => c.theirPath ?? c.path);
        await reread();
        setNotice({
          kind: 'error',
          text: `Not moved: ${[...new Set(paths)].join(', ')} changed since you read it. It is reloaded; check it and try again.`,
        });
      } else setNotice({ kind: 'error', text: errorText(error) });
    } finally {
      setBusy(false);
    }
  };
  const mayDisburse =
    !!app &&
    viewer.can('status:disbursed') &&
    app.status === 'approved' &&
    !fourEyesRefusal('disburse', app, viewer.id);
  const disburse = async () => {
    if (!app || busy) return;
    // One key per intent: a second click, or a retry after a lost answer, pays once.
    disburseKey.current ??= app.disbursement?.idempotencyKey ?? newIdempotencyKey();
    setBusy(true);
    try {
      await api('POST', `/api/applications/${id}/disburse`, undefined, { 'Idempotency-Key': disburseKey.current });
      setNotice({ kind: 'ok', text: `Disbursed ${money(app.loanAmount)}.` });
      await reread();
    } catch (error) {
      setRefused(error instanceof ApiError && error.code === 'payment_refused');
      setNotice({ kind: 'error', text: errorText(error) });
    } finally {
      setBusy(false);
    }
  };
  const cancelRefused = async () => {
    if (!app || busy) return;
    setBusy(true);
    try {
      await api('POST', `/api/applications/${id}/disbursement/cancel`);
      // The next disbursement is a new attempt under a new key.
      disburseKey.current = null;
      setRefused(false);
      setNotice({ kind: 'ok', text: 'The refused payment is cancelled; the loan can be disbursed again.' });
      await reread();
    } catch (error) {
      setNotice({ kind: 'error', text: errorText(error) });
    } finally {
      setBusy(false);
    }
  };

  useShortcuts(
    [
      { keys: 'Esc', label: 'Back to the queue', run: () => (conflicts ? undefined : go('#/queue')) },
      ...(editable ? [{ keys: 'e', label: 'Edit the first field', run: () => firstField.current?.focus() }] : []),
      ...(editable ? [{ keys: 'Ctrl+Enter', label: 'Save your edits', run: () => void save() }] : []),
      ...moves.map((to) => ({ keys: moveKeys[to]!, label: moveLabels[to]!, run: () => void move(to) })),
      ...(mayDisburse ? [{ keys: 'd', label: 'Disburse', run: () => void disburse() }] : []),
    ],
    [editable, moves.join(), mayDisburse, draft, app, conflicts],
  );

  if (loaded.error && !app) return <Notice kind="error">{errorText(loaded.error)}</Notice>;
  if (!app) return <p>Loading…</p>;
  const ocrFields = Object.entries(app.ocr?.fields ?? {});
  return (
    <article aria-labelledby="app-title">
      <p>
        <a href="#/queue">← Queue</a>
      </p>
      <h1 id="app-title">
        {app.applicantName} <StatusBadge status={app.status} />
      </h1>
      <p class="sub">
        {app._id} · version {app.version} · created {when(app.createdAt)} by {names(app.createdBy)} · updated{' '}
        {when(app.updatedAt)} by {names(app.updatedBy)}
      </p>
      <p class="editing-now" role="status">
        {otherEditors.map((mark) => (
          <span key={mark.adminId} class="editing">
            being edited by {mark.adminName ?? mark.adminId}
          </span>
        ))}
      </p>
      {notice && <Notice kind={notice.kind}>{notice.text}</Notice>}
      <div class="actions">
        {moves.map((to) => (
          <button key={to} type="button" disabled={busy} onClick={() => move(to)} aria-keyshortcuts={moveKeys[to]}>
            {moveLabels[to]}
          </button>
        ))}
        {mayDisburse && (
          <button type="button" disabled={busy} onClick={disburse} aria-keyshortcuts="d">
            Disburse {money(app.loanAmount)}
          </button>
        )}
        {refused && viewer.can('status:disbursed') && (
          <button type="button" disabled={busy} onClick={cancelRefused}>
            Cancel the refused payment
          </button>
        )}
      </div>
      <div class="columns">
        <section aria-labelledby="fields-title">
          <h2 id="fields-title">Applicant and loan</h2>
          <form
            class="fields"
            onSubmit={(event) => {
              event.preventDefault();
              void save();
            }}
          >
            {formFields.map((field, index) => (
              <label key={field.path} class={field.path in draft ? 'edited' : ''}>
                {field.label}
                <input
                  ref={index === 0 ? firstField : undefined}
                  name={field.path}
                  // Preact's input typings split on the literal type; every one of these takes a string value.
                  type={field.type as 'text'}
                  value={value(field.path)}
                  readOnly={!editable}
                  onInput={(event) => edit(field.path, (event.target as HTMLInputElement).value)}
                />
              </label>
            ))}
            {editable && (
              <div class="form-actions">
                <button type="submit" disabled={!dirty || busy} aria-keyshortcuts="Control+Enter">
                  Save
                </button>
                <button type="button" class="quiet" disabled={!dirty} onClick={() => setDraft({})}>
                  Discard edits
                </button>
              </div>
            )}
          </form>
          {app.repaymentPlan && (
            <p>
              Repayment: {money(app.repaymentPlan.monthlyPayment)} a month for {app.repaymentPlan.termMonths} months at{' '}
              {(app.repaymentPlan.annualRate * 100).toFixed(2)}% (total {money(app.repaymentPlan.total)})
            </p>
          )}
        </section>
        <section aria-labelledby="evidence-title">
          <h2 id="evidence-title">Evidence</h2>
          <Documents id={id} viewer={viewer} status={app.status} names={names} uploaded={() => void reread()} />
          <h3>OCR</h3>
          {ocrFields.length === 0 ? (
            <p>No OCR result yet.</p>
          ) : (
            <ScrollTable label="OCR fields">
              <table class="ocr">
                <thead>
                  <tr>
                    <th scope="col">Field</th>
                    <th scope="col">Read</th>
                    <th scope="col" class="num">
                      Confidence
                    </th>
                  </tr>
                </thead>
                <tbody>
                  {ocrFields.map(([name, field]) =>
                    field ? (
                      <tr key={name} class={field.confidence < 0.8 ? 'low' : ''}>
                        <td>{fieldLabel(name)}</td>
                        <td>{String(field.value)}</td>
                        <td class="num">
                          {percent(field.confidence)}
                          {field.confidence < 0.8 ? <strong class="flag"> low</strong> : null}
                        </td>
                      </tr>
                    ) : null,
                  )}
                </tbody>
              </table>
            </ScrollTable>
          )}
          <h3>Recommendation</h3>
          {app.recommendation ? (
            <div class="recommendation">
              <p>
                <strong>{app.recommendation.recommendation.replace('_', ' ')}</strong>
              </p>
              <ul>
                {app.recommendation.reasons.map((reason) => (
                  <li key={reason}>{reason}</li>
                ))}
              </ul>
            </div>
          ) : (
            <p>No recommendation yet.</p>
          )}
        </section>
      </div>
      {(app.status === 'disbursed' || app.disbursement) && viewer.can('status:disbursed') && (
        <Ledger id={id} version={ledgerVersion} />
      )}
      <section aria-labelledby="audit-title">
        <h2 id="audit-title">Audit trail</h2>
        <ScrollTable label="Audit trail">
          <table class="audit">
            <thead>
              <tr>
                <th scope="col">When</th>
                <th scope="col">Who</th>
                <th scope="col">What</th>
                <th scope="col" class="num">
                  Version
                </th>
              </tr>
            </thead>
            <tbody>
              {(audit.value?.items ?? []).map((entry) => (
                <tr key={entry.version}>
                  <td>{when(entry.at)}</td>
                  <td>{names(entry.actor)}</td>
                  <td>
                    {entry.from === null ? `created as ${entry.to.replace('_', ' ')}` : entry.action}
                    {entry.from !== null && entry.from !== entry.to ? ` ${entry.from} → ${entry.to}` : ''}
                    {entry.fields?.length ? ` (${entry.fields.map(fieldLabel).join(', ')})` : ''}
                  </td>
                  <td class="num">{entry.version}</td>
                </tr>
              ))}
            </tbody>
          </table>
        </ScrollTable>
      </section>
      {conflicts && (
        <ConflictDialog
          conflicts={conflicts.conflicts}
          clean={Object.keys(conflicts.clean)}
          names={names}
          resolve={resolve}
          cancel={() => setConflicts(null)}
        />
      )}
    </article>
  );
}

function Ledger({ id, version }: { id: string; version: number }) {
  const ledger = useLoad(() => get<{ entries: LedgerEntry[] }>(`/api/applications/${id}/ledger`), [id, version]);
  return (
    <section aria-labelledby="ledger-title">
      <h2 id="ledger-title">Ledger</h2>
      {ledger.error ? <Notice kind="error">{errorText(ledger.error)}</Notice> : null}
      <ScrollTable label="Ledger entries">
        <table class="ledger">
          <thead>
            <tr>
              <th scope="col" class="num">
                Seq
              </th>
              <th scope="col">Type</th>
              <th scope="col" class="num">
                Amount
              </th>
              <th scope="col">When</th>
              <th scope="col">Hash</th>
            </tr>
          </thead>
          <tbody>
            {(ledger.value?.entries ?? []).map((entry) => (
              <tr key={entry.seq}>
                <td class="num">{entry.seq}</td>
                <td>{entry.type}</td>
                <td class="num">{money(entry.amount)}</td>
                <td>{when(entry.at)}</td>
                <td>
                  <code>{entry.hash.slice(0, 16)}…</code>
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      </ScrollTable>
    </section>
  );
}
