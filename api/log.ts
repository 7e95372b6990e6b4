// Structured JSON logs, one line per event, on every runtime (console is the common ground). A line
// written while a span is active carries its trace_id and span_id (OpenTelemetry's names for them).
import { traceLogFields } from '../shared/core/tracing.ts';

const levels = { debug: 10, info: 20, warn: 30, error: 40, silent: 100 } as const;
export type LogLevel = keyof typeof levels;

export interface Logger {
  debug(msg: string, fields?: Record<string, unknown>): void;
  info(msg: string, fields?: Record<string, unknown>): void;
  warn(msg: string, fields?: Record<string, unknown>): void;
  error(msg: string, fields?: Record<string, unknown>): void;
}

export function createLogger(level: LogLevel, base: Record<string, unknown> = {}): Logger {
  const threshold = levels[level];
  const write =
    (at: Exclude<LogLevel, 'silent'>) =>
    (msg: string, fields: Record<string, unknown> = {}) => {
      if (levels[at] < threshold) return;
      const line = JSON.stringify({
        time: new Date().toISOString(),
        level: at,
        msg,
        ...base,
        ...traceLogFields(),
        ...fields,
      });
      if (at === 'error') console.error(line);
      else console.log(line);
    };
  return { debug: write('debug'), info: write('info'), warn: write('warn'), error: write('error') };
}

/**
 * An error as log fields: its message (`error`), code, stack, and the errors it wraps (`cause`, each
 * with its own stack), so a log line shows where a failure began and not only its last words.
 */
export function errorFields(error: unknown, depth = 0): Record<string, unknown> {
  if (!(error instanceof Error)) return { error: String(error) };
  const code = (error as { code?: unknown }).code;
  // A cause chain is short; the bound only guards against one that loops.
  const cause = error.cause === undefined || depth >= 5 ? undefined : errorFields(error.cause, depth + 1);
  return {
    error: error.message,
    ...(code === undefined ? {} : { code }),
    stack: error.stack,
    ...(cause ? { cause } : {}),
  };
}
