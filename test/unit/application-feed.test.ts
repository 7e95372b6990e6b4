// The change feed's pure parts: ids, the event a document stands for, and the history that serves
// Last-Event-ID (what it replays, when it says reload, what its bounds drop).
import { describe, expect, it } from 'vitest';
import {
  type ApplicationEvent,
  EventHistory,
  eventId,
  eventOf,
  parseEventId,
} from '../../shared/loans/application-feed.ts';

const event = (at: number, applicationId: string, version = 1): ApplicationEvent => ({
  id: eventId(at, version, applicationId),
  applicationId,
  version,
  status: 'pending',
  at,
});

describe('ids and events', () => {
  it('round-trips an id, and refuses what is not one', () => {
    expect(parseEventId(eventId(1_700_000_000_123, 4, 'APP-a_b'))).toEqual({
      at: 1_700_000_000_123,
      version: 4,
      applicationId: 'APP-a_b',
    });
    for (const bad of ['', 'x', '12_3', 'a_1_APP', '1_x_APP']) expect(parseEventId(bad)).toBeNull();
  });

  it('takes from and action only from a lastChange that made this version', () => {
    const base = { _id: 'APP-1', status: 'under_review' as const, updatedAt: new Date(5_000) };
    const made = { at: new Date(5_000), actor: 'a', action: 'update' as const, from: 'pending' as const };
    expect(eventOf({ ...base, version: 2, lastChange: { ...made, version: 2 } })).toEqual({
      id: '5000_2_APP-1',
      applicationId: 'APP-1',
      version: 2,
      status: 'under_review',
      from: 'pending',
      at: 5_000,
      action: 'update',
    });
    // A worker's write bumped the version after that change: its event has neither.
    const later = eventOf({ ...base, version: 3, lastChange: { ...made, version: 2 } });
    expect(later).toEqual({
      id: '5000_3_APP-1',
      applicationId: 'APP-1',
      version: 3,
      status: 'under_review',
      at: 5_000,
    });
  });
});

describe('EventHistory', () => {
  it('replays every event after the id, and those stamped within the margin before it, in id order', () => {
    const history = new EventHistory(0, 60_000, 100);
    const [a, b, c, d] = [event(1_000, 'A'), event(5_000, 'B'), event(5_500, 'C'), event(9_000, 'D')];
    for (const e of [a!, b!, d!, c!]) history.add(e, 10_000); // c lands after d
    expect(history.after(b!.id, 0)).toEqual({ replay: [c, d] });
    // c stamped before b but landing later is not lost with a margin: b itself is not sent again.
    const late = event(4_800, 'E');
    history.add(late, 10_000);
    expect(history.after(b!.id, 2_000)).toEqual({ replay: [late, c, d] });
    expect(history.after(b!.id, 0)).toEqual({ replay: [c, d] });
  });

  it('says reload for an id it cannot serve: not ours, or older than what it covers', () => {
    const history = new EventHistory(3_000, 60_000, 100);
    history.add(event(4_000, 'A'), 5_000);
    expect(history.after('garbage', 0)).toEqual({ reload: true });
    expect(history.after(eventId(2_000, 1, 'Z'), 0)).toEqual({ reload: true });
    expect(history.after(eventId(4_000, 1, 'A'), 500)).toEqual({ replay: [] });
    expect(history.after(eventId(4_000, 1, 'A'), 1_500)).toEqual({ reload: true });
  });

  it('drops events past its age and count bounds, and covers only what it kept', () => {
    const history = new EventHistory(0, 10_000, 3);
    for (let i = 1; i <= 5; i++) history.add(event(i * 1_000, `A${i}`), 5_000);
    expect(history.size).toBe(3); // count bound: A3..A5
    expect(history.coversFrom).toBe(2_001);
    expect(history.after(eventId(2_000, 1, 'A2'), 0)).toEqual({ reload: true });
    expect(history.after(eventId(3_000, 1, 'A3'), 0)).toEqual({ replay: [event(4_000, 'A4'), event(5_000, 'A5')] });
    history.add(event(20_000, 'B'), 20_000); // age bound: everything before 10 s goes
    expect(history.size).toBe(1);
    expect(history.coversFrom).toBe(10_000);
  });
});
