// Live changes: one EventSource on /api/events (the session cookie rides along), fanned out to the
// views. A `change` names an application and its new version; `reload` means "re-read what you show";
// `session_ended` ends the stream: an expired token is refreshed and the stream reopened, anything else
// (revoked, admin disabled, signed out elsewhere) signs the console out. Where no stream is served
// (workerd answers 501) or it keeps failing, the views re-read every POLL_MS instead, and the stream is
// tried again now and then.
import { refreshSession } from './api.ts';

export interface ApplicationChange {
  id: string;
  applicationId: string;
  version: number;
  status: string;
  from: string;
  at: number;
  action: string;
}
type Listener = (change: ApplicationChange | null) => void;
export type LiveState = 'connecting' | 'live' | 'reconnecting' | 'polling' | 'off';

export const POLL_MS = 5_000;
const RETRY_STREAM_MS = 60_000;

const listeners = new Set<Listener>();
const stateListeners = new Set<(state: LiveState) => void>();
let source: EventSource | null = null;
let poller: ReturnType<typeof setInterval> | undefined;
let retry: ReturnType<typeof setTimeout> | undefined;
let state: LiveState = 'off';
let signedOut: (code: string) => void = () => {};

const setState = (next: LiveState) => {
  state = next;
  for (const listener of stateListeners) listener(next);
};

/** Subscribes to changes (null = reload everything); returns the unsubscribe. */
export function onChange(listener: Listener): () => void {
  listeners.add(listener);
  return () => listeners.delete(listener);
}
export function onLiveState(listener: (state: LiveState) => void): () => void {
  stateListeners.add(listener);
  listener(state);
  return () => stateListeners.delete(listener);
}

const emit = (change: ApplicationChange | null) => {
  for (const listener of listeners) listener(change);
};

async function ended(code: string) {
  stopLive();
  if (code === 'token_expired' && (await refreshSession())) {
    openLive(signedOut);
    emit(null);
  } else signedOut(code);
}

// A page that is going away closes its stream first, so the closing is not taken for a refused stream.
addEventListener('pagehide', () => stopLive());

export function openLive(onSignedOut: (code: string) => void): void {
  signedOut = onSignedOut;
  stopLive();
  setState('connecting');
  const stream = new EventSource('/api/events');
  source = stream;
  stream.onopen = () => setState('live');
  stream.addEventListener('change', (event) => {
    emit(JSON.parse((event as MessageEvent).data) as ApplicationChange);
  });
  stream.addEventListener('reload', () => emit(null));
  stream.addEventListener('session_ended', (event) => {
    void ended((JSON.parse((event as MessageEvent).data) as { code: string }).code);
  });
  stream.onerror = () => {
    if (source !== stream) return;
    // The browser retries by itself unless the answer was not a stream: a 401, or no stream here.
    if (stream.readyState === EventSource.CLOSED) void recover();
    else setState('reconnecting');
  };
}

/** The stream was refused: a session that ended (refresh once, else sign out), or no stream (poll). */
async function recover() {
  stopLive();
  const session = await fetch('/api/console/session', { credentials: 'same-origin' }).catch(() => null);
  if (session?.status === 401) return ended('token_expired');
  setState('polling');
  poller = setInterval(() => emit(null), POLL_MS);
  retry = setTimeout(() => openLive(signedOut), RETRY_STREAM_MS);
}

export function stopLive(): void {
  source?.close();
  source = null;
  clearInterval(poller);
  clearTimeout(retry);
  setState('off');
}
