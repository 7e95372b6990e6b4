// Keyboard first: every frequent action has a key, registered by the view that offers it and listed on
// `?`. Keys are ignored while typing in a field, except Escape and Ctrl+Enter.
import { useEffect } from 'preact/hooks';

export interface Shortcut {
  keys: string;
  label: string;
  run: () => void;
}

const layers: Shortcut[][] = [];
const changed = new Set<() => void>();
let pending = '';

/** Shortcuts live while the calling component is mounted; the newest layer wins a key. */
export function useShortcuts(shortcuts: Shortcut[], deps: unknown[]): void {
  useEffect(() => {
    layers.push(shortcuts);
    for (const listener of changed) listener();
    return () => {
      layers.splice(layers.indexOf(shortcuts), 1);
      for (const listener of changed) listener();
    };
  }, deps);
}

export const activeShortcuts = (): Shortcut[] => {
  const seen = new Set<string>();
  const all: Shortcut[] = [];
  for (const layer of [...layers].reverse()) {
    for (const shortcut of layer) {
      if (seen.has(shortcut.keys)) continue;
      seen.add(shortcut.keys);
      all.push(shortcut);
    }
  }
  return all;
};
export const onShortcutsChanged = (listener: () => void) => {
  changed.add(listener);
  return () => changed.delete(listener);
};

/** Keys typed into a text field, a list or an editable element are text, not shortcuts. */
const typing = (target: EventTarget | null) =>
  target instanceof HTMLElement &&
  (target.isContentEditable ||
    ['TEXTAREA', 'SELECT'].includes(target.tagName) ||
    (target instanceof HTMLInputElement && !['checkbox', 'radio', 'button', 'submit', 'file'].includes(target.type)));

function keyName(event: KeyboardEvent): string {
  if (event.ctrlKey && event.key === 'Enter') return 'Ctrl+Enter';
  return event.key === 'Escape' ? 'Esc' : event.key;
}

export function installShortcuts(): void {
  document.addEventListener('keydown', (event) => {
    if (event.altKey || event.metaKey || (event.ctrlKey && event.key !== 'Enter')) return;
    const key = keyName(event);
    if (typing(event.target) && key !== 'Esc' && key !== 'Ctrl+Enter') return;
    const all = activeShortcuts();
    const sequence = pending ? `${pending} ${key}` : key;
    const match = all.find((shortcut) => shortcut.keys === sequence);
    if (match) {
      event.preventDefault();
      pending = '';
      match.run();
      return;
    }
    // The first key of a two-key sequence (g q, g o, ...) waits for the second.
    pending = all.some((shortcut) => shortcut.keys.startsWith(`${key} `)) ? key : '';
    if (pending) event.preventDefault();
  });
}
