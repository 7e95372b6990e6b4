// The conflict scenario for k6: many admins edit the SAME few applications at once, each PUT carrying
// the version it just read. Optimistic locking must give exactly one winner per version: a 200 answers
// with version + 1, a 409 carries a newer current version, and nothing else (no 5xx, no lost update).
//   k6 run -e BASE_URL=http://127.0.0.1 -e ADMINS=200 -e HOT=5 bench/k6/conflict.ts
import { check } from 'k6';
import http from 'k6/http';
import { Counter } from 'k6/metrics';
import type { Options } from 'k6/options';
import { ADMINS, type AppRef, applications, BASE_URL, json, loginAll, parse, pick } from './common.ts';

const HOT = Number(__ENV.HOT ?? 5);
const updatesWon = new Counter('updates_won');
const conflicts = new Counter('conflicts');
const versionsGained = new Counter('versions_gained');

export const options: Options = {
  scenarios: {
    conflict: { executor: 'constant-vus', vus: ADMINS, duration: __ENV.DURATION ?? '1m' },
  },
  setupTimeout: '5m',
  thresholds: {
    http_req_failed: ['rate<0.001'],
    // Every answer is the right one: 200 with version + 1, or 409 with a newer current document.
    checks: ['rate==1'],
    conflicts: ['count>0'], // the scenario did contend
  },
};

http.setResponseCallback(http.expectedStatuses({ min: 200, max: 299 }, 409));

interface SetupData {
  tokens: string[];
  hot: AppRef[];
}

export function setup(): SetupData {
  const tokens = loginAll(ADMINS);
  const hot = applications(tokens[0]!, 'pending', HOT);
  if (hot.length === 0) throw new Error('no pending applications');
  return { tokens, hot };
}

export default function (data: SetupData) {
  const auth = { authorization: `Bearer ${data.tokens[(__VU - 1) % data.tokens.length]}` };
  const { _id: id } = pick(data.hot);
  const read = http.get(`${BASE_URL}/api/applications/${id}`, { headers: auth, tags: { kind: 'get' } });
  if (!check(read, { 'get 200': (r) => r.status === 200 })) return;
  const seen = parse<AppRef>(read).version;
  const res = http.put(
    `${BASE_URL}/api/applications/${id}`,
    JSON.stringify({ loanAmount: 1000 + Math.floor(Math.random() * 1000) * 100, version: seen }),
    { headers: { ...auth, ...json.headers }, tags: { kind: 'put' } },
  );
  if (res.status === 200) {
    updatesWon.add(1);
    check(res, { 'a winner gets version + 1': (r) => parse<AppRef>(r).version === seen + 1 });
  } else {
    conflicts.add(1);
    check(res, {
      'a loser gets 409 with a newer version': (r) =>
        r.status === 409 && (parse<{ current: AppRef }>(r).current?.version ?? 0) > seen,
    });
  }
}

/** No lost update: the versions the hot applications gained equal the PUTs that won (compare the two counters). */
export function teardown(data: SetupData) {
  const auth = { authorization: `Bearer ${data.tokens[0]}` };
  for (const app of data.hot) {
    const res = http.get(`${BASE_URL}/api/applications/${app._id}`, { headers: auth, tags: { kind: 'teardown' } });
    versionsGained.add(parse<AppRef>(res).version - app.version);
  }
}
