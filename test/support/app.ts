// An app on a test database, with a fresh signing key and cheap password hashing; a whole API suite's set-up.
import type { Db } from 'mongodb';
import { createApp } from '../../api/app.ts';
import { createLogger } from '../../api/log.ts';
import { apiIndexes, createServices, type Services } from '../../api/services.ts';
import { type ApiConfig, apiConfigSchema, loadConfig } from '../../shared/core/config.ts';
import { ensureIndexes } from '../../shared/core/db.ts';
import type { Role } from '../../shared/identity/sessions.ts';
import { adminsByRole, callerFor } from './http.ts';
import { mongoUrl, openTestDatabase } from './mongo.ts';

export function randomJwtKeys(kid = 'test'): string {
  return `${kid}:${btoa(String.fromCharCode(...crypto.getRandomValues(new Uint8Array(32))))}`;
}

export function testConfig(overrides: Record<string, string> = {}): ApiConfig {
  return loadConfig(
    {
      MONGO_URL: mongoUrl(),
      JWT_KEYS: randomJwtKeys(),
      LEDGER_KEYS: randomJwtKeys('ledger'),
      PASSWORD_ITERATIONS: '1000',
      LOG_LEVEL: 'silent',
      REVOCATION_STALENESS_MS: '200',
      // Tests check totals right after writing: no reuse unless a test asks for it.
      LIST_TOTAL_CACHE_MS: '0',
      LIST_CACHE_MS: '0',
      ...overrides,
    },
    apiConfigSchema,
  );
}

export async function createTestApp(db: Db, overrides: Record<string, string> = {}, remoteAddress = '127.0.0.1') {
  const config = testConfig(overrides);
  await ensureIndexes(db, apiIndexes);
  const services: Services = await createServices(db, config, createLogger('silent'));
  const app = createApp(services, { remoteAddress: () => remoteAddress });
  return { app, services, config };
}

export const ALL_ROLES: readonly Role[] = ['viewer', 'reviewer', 'approver', 'disburser', 'admin'];

/** A test file's API suite: its own database, an app on it, one signed-in admin per role, a caller. */
export async function openApiSuite(file: string, overrides: Record<string, string> = {}, roles = ALL_ROLES) {
  const database = await openTestDatabase(file);
  const { app, services, config } = await createTestApp(database.db, overrides);
  const { tokens, ids } = await adminsByRole(app, services, roles);
  return { database, app, services, config, tokens, adminIds: ids, call: callerFor(app, tokens) };
}

/** The environment of an API process (api/node.ts) on a test database: fresh keys, cheap hashing, warnings only. */
export function apiProcessEnv(dbName: string, overrides: Record<string, string> = {}): Record<string, string> {
  return {
    MONGO_URL: mongoUrl(),
    MONGO_DB: dbName,
    JWT_KEYS: randomJwtKeys(),
    LEDGER_KEYS: randomJwtKeys('ledger'),
    PASSWORD_ITERATIONS: '1000',
    LOG_LEVEL: 'warn',
    ...overrides,
  };
}
