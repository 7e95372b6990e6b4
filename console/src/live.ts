// Live changes: one EventSource on /api/events (the session cookie rides along), fanned out to the
// views. A `change` names an application and its new version; `reload` means "re-read what you show";
// `session_ended` ends the stream: an expired token is refreshed and the stream reopened, anything else
// (revoked, admin disabled, signed out elsewhere) signs the console out.
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
export type LiveState = 'connecting' | 'live' | 'reconnecting' | 'off';

const listeners = new Set<Listener>();
const stateListeners = new Set<(state: LiveState) => void>();
let source: EventSource | null = null;
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
    // The browser retries by itself unless the answer was not a stream (a 401 after a revocation).
    if (stream.readyState === EventSource.CLOSED) void ended('token_expired');
    else setState('reconnecting');
  };
}

export function stopLive(): void {
  source?.close();
  source = null;
  setState('off');
}
