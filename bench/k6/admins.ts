// The 1000-admin scenario for k6 (the same mix as bench/load-scenario.ts: list 80%, get 15%,
// versioned PUT 5%), each virtual admin with its own login, with think time between requests.
// Against the compose stack (nginx on port 80), with the load admins created first:
//   k6 run -e BASE_URL=http://127.0.0.1 -e ADMINS=1000 bench/k6/admins.ts
// Thresholds fail the run (exit 99): errors other than the scenario's 409s, or slow percentiles.
import { check, sleep } from 'k6';
import http from 'k6/http';
import type { Options } from 'k6/options';
import { ADMINS, type AppRef, applications, BASE_URL, json, loginAll, parse, pick } from './common.ts';

const THINK_S = Number(__ENV.THINK_S ?? 1);

export const options: Options = {
  scenarios: {
    admins: {
      executor: 'ramping-vus',
      startVUs: 0,
      stages: [
        { duration: __ENV.RAMP ?? '30s', target: ADMINS },
        { duration: __ENV.HOLD ?? '2m', target: ADMINS },
        { duration: '10s', target: 0 },
      ],
      gracefulRampDown: '10s',
    },
  },
  setupTimeout: '5m',
  thresholds: {
    // A 409 is the expected answer to a stale PUT (see the response callback below), not a failure.
    http_req_failed: ['rate<0.01'],
    'http_req_duration{kind:list}': ['p(95)<500', 'p(99)<1500'],
    'http_req_duration{kind:get}': ['p(95)<250', 'p(99)<1000'],
    'http_req_duration{kind:put}': ['p(95)<500', 'p(99)<1500'],
    checks: ['rate>0.99'],
  },
};

http.setResponseCallback(http.expectedStatuses({ min: 200, max: 299 }, 409));

interface SetupData {
  tokens: string[];
  ids: string[];
  editable: string[];
}

export function setup(): SetupData {
  const tokens = loginAll(ADMINS);
  const first = tokens[0]!;
  const editable = [...applications(first, 'pending', 200), ...applications(first, 'under_review', 200)].map(
    (a) => a._id,
  );
  const ids = [...editable, ...applications(first, 'approved', 200).map((a) => a._id)];
  if (editable.length === 0) throw new Error('no pending or under_review applications to edit');
  return { tokens, ids, editable };
}

// Per VU: the last version this admin saw of each application (a stale one gives a real 409).
const versions = new Map<string, number>();
const statusFilters = ['', '&status=pending', '&status=under_review', '&status=approved'];

export default function (data: SetupData) {
  const auth = { authorization: `Bearer ${data.tokens[(__VU - 1) % data.tokens.length]}` };
  const roll = Math.random();
  if (roll < 0.8) {
    const page = 1 + Math.floor(Math.random() * 5);
    const res = http.get(`${BASE_URL}/api/applications?page=${page}&limit=50${pick(statusFilters)}`, {
      headers: auth,
      tags: { kind: 'list' },
    });
    check(res, { 'list 200': (r) => r.status === 200 });
  } else if (roll < 0.95) {
    const res = http.get(`${BASE_URL}/api/applications/${pick(data.ids)}`, { headers: auth, tags: { kind: 'get' } });
    check(res, { 'get 200': (r) => r.status === 200 });
  } else {
    const id = pick(data.editable);
    const res = http.put(
      `${BASE_URL}/api/applications/${id}`,
      JSON.stringify({ loanAmount: 1000 + Math.floor(Math.random() * 1000) * 100, version: versions.get(id) ?? 1 }),
      { headers: { ...auth, ...json.headers }, tags: { kind: 'put' } },
    );
    check(res, { 'put 200 or 409': (r) => r.status === 200 || r.status === 409 });
    if (res.status === 200 || res.status === 409) {
      const body = parse<AppRef & { current?: AppRef }>(res);
      const current = res.status === 200 ? body : body.current;
      if (current) versions.set(id, current.version);
    }
  }
  sleep(THINK_S * (0.5 + Math.random()));
}
