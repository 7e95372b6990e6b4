// A new application, for those who may create one: the applicant's fields, then its own page (where
// documents are added and the review is started).
import { useState } from 'preact/hooks';
import { api } from '../api.ts';
import { go } from '../main.tsx';
import type { Application } from '../types.ts';
import { errorText, Notice } from './common.tsx';

const fields = [
  { name: 'applicantName', label: 'Applicant name', type: 'text', required: true },
  { name: 'email', label: 'Email', type: 'email', required: false },
  { name: 'monthlyIncome', label: 'Monthly income', type: 'number', required: true },
  { name: 'loanAmount', label: 'Loan amount', type: 'number', required: true },
  { name: 'termMonths', label: 'Term (months)', type: 'number', required: true },
  { name: 'purpose', label: 'Purpose', type: 'text', required: false },
  { name: 'identityNumber', label: 'Identity number', type: 'text', required: false },
] as const;

export function NewApplicationView() {
  const [error, setError] = useState<unknown>(null);
  const [busy, setBusy] = useState(false);
  const submit = async (event: Event) => {
    event.preventDefault();
    const data = new FormData(event.target as HTMLFormElement);
    const body: Record<string, unknown> = {};
    for (const field of fields) {
      const text = String(data.get(field.name) ?? '').trim();
      if (text !== '') body[field.name] = field.type === 'number' ? Number(text) : text;
    }
    setBusy(true);
    try {
      const created = await api<Application>('POST', '/api/applications', body);
      go(`#/applications/${created._id}`);
    } catch (failure) {
      setError(failure);
      setBusy(false);
    }
  };
  return (
    <section aria-labelledby="new-title">
      <p>
        <a href="#/queue">← Queue</a>
      </p>
      <h1 id="new-title">New application</h1>
      <form class="fields narrow" onSubmit={submit}>
        {fields.map((field, index) => (
          <label key={field.name}>
            {field.label}
            {field.required ? '' : ' (optional)'}
            <input
              name={field.name}
              // Preact's input typings split on the literal type; every one of these takes a string value.
              type={field.type as 'text'}
              required={field.required}
              autofocus={index === 0}
              min={field.type === 'number' ? 0 : undefined}
            />
          </label>
        ))}
        {error ? <Notice kind="error">{errorText(error)}</Notice> : null}
        <div class="form-actions">
          <button type="submit" disabled={busy}>
            Create
          </button>
        </div>
      </form>
    </section>
  );
}
