// Starts (or finds) the MongoDB target once for the whole run and hands its URL to every test file.
import type { TestProject } from 'vitest/node';
import { writeConsoleAssets } from '../../scripts/build-console.ts';
import { startTarget, type TargetFeatures, type TargetKind } from '../../scripts/mongo/targets.ts';

declare module 'vitest' {
  export interface ProvidedContext {
    mongoUrl: string;
    mongoTarget: { kind: TargetKind; description: string; features: TargetFeatures };
  }
}

export default async function setup(project: TestProject) {
  const log = (line: string) => process.stdout.write(`${line}\n`);
  await writeConsoleAssets(); // the app imports the console's built assets
  const target = await startTarget(log);
  log(`MongoDB target: ${target.description}`);
  const missing = Object.entries(target.features)
    .filter(([, has]) => !has)
    .map(([name]) => name);
  if (missing.length) log(`MongoDB target lacks: ${missing.join(', ')} (tests that need them are skipped by name)`);
  project.provide('mongoUrl', target.url);
  project.provide('mongoTarget', { kind: target.kind, description: target.description, features: target.features });
  return async () => {
    await target.stop();
  };
}
