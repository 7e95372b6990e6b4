// The admin console: sign-in, then the work queue, one application, operations and admins. Hash routes
// (#/queue, #/applications/<id>, #/operations, #/admins) so the API serves one page for all of them.
import './console.css';
import { render } from 'preact';
import { useCallback, useEffect, useState } from 'preact/hooks';
import { can, type Permission } from '../../shared/identity/rbac.ts';
import { type ConsoleSession, currentSession, get, type Me, setCsrfToken, signOut, whenSignedOut } from './api.ts';
import { openLive, stopLive } from './live.ts';
import { activeShortcuts, installShortcuts, onShortcutsChanged, useShortcuts } from './shortcuts.ts';
import { AdminsView } from './views/admins.tsx';
import { ApplicationView } from './views/application.tsx';
import { LiveBadge, Modal, Notice } from './views/common.tsx';
import { LoginView } from './views/login.tsx';
import { NewApplicationView } from './views/new-application.tsx';
import { OperationsView } from './views/operations.tsx';
import { QueueView } from './views/queue.tsx';

export interface Viewer extends Me {
  can: (permission: Permission) => boolean;
}

function useRoute(): [string, URLSearchParams] {
  const read = () => {
    const [path = '', query = ''] = (location.hash.slice(1) || '/queue').split('?');
    return [path, new URLSearchParams(query)] as [string, URLSearchParams];
  };
  const [route, setRoute] = useState(read);
  useEffect(() => {
    const changed = () => setRoute(read());
    addEventListener('hashchange', changed);
    return () => removeEventListener('hashchange', changed);
  }, []);
  return route;
}
export const go = (hash: string) => {
  location.hash = hash;
};

function ShortcutHelp({ close }: { close: () => void }) {
  const [, redraw] = useState(0);
  useEffect(() => onShortcutsChanged(() => redraw((n) => n + 1)), []);
  useShortcuts([{ keys: 'Esc', label: 'Close this list', run: close }], [close]);
  return (
    <Modal labelledBy="keys-title" onClose={close}>
      <h2 id="keys-title">Keyboard shortcuts</h2>
      <table>
        <tbody>
          {activeShortcuts().map((shortcut) => (
            <tr key={shortcut.keys}>
              <th scope="row">
                <kbd>{shortcut.keys}</kbd>
              </th>
              <td>{shortcut.label}</td>
            </tr>
          ))}
        </tbody>
      </table>
      <button type="button" onClick={close} autofocus>
        Close
      </button>
    </Modal>
  );
}

function Shell({ viewer, leave }: { viewer: Viewer; leave: () => void }) {
  const [path, query] = useRoute();
  const [help, setHelp] = useState(false);
  const closeHelp = useCallback(() => setHelp(false), []);
  const nav = [
    { hash: '#/queue', label: 'Queue', keys: 'g q', show: true },
    { hash: '#/operations', label: 'Operations', keys: 'g o', show: viewer.can('queue:stats') },
    { hash: '#/admins', label: 'Admins', keys: 'g a', show: viewer.can('admins:manage') },
  ].filter((item) => item.show);
  useShortcuts(
    [
      { keys: '?', label: 'Show the keyboard shortcuts', run: () => setHelp(true) },
      ...nav.map((item) => ({ keys: item.keys, label: `Go to ${item.label}`, run: () => go(item.hash) })),
      ...(viewer.can('applications:create')
        ? [{ keys: 'c', label: 'Create an application', run: () => go('#/new') }]
        : []),
    ],
    [viewer],
  );
  const application = path.match(/^\/applications\/(APP-[0-9A-Za-z-]+)$/)?.[1];
  let view = <QueueView viewer={viewer} query={query} />;
  if (application) view = <ApplicationView key={application} viewer={viewer} id={application} />;
  else if (path === '/operations' && viewer.can('queue:stats')) view = <OperationsView viewer={viewer} />;
  else if (path === '/new' && viewer.can('applications:create')) view = <NewApplicationView />;
  else if (path === '/admins' && viewer.can('admins:manage')) view = <AdminsView viewer={viewer} />;
  return (
    <>
      <button type="button" class="skip" onClick={() => document.getElementById('main')?.focus()}>
        Skip to content
      </button>
      <header class="top">
        <strong class="brand">Loan admin</strong>
        <nav aria-label="Main">
          {nav.map((item) => (
            <a key={item.hash} href={item.hash} aria-current={`#${path}`.startsWith(item.hash) ? 'page' : undefined}>
              {item.label}
            </a>
          ))}
        </nav>
        <LiveBadge />
        <span class="who">
          {viewer.name} <span class="roles">({viewer.roles.join(', ')})</span>
        </span>
        <button type="button" class="quiet" onClick={() => setHelp(true)} aria-keyshortcuts="?">
          Keys
        </button>
        <button type="button" class="quiet" onClick={leave}>
          Sign out
        </button>
      </header>
      <main id="main" tabIndex={-1}>
        {view}
      </main>
      {help && <ShortcutHelp close={closeHelp} />}
    </>
  );
}

function Console() {
  const [viewer, setViewer] = useState<Viewer | null | undefined>(undefined);
  const [ended, setEnded] = useState('');
  const start = useCallback(async (session: ConsoleSession | null) => {
    if (!session) return setViewer(null);
    setCsrfToken(session.csrfToken);
    const me = await get<Me>('/api/auth/me');
    setViewer({ ...me, can: (permission) => can(me.roles, permission) });
    setEnded('');
    openLive((code) => end(code));
  }, []);
  const end = useCallback((code: string) => {
    stopLive();
    setViewer(null);
    setEnded(
      code === 'signed_out'
        ? 'You signed out.'
        : `Your session has ended (${code}). It may have been revoked, or your account changed. Sign in again.`,
    );
  }, []);
  useEffect(() => {
    whenSignedOut(end);
    currentSession().then(start, () => setViewer(null));
  }, [start, end]);
  if (viewer === undefined) return <p class="boot">Loading the console…</p>;
  if (viewer === null)
    return (
      <>
        {ended && <Notice kind="info">{ended}</Notice>}
        <LoginView onSignedIn={start} />
      </>
    );
  return (
    <Shell
      viewer={viewer}
      leave={async () => {
        await signOut();
        end('signed_out');
      }}
    />
  );
}

installShortcuts();
render(<Console />, document.getElementById('app')!);
