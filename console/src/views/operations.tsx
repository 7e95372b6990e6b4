// Operations: the job queue's statistics (re-read every few seconds while open), dead-lettered jobs
// with their errors and a retry, and the ledger's verification with the first broken link named.
import { useEffect, useState } from 'preact/hooks';
import { api, get } from '../api.ts';
import { when } from '../format.ts';
import type { Viewer } from '../main.tsx';
import { useShortcuts } from '../shortcuts.ts';
import { errorText, Notice, ScrollTable, useLoad } from './common.tsx';

const STATS_EVERY_MS = 2_000;

interface QueueStats {
  waiting: number;
  delayed: number;
  active: number;
  completed: number;
  failed: number;
  oldestWaitingAgeMs: number;
  byName: Record<string, { waiting: number; delayed: number; active: number; completed: number; failed: number }>;
}
interface DeadJob {
  id: string;
  name: string;
  attempts: number;
  attemptsMade: number;
  applicationId?: string;
  failedAt: string | null;
  lastError: { name: string; message: string; at: string } | null;
  retries: number;
}
interface Verification {
  ok: boolean;
  entries: number;
  head: { seq: number; hash: string } | null;
  firstBroken?: { seq: number; reason: string; message: string };
  mismatches?: { code: string; applicationId: string; message: string }[];
}

export function OperationsView({ viewer }: { viewer: Viewer }) {
  const stats = useLoad(() => get<QueueStats>('/api/admin/queue-stats'), []);
  const dead = useLoad(() => get<{ items: DeadJob[] }>('/api/admin/jobs?state=dead'), []);
  const [verification, setVerification] = useState<Verification | null>(null);
  const [message, setMessage] = useState<{ kind: 'ok' | 'error'; text: string } | null>(null);
  useEffect(() => {
    const timer = setInterval(() => {
      void stats.reload();
      void dead.reload();
    }, STATS_EVERY_MS);
    return () => clearInterval(timer);
  }, [stats.reload, dead.reload]);
  const verify = async () => {
    setVerification(null);
    try {
      setVerification(await get<Verification>('/api/ledger/verify'));
    } catch (error) {
      setMessage({ kind: 'error', text: errorText(error) });
    }
  };
  const retry = async (job: DeadJob) => {
    try {
      await api('POST', `/api/admin/jobs/${encodeURIComponent(job.id)}/retry`);
      setMessage({ kind: 'ok', text: `${job.name} ${job.id} is waiting again.` });
      await dead.reload();
    } catch (error) {
      setMessage({ kind: 'error', text: errorText(error) });
    }
  };
  const mayVerify = viewer.can('admins:manage');
  const mayRetry = viewer.can('queue:retry');
  useShortcuts(mayVerify ? [{ keys: 'l', label: 'Verify the ledger', run: () => void verify() }] : [], [mayVerify]);
  const s = stats.value;
  return (
    <section aria-labelledby="ops-title">
      <h1 id="ops-title">Operations</h1>
      {message && <Notice kind={message.kind}>{message.text}</Notice>}
      <h2>Job queue</h2>
      {stats.error ? <Notice kind="error">{errorText(stats.error)}</Notice> : null}
      {s && (
        <>
          <dl class="stats">
            {(['waiting', 'delayed', 'active', 'completed', 'failed'] as const).map((key) => (
              <div key={key}>
                <dt>{key}</dt>
                <dd data-stat={key}>{s[key]}</dd>
              </div>
            ))}
            <div>
              <dt>oldest waiting</dt>
              <dd>{Math.round(s.oldestWaitingAgeMs / 1000)} s</dd>
            </div>
          </dl>
          <ScrollTable label="Jobs by name">
            <table>
              <thead>
                <tr>
                  <th scope="col">Job</th>
                  {(['waiting', 'delayed', 'active', 'completed', 'failed'] as const).map((key) => (
                    <th scope="col" class="num" key={key}>
                      {key}
                    </th>
                  ))}
                </tr>
              </thead>
              <tbody>
                {Object.entries(s.byName).map(([name, counts]) => (
                  <tr key={name}>
                    <th scope="row">{name}</th>
                    {(['waiting', 'delayed', 'active', 'completed', 'failed'] as const).map((key) => (
                      <td class="num" key={key}>
                        {counts[key]}
                      </td>
                    ))}
                  </tr>
                ))}
              </tbody>
            </table>
          </ScrollTable>
        </>
      )}
      <h2>Dead letters</h2>
      {dead.error ? <Notice kind="error">{errorText(dead.error)}</Notice> : null}
      {dead.value && dead.value.items.length === 0 && <p>No dead-lettered jobs.</p>}
      <ul class="dead">
        {(dead.value?.items ?? []).map((job) => (
          <li key={job.id}>
            <strong>{job.name}</strong> {job.id}
            {job.applicationId && (
              <>
                {' '}
                for <a href={`#/applications/${job.applicationId}`}>{job.applicationId}</a>
              </>
            )}{' '}
            after {job.attemptsMade} of {job.attempts} attempts{job.failedAt ? `, ${when(job.failedAt)}` : ''}
            {job.retries > 0 ? ` (retried ${job.retries} times before)` : ''}
            <pre>{job.lastError?.message ?? 'no error recorded'}</pre>
            {mayRetry && (
              <button type="button" onClick={() => retry(job)}>
                Retry {job.name}
              </button>
            )}
          </li>
        ))}
      </ul>
      {mayVerify && (
        <>
          <h2>Ledger</h2>
          <button type="button" onClick={verify} aria-keyshortcuts="l">
            Verify the ledger
          </button>
          {verification && (
            <Notice kind={verification.ok ? 'ok' : 'error'}>
              {verification.ok
                ? `The ledger verifies: ${verification.entries} entries, head ${verification.head?.seq ?? '—'}.`
                : verification.firstBroken
                  ? `Broken at entry ${verification.firstBroken.seq} (${verification.firstBroken.reason}): ${verification.firstBroken.message}`
                  : `The ledger disagrees with the records: ${(verification.mismatches ?? []).map((m) => `${m.applicationId}: ${m.message}`).join('; ')}`}
            </Notice>
          )}
        </>
      )}
    </section>
  );
}
