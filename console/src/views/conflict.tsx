// The three-way dialog: someone else changed, since the version you started from, a field you changed
// too. Field by field: what it was, what they made it (who, when), what you made it; you choose, nothing
// is taken for you. Your other edits (disjoint from theirs) are listed: they merge as they are.
import { useState } from 'preact/hooks';
import { when } from '../format.ts';
import { useShortcuts } from '../shortcuts.ts';
import type { MergeConflict } from '../types.ts';
import { fieldLabel } from './application.tsx';
import { Modal, ScrollTable } from './common.tsx';

const show = (value: unknown) =>
  value === undefined || value === null || value === ''
    ? '(empty)'
    : typeof value === 'object'
      ? JSON.stringify(value)
      : String(value);

export function ConflictDialog(props: {
  conflicts: MergeConflict[];
  clean: string[];
  names: (id: string | undefined) => string;
  resolve: (mine: Record<string, unknown>) => void;
  cancel: () => void;
}) {
  const [choice, setChoice] = useState<Record<string, 'mine' | 'theirs'>>({});
  const complete = props.conflicts.every((conflict) => choice[conflict.path]);
  const apply = () => {
    if (!complete) return;
    props.resolve(
      Object.fromEntries(
        props.conflicts
          .filter((conflict) => choice[conflict.path] === 'mine')
          .map((conflict) => [conflict.path, conflict.yours]),
      ),
    );
  };
  const all = (side: 'mine' | 'theirs') => setChoice(Object.fromEntries(props.conflicts.map((c) => [c.path, side])));
  useShortcuts(
    [
      { keys: 'Esc', label: 'Close the dialog; your edits stay unsaved', run: props.cancel },
      { keys: 'm', label: 'Keep all of mine', run: () => all('mine') },
      { keys: 't', label: 'Take all of theirs', run: () => all('theirs') },
      { keys: 'Ctrl+Enter', label: 'Save with these choices', run: apply },
    ],
    [choice, props.conflicts],
  );
  return (
    <Modal labelledBy="conflict-title" wide onClose={props.cancel}>
      <h2 id="conflict-title">Someone else changed this first</h2>
      <p>Choose, field by field, whose value to keep. Nothing is saved until you do.</p>
      <ScrollTable label="Conflicting fields">
        <table class="conflicts">
          <thead>
            <tr>
              <th scope="col">Field</th>
              <th scope="col">Was</th>
              <th scope="col">Theirs</th>
              <th scope="col">Yours</th>
              <th scope="col">Keep</th>
            </tr>
          </thead>
          <tbody>
            {props.conflicts.map((conflict, index) => (
              <tr key={conflict.path} data-path={conflict.path}>
                <th scope="row">{fieldLabel(conflict.path)}</th>
                <td>{show(conflict.base)}</td>
                <td>
                  <span class="theirs">{show(conflict.theirs)}</span>
                  <div class="sub">
                    by {conflict.byName ?? props.names(conflict.by)}, {when(conflict.at)}
                  </div>
                </td>
                <td>
                  <span class="yours">{show(conflict.yours)}</span>
                </td>
                <td>
                  <fieldset>
                    <legend class="visually-hidden">Keep for {fieldLabel(conflict.path)}</legend>
                    <label>
                      <input
                        type="radio"
                        name={`keep-${index}`}
                        checked={choice[conflict.path] === 'mine'}
                        onChange={() => setChoice({ ...choice, [conflict.path]: 'mine' })}
                        autofocus={index === 0}
                      />{' '}
                      mine
                    </label>
                    <label>
                      <input
                        type="radio"
                        name={`keep-${index}`}
                        checked={choice[conflict.path] === 'theirs'}
                        onChange={() => setChoice({ ...choice, [conflict.path]: 'theirs' })}
                      />{' '}
                      theirs
                    </label>
                  </fieldset>
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      </ScrollTable>
      {props.clean.length > 0 && <p>Your other edits merge as they are: {props.clean.map(fieldLabel).join(', ')}.</p>}
      <div class="form-actions">
        <button type="button" onClick={apply} disabled={!complete}>
          Save with these choices
        </button>
        <button type="button" class="quiet" onClick={props.cancel}>
          Not now
        </button>
      </div>
    </Modal>
  );
}
