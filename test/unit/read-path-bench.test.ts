// The read-path bench's own logic (bench/read-path-*.ts): what it reads from Artillery's report,
// how it turns counter samples into commands per second, how its SSE clients parse a stream and
// judge delivery, and which checkouts it measures. A wrong figure here would be printed as a result.
import { expect, it } from 'vitest';
import {
  type CounterSample,
  commandRates,
  formatCounts,
  parseTrees,
  sideBySide,
  summarizeArtillery,
} from '../../bench/read-path-report.ts';
import { changeKey, deliveryReport, type SseEvent, sseParser } from '../../bench/read-path-sse.ts';

it('reads requests, statuses, client errors and latency from an Artillery report', () => {
  const summary = summarizeArtillery({
    aggregate: {
      counters: {
        'http.requests': 1000,
        'http.codes.200': 900,
        'http.codes.503': 80,
        'errors.ETIMEDOUT': 20,
        'vusers.created': 100,
        'vusers.failed': 20,
        'edits.sent': 42,
        'edits.409.merge_conflict': 3,
      },
      summaries: { 'http.response_time': { median: 12.1, p95: 80.6, p99: 150.3 } },
      firstCounterAt: 1_000,
      lastCounterAt: 21_000,
    },
  });
  expect(summary).toEqual({
    requests: 1000,
    statuses: { '200': 900, '503': 80, ETIMEDOUT: 20 },
    ok200Pct: 90,
    p50: 12.1,
    p95: 80.6,
    p99: 150.3,
    vusersCreated: 100,
    vusersFailed: 20,
    edits: 42,
    refusals: { merge_conflict: 3 },
    firstAt: 1_000,
    lastAt: 21_000,
  });
});

it('turns cumulative counter samples into commands per second between two times, heartbeats left out', () => {
  const samples: CounterSample[] = [
    { at: 0, counts: { find: 10, hello: 1 } },
    { at: 1_000, counts: { find: 20, hello: 2 } },
    { at: 11_000, counts: { find: 220, update: 30, hello: 3 } },
    { at: 12_000, counts: { find: 230, update: 30, hello: 4 } },
  ];
  // The nearest samples to 900 and 11,200 are at 1,000 and 11,000: 10 s.
  expect(commandRates(samples, 900, 11_200)).toEqual({
    total: 23,
    byCommand: { find: 20, update: 3, hello: 0.1 },
    seconds: 10,
  });
});

it('parses an event stream cut anywhere: comments, CRLF, multi-line data, named events', () => {
  const events: SseEvent[] = [];
  const feed = sseParser((event) => events.push(event));
  const stream =
    ': heartbeat\r\n\r\nretry: 1000\n\nid: 7\nevent: change\ndata: {"applicationId":"a1",\ndata: "version":2}\n\nevent: reload\ndata: {}\n\n';
  for (let i = 0; i < stream.length; i += 5) feed(stream.slice(i, i + 5));
  expect(events).toEqual([
    { event: 'change', id: '7', data: '{"applicationId":"a1",\n"version":2}' },
    { event: 'reload', data: '{}' },
  ]);
  expect(events.map(changeKey)).toEqual(['a1:2', null]);
});

it('judges delivery per client and change: latency from the write, and every missing delivery counted', () => {
  const client = (entries: Array<[string, number]>) => new Map(entries);
  const received = [
    client([
      ['a:2', 1_100],
      ['b:2', 2_050],
    ]),
    client([['a:2', 1_300]]), // never got b:2
    client([
      ['a:2', 1_200],
      ['b:2', 2_400],
    ]),
  ];
  const report = deliveryReport(
    received,
    [
      { key: 'a:2', at: 1_000 },
      { key: 'b:2', at: 2_000 },
    ],
    { change: 5 },
  );
  expect(report).toMatchObject({ clients: 3, changes: 2, expected: 6, missing: 1, p50: 200, max: 400 });
});

it('measures this checkout by default and named checkouts when given; refuses a malformed list', () => {
  expect(parseTrees(undefined, '/repo')).toEqual([{ name: 'current', path: '/repo' }]);
  expect(parseTrees('baseline=/work/wt/baseline,current=.', '/repo')).toEqual([
    { name: 'baseline', path: '/work/wt/baseline' },
    { name: 'current', path: '/repo' },
  ]);
  expect(() => parseTrees('baseline', '/repo')).toThrow(/name=path/);
  expect(() => parseTrees('a=/x,a=/y', '/repo')).toThrow(/twice/);
});

it('prints one row per measure and a column per checkout, "-" where a checkout has no figure', () => {
  const table = sideBySide(['baseline', 'current'], [{ requests: 10 }, { requests: 12, 'SSE delivery': 'yes' }]);
  expect(table.split('\n')).toEqual([
    '| measure | baseline | current |',
    '| --- | --- | --- |',
    '| requests | 10 | 12 |',
    '| SSE delivery | - | yes |',
  ]);
  expect(formatCounts({ '200': 5, '503': 9 }, 6, ': ')).toBe('503: 9, 200: 5');
});
