// A login costs the PBKDF2 work of one check at the configured iterations whatever the account holds:
// an unknown email, a disabled admin, a legacy weaker hash, a malformed one or a current one. Counted,
// not timed: a spy on WebCrypto's deriveBits adds up the iterations each request performs.
import type { AddressInfo } from 'node:net';
import { serve } from '@hono/node-server';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { createApp } from '../../api/app.ts';
import { createLogger } from '../../api/log.ts';
import { apiIndexes, createServices, type Services } from '../../api/services.ts';
import { ensureIndexes } from '../../shared/core/db.ts';
import { hashPassword } from '../../shared/identity/password.ts';
import { testConfig } from '../support/app.ts';
import { openTestDatabase, type TestDatabase } from '../support/mongo.ts';

const ITERATIONS = 4_000;
const WEAK = 1_000;
const PASSWORD = 'the right password';

let database: TestDatabase;
let services: Services;
let server: ReturnType<typeof serve>;
let origin: string;

beforeAll(async () => {
  database = await openTestDatabase(import.meta.filename);
  // Throttling out of the way: this file checks cost, not counts.
  const config = testConfig({ PASSWORD_ITERATIONS: String(ITERATIONS), LOGIN_ATTEMPTS_PER_ADDRESS: '10000' });
  await ensureIndexes(database.db, apiIndexes);
  services = await createServices(database.db, config, createLogger('silent'));
  server = serve({
    fetch: createApp(services, { remoteAddress: () => '127.0.0.1' }).fetch,
    hostname: '127.0.0.1',
    port: 0,
  });
  await new Promise<void>((resolve) => server.once('listening', () => resolve()));
  origin = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});
afterEach(() => {
  vi.restoreAllMocks();
});
afterAll(async () => {
  await new Promise((resolve) => server?.close(resolve));
  await database.close();
});

/** Creates an admin, then replaces its stored hash with `passwordHash` (a legacy or broken one). */
async function adminWith(name: string, passwordHash?: string, disabled = false): Promise<string> {
  const email = `${name}@example.com`;
  await services.admins.create({ email, password: PASSWORD, roles: ['viewer'] });
  const $set = { disabled, ...(passwordHash === undefined ? {} : { passwordHash }) };
  await services.admins.collection.updateOne({ email }, { $set });
  return email;
}

/** The login's status and the PBKDF2 iterations the server ran to answer it. */
async function loginCost(email: string, password: string): Promise<{ status: number; iterations: number }> {
  const deriveBits = vi.spyOn(crypto.subtle, 'deriveBits');
  try {
    const res = await fetch(`${origin}/api/auth/login`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ email, password }),
    });
    await res.body?.cancel();
    const iterations = deriveBits.mock.calls.reduce(
      (sum, [params]) => sum + ((params as { iterations?: number }).iterations ?? 0),
      0,
    );
    return { status: res.status, iterations };
  } finally {
    deriveBits.mockRestore();
  }
}

describe('login cost', () => {
  it('is one check at the configured iterations for every failure, whatever the stored hash', async () => {
    const current = await adminWith('current');
    const weak = await adminWith('weak', await hashPassword(PASSWORD, WEAK));
    const broken = await adminWith('broken', 'md5$deadbeef');
    const disabled = await adminWith('disabled', undefined, true);
    const failures = {
      'unknown email (first)': await loginCost('nobody@example.com', PASSWORD),
      'unknown email (again)': await loginCost('nobody-else@example.com', PASSWORD),
      'disabled admin': await loginCost(disabled, PASSWORD),
      'wrong password, current hash': await loginCost(current, 'wrong password'),
      [`wrong password, ${WEAK}-iteration hash`]: await loginCost(weak, 'wrong password'),
      'wrong password, malformed hash': await loginCost(broken, 'wrong password'),
    };
    for (const [what, cost] of Object.entries(failures)) {
      expect({ what, ...cost }).toEqual({ what, status: 401, iterations: ITERATIONS });
    }
    expect(await loginCost(current, PASSWORD)).toEqual({ status: 200, iterations: ITERATIONS });
  });

  it('a right password on a weaker hash costs the check plus the rehash, once', async () => {
    const email = await adminWith('upgraded', await hashPassword(PASSWORD, WEAK));
    expect(await loginCost(email, PASSWORD)).toEqual({ status: 200, iterations: 2 * ITERATIONS });
    expect((await services.admins.collection.findOne({ email }))?.passwordHash).toMatch(/^pbkdf2-sha256\$4000\$/);
    expect(await loginCost(email, PASSWORD)).toEqual({ status: 200, iterations: ITERATIONS });
  });
});
