// The Redis suites' skip rule: without redis-server a file is skipped by name, except in CI, where
// `npm run setup` must have installed it (there a missing server fails the suite instead).
import { findRedisServer } from '../../scripts/redis.ts';

export const noRedis = !findRedisServer() && !process.env.CI;

/** The suite's title, saying why it is skipped when it is. */
export const redisSuite = (title: string) =>
  noRedis ? `${title} (skipped: redis-server is not installed; npm run setup installs it)` : title;
