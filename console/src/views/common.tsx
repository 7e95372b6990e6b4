// Pieces every view uses: notices (announced to screen readers), the live badge, status badges, and a
// loader hook that keeps the last good answer while a new one is on its way.
import type { ComponentChildren } from 'preact';
import { useCallback, useEffect, useRef, useState } from 'preact/hooks';
import { ApiError } from '../api.ts';
import { statusLabel } from '../format.ts';
import { type LiveState, onLiveState } from '../live.ts';

export function Notice({ kind, children }: { kind: 'info' | 'error' | 'ok'; children: ComponentChildren }) {
  return (
    <div class={`notice ${kind}`} role={kind === 'error' ? 'alert' : 'status'}>
      {children}
    </div>
  );
}

export const errorText = (error: unknown) =>
  error instanceof ApiError ? `${error.message} (${error.code})` : String((error as Error)?.message ?? error);

export function LiveBadge() {
  const [state, setState] = useState<LiveState>('off');
  useEffect(() => onLiveState(setState), []);
  const label = {
    connecting: 'connecting…',
    live: 'live',
    reconnecting: 'reconnecting…',
    polling: 'refreshing every 5 s',
    off: 'not live',
  }[state];
  return (
    <span class={`live ${state}`} title="Changes by other admins appear without a reload while live">
      {label}
    </span>
  );
}

export const StatusBadge = ({ status }: { status: string }) => (
  <span class={`status ${status}`}>{statusLabel(status)}</span>
);

/** Loads with `load` now and whenever `reload()` is called; errors are kept beside the last value. */
export function useLoad<T>(load: () => Promise<T>, deps: unknown[]) {
  const [value, setValue] = useState<T | undefined>(undefined);
  const [error, setError] = useState<unknown>(null);
  const latest = useRef(0);
  const reload = useCallback(async () => {
    const ticket = ++latest.current;
    try {
      const next = await load();
      if (ticket === latest.current) {
        setValue(next);
        setError(null);
      }
    } catch (failure) {
      if (ticket === latest.current) setError(failure);
    }
  }, deps);
  useEffect(() => {
    void reload();
  }, [reload]);
  return { value, error, reload, setValue };
}

/** Calls `run` at most once per `ms`, trailing: a burst of live changes makes one reload. */
export function useThrottled(run: () => void, ms: number) {
  const timer = useRef<ReturnType<typeof setTimeout> | undefined>(undefined);
  const saved = useRef(run);
  saved.current = run;
  useEffect(() => () => clearTimeout(timer.current), []);
  return useCallback(() => {
    if (timer.current) return;
    timer.current = setTimeout(() => {
      timer.current = undefined;
      saved.current();
    }, ms);
  }, [ms]);
}

/** A table that scrolls sideways on a narrow screen: a named region the keyboard can reach and scroll. */
export const ScrollTable = ({ label, children }: { label: string; children: ComponentChildren }) => (
  // biome-ignore lint/a11y/noNoninteractiveTabindex: a scrolling region must take focus to scroll by keyboard (WCAG 2.1.1)
  <section class="table-wrap" tabIndex={0} aria-label={label}>
    {children}
  </section>
);

/**
 * A modal dialog on the browser's own <dialog>: focus stays inside it while open (the page behind is
 * inert), Escape closes it, and focus returns to where it was.
 */
export function Modal(props: { labelledBy: string; wide?: boolean; onClose: () => void; children: ComponentChildren }) {
  const ref = useRef<HTMLDialogElement>(null);
  useEffect(() => {
    const dialog = ref.current!;
    const before = document.activeElement as HTMLElement | null;
    dialog.showModal();
    return () => {
      dialog.close();
      before?.focus();
    };
  }, []);
  return (
    <dialog
      ref={ref}
      class={props.wide ? 'dialog wide' : 'dialog'}
      aria-labelledby={props.labelledBy}
      onCancel={(event) => {
        event.preventDefault();
        props.onClose();
      }}
    >
      {props.children}
    </dialog>
  );
}
