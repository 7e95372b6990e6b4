import { useState } from 'preact/hooks';
import { type ConsoleSession, signIn } from '../api.ts';
import { errorText, Notice } from './common.tsx';

export function LoginView({ onSignedIn }: { onSignedIn: (session: ConsoleSession) => void }) {
  const [error, setError] = useState<unknown>(null);
  const [busy, setBusy] = useState(false);
  const submit = async (event: Event) => {
    event.preventDefault();
    const form = new FormData(event.target as HTMLFormElement);
    setBusy(true);
    try {
      onSignedIn(await signIn(String(form.get('email')), String(form.get('password'))));
    } catch (failure) {
      setError(failure);
      setBusy(false);
    }
  };
  return (
    <main class="login" id="main">
      <h1>Loan admin console</h1>
      <form onSubmit={submit}>
        <label>
          Email
          <input name="email" type="email" autocomplete="username" required autofocus />
        </label>
        <label>
          Password
          <input name="password" type="password" autocomplete="current-password" required />
        </label>
        {error ? <Notice kind="error">{errorText(error)}</Notice> : null}
        <button type="submit" disabled={busy}>
          {busy ? 'Signing in…' : 'Sign in'}
        </button>
      </form>
    </main>
  );
}
