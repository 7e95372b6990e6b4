// Admin accounts: who exists, with which roles, enabled or not; add an admin, change roles, disable.
// A change of roles or a disable ends that admin's sessions on every instance (the API's revocations).
import { useState } from 'preact/hooks';
import { roles as allRoles, type Role } from '../../../shared/identity/roles.ts';
import { api, get } from '../api.ts';
import { when } from '../format.ts';
import type { Viewer } from '../main.tsx';
import { errorText, Notice, ScrollTable, useLoad } from './common.tsx';

interface Admin {
  id: string;
  email: string;
  name: string;
  roles: Role[];
  disabled: boolean;
  createdAt: string;
}

export function AdminsView({ viewer }: { viewer: Viewer }) {
  const admins = useLoad(() => get<{ items: Admin[] }>('/api/admins?limit=500'), []);
  const [message, setMessage] = useState<{ kind: 'ok' | 'error'; text: string } | null>(null);
  const change = async (admin: Admin, changes: { roles?: Role[]; disabled?: boolean }, done: string) => {
    try {
      await api('PATCH', `/api/admins/${admin.id}`, changes, { 'Content-Type': 'application/json' });
      setMessage({ kind: 'ok', text: done });
      await admins.reload();
    } catch (error) {
      setMessage({ kind: 'error', text: errorText(error) });
    }
  };
  const create = async (event: Event) => {
    event.preventDefault();
    const form = event.target as HTMLFormElement;
    const data = new FormData(form);
    try {
      await api('POST', '/api/admins', {
        email: data.get('email'),
        name: data.get('name'),
        password: data.get('password'),
        roles: data.getAll('roles'),
      });
      form.reset();
      setMessage({ kind: 'ok', text: `Added ${String(data.get('name'))}.` });
      await admins.reload();
    } catch (error) {
      setMessage({ kind: 'error', text: errorText(error) });
    }
  };
  return (
    <section aria-labelledby="admins-title">
      <h1 id="admins-title">Admins</h1>
      {message && <Notice kind={message.kind}>{message.text}</Notice>}
      {admins.error ? <Notice kind="error">{errorText(admins.error)}</Notice> : null}
      <ScrollTable label="Admins">
        <table class="admins">
          <thead>
            <tr>
              <th scope="col">Name</th>
              <th scope="col" class="wide">
                Email
              </th>
              <th scope="col">Roles</th>
              <th scope="col">Account</th>
            </tr>
          </thead>
          <tbody>
            {(admins.value?.items ?? []).map((admin) => (
              <tr key={admin.id} data-email={admin.email}>
                <th scope="row">
                  {admin.name}
                  <div class="sub">since {when(admin.createdAt)}</div>
                </th>
                <td class="wide">{admin.email}</td>
                <td>
                  <fieldset class="roles-edit">
                    <legend class="visually-hidden">Roles of {admin.name}</legend>
                    {allRoles.map((role) => (
                      <label key={role}>
                        <input
                          type="checkbox"
                          checked={admin.roles.includes(role)}
                          disabled={admin.id === viewer.id}
                          onChange={(event) => {
                            const on = (event.target as HTMLInputElement).checked;
                            const next = on ? [...admin.roles, role] : admin.roles.filter((r) => r !== role);
                            void change(
                              admin,
                              { roles: next },
                              `${admin.name}: roles now ${next.join(', ') || 'none'}.`,
                            );
                          }}
                        />{' '}
                        {role}
                      </label>
                    ))}
                  </fieldset>
                </td>
                <td>
                  {admin.id === viewer.id ? (
                    'you'
                  ) : (
                    <button
                      type="button"
                      onClick={() =>
                        change(
                          admin,
                          { disabled: !admin.disabled },
                          `${admin.name} ${admin.disabled ? 'enabled' : 'disabled'}.`,
                        )
                      }
                    >
                      {admin.disabled ? `Enable ${admin.name}` : `Disable ${admin.name}`}
                    </button>
                  )}
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      </ScrollTable>
      <h2>Add an admin</h2>
      <form class="fields" onSubmit={create}>
        <label>
          Name
          <input name="name" required maxLength={200} />
        </label>
        <label>
          Email
          <input name="email" type="email" required />
        </label>
        <label>
          Initial password
          <input name="password" type="password" required minLength={12} autocomplete="new-password" />
        </label>
        <fieldset>
          <legend>Roles</legend>
          {allRoles.map((role) => (
            <label key={role} class="inline">
              <input type="checkbox" name="roles" value={role} /> {role}
            </label>
          ))}
        </fieldset>
        <div class="form-actions">
          <button type="submit">Add admin</button>
        </div>
      </form>
    </section>
  );
}
