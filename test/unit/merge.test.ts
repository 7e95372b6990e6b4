// The pure parts of field-level merge: a patch's leaf paths, overlap, the conflicts it names, the status
// rule, the change log's versions and its wholeness check, and where PATCH takes its base version from.
import { describe, expect, it } from 'vitest';
import { patchBaseOf } from '../../api/routes/application-patch.ts';
import { ValidationError } from '../../shared/core/errors.ts';
import {
  applicationPatchSchema,
  type ChangeEntry,
  changeEntry,
  changesSince,
  checkBounds,
  collisionTargets,
  findConflicts,
  isConsistentLog,
  leavesOf,
  overlaps,
  versionedLog,
  withChange,
} from '../../shared/loans/applications.ts';

const at = new Date('2026-12-02T20:00:00Z');
const entry = (paths: ChangeEntry['paths'], by = 'ADM-1', version?: number) =>
  changeEntry({ version, at, by, action: 'update', paths });

describe('a patch', () => {
  it('is cut into sorted leaf paths; null deletes; an empty object sets nothing', () => {
    const patch = applicationPatchSchema.parse({
      purpose: null,
      contact: { phone: '+1 555 0100', email: null },
      notes: { n1: { text: 'hi' } },
      checklist: {},
      status: 'under_review',
      baseVersion: 3,
    });
    expect(leavesOf(patch)).toEqual([
      { path: 'contact.email', value: null },
      { path: 'contact.phone', value: '+1 555 0100' },
      { path: 'notes.n1', value: { text: 'hi' } },
      { path: 'purpose', value: null },
    ]);
    expect(leavesOf(applicationPatchSchema.parse({ contact: null }))).toEqual([{ path: 'contact', value: null }]);
  });

  it('refuses ids that would be paths, unknown fields and deleting a required field', () => {
    for (const body of [
      { notes: { 'a.b': { text: 'x' } } },
      { notes: { $x: { text: 'x' } } },
      { checklist: { a: { done: 'yes' } } },
      { loanAmount: null },
      { version: 3 },
    ]) {
      expect(applicationPatchSchema.safeParse(body).success, JSON.stringify(body)).toBe(false);
    }
  });
});

describe('overlap and conflicts', () => {
  it('two paths overlap when one is the other or lies inside it', () => {
    expect(overlaps('contact', 'contact.phone')).toBe(true);
    expect(overlaps('contact.phone', 'contact')).toBe(true);
    expect(overlaps('contact.phone', 'contact.phone')).toBe(true);
    expect(overlaps('contact.phone', 'contact.email')).toBe(false);
    expect(overlaps('notes.a', 'notes.ab')).toBe(false);
  });

  it('names each overlap with the base value of the first change and the latest value, who and when', () => {
    const since = [
      { ...entry([{ path: 'contact.phone', old: '1', new: '2' }], 'ADM-2'), version: 5 },
      { ...entry([{ path: 'notes.x', new: { text: 't' } }], 'ADM-3'), version: 6 },
      { ...entry([{ path: 'contact.phone', old: '2', new: '3' }], 'ADM-4'), version: 7 },
    ];
    const targets = collisionTargets([{ path: 'contact', value: null }], undefined);
    expect(findConflicts(since, targets)).toEqual([
      { path: 'contact', theirPath: 'contact.phone', base: '1', theirs: '3', by: 'ADM-4', at, version: 7, yours: null },
    ]);
    expect(findConflicts(since, collisionTargets([{ path: 'notes.y', value: { text: 'u' } }], undefined))).toEqual([]);
  });

  it('a status move collides with a status, applicant field or evidence change, not with notes', () => {
    const targets = collisionTargets([], 'approved');
    const change = (path: string) => [{ ...entry([{ path, new: 1 }]), version: 2 }];
    for (const path of ['status', 'loanAmount', 'applicantName', 'ocr', 'documents', 'recommendation']) {
      expect(findConflicts(change(path), targets), path).toHaveLength(1);
    }
    for (const path of ['notes.a', 'contact.phone', 'checklist.x']) {
      expect(findConflicts(change(path), targets), path).toEqual([]);
    }
  });

  it('keeps notes and checklist within their bounds on the version judged', () => {
    const notes = Object.fromEntries(Array.from({ length: 200 }, (_, i) => [`n${i}`, { text: 't', by: 'a', at }]));
    const app = { notes } as never;
    expect(() => checkBounds(app, [{ path: 'notes.new', value: { text: 'x' } }])).toThrow(ValidationError);
    expect(() => checkBounds(app, [{ path: 'notes.n1', value: { text: 'x' } }])).not.toThrow();
    expect(() =>
      checkBounds(app, [
        { path: 'notes.n1', value: null },
        { path: 'notes.new', value: { text: 'x' } },
      ]),
    ).not.toThrow();
  });
});

describe('the change log', () => {
  const a = entry([], 'ADM-1', 1);
  const b = entry([{ path: 'purpose', new: 'p' }]);
  const c = entry([{ path: 'contact.phone', new: '1' }]);

  it('gives each entry its version from its position, and tells the changes since a base', () => {
    const doc = { version: 3, changes: [a, b, c], changeHead: c.id };
    expect(versionedLog(doc).map((logged) => logged.version)).toEqual([1, 2, 3]);
    expect(changesSince(doc, 1)?.map((logged) => logged.id)).toEqual([b.id, c.id]);
    expect(changesSince(doc, 3)).toEqual([]);
    expect(changesSince({ version: 9, changes: [b, c], changeHead: c.id }, 6)).toBeNull();
    expect(c.keys).toEqual(['contact', 'contact.phone']);
  });

  it('is whole only with its head last, no entry twice and pinned versions in place', () => {
    expect(isConsistentLog({ version: 3, changes: [a, b, c], changeHead: c.id })).toBe(true);
    // A read racing a write: the new entry beside the old version and head.
    expect(isConsistentLog({ version: 2, changes: [a, b, c], changeHead: b.id })).toBe(false);
    expect(isConsistentLog({ version: 3, changes: [a, b, c], changeHead: 'gone' })).toBe(false);
    expect(isConsistentLog({ version: 3, changes: [a, b, b], changeHead: b.id })).toBe(false);
    expect(isConsistentLog({ version: 4, changes: [a, b, c], changeHead: c.id })).toBe(false);
    expect(isConsistentLog({ version: 1 })).toBe(true);
  });

  it('is appended with its head by the update that bumps the version, trimmed only when asked', () => {
    expect(withChange({ $set: { x: 1 }, $inc: { version: 1 } }, c, 100)).toEqual({
      $set: { x: 1, changeHead: c.id },
      $inc: { version: 1 },
      $push: { changes: { $each: [c], $slice: -100 } },
    });
    expect(withChange({ $set: {} }, c).$push).toEqual({ changes: { $each: [c] } });
  });
});

describe('the base version of a PATCH', () => {
  it('comes from one If-Match tag or baseVersion; 400 when they disagree or the tag is not one version; 428 for neither', () => {
    expect(patchBaseOf(4, undefined)).toEqual({ version: 4, from: 'body' });
    expect(patchBaseOf(undefined, '"4"')).toEqual({ version: 4, from: 'if-match' });
    expect(patchBaseOf(4, '"4"')).toEqual({ version: 4, from: 'if-match' });
    for (const [body, header] of [
      [3, '"4"'],
      [undefined, '*'],
      [undefined, '"3", "4"'],
      [undefined, 'W/"4"'],
    ] as const) {
      expect(() => patchBaseOf(body, header)).toThrow(expect.objectContaining({ status: 400 }));
    }
    expect(() => patchBaseOf(undefined, undefined)).toThrow(expect.objectContaining({ status: 428 }));
  });
});
