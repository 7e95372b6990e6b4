// Stopping a child process the way an operator would: SIGTERM, then wait for it to exit.
import type { ChildProcess } from 'node:child_process';

/** Sends SIGTERM and resolves once the child has exited; after `killAfterMs`, if given, SIGKILL. */
export function stopProcess(child: ChildProcess, killAfterMs?: number): Promise<void> {
  return new Promise((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) return resolve();
    const timer = killAfterMs === undefined ? undefined : setTimeout(() => child.kill('SIGKILL'), killAfterMs);
    child.once('exit', () => {
      clearTimeout(timer);
      resolve();
    });
    child.kill('SIGTERM');
  });
}
