// Tracing through the OpenTelemetry API only: runtime-neutral (Node, workerd, Deno). Where nothing backs
// the API (OTEL_EXPORTER_OTLP_ENDPOINT unset, or workerd) every call here is the API's no-op, and the
// helpers below skip even that: they make a span only under a recording one, or when the process turned
// tracing on (enableTracing: called by the Node SDK's set-up, api/otel.ts, and on Deno by api/deno.ts
// when Deno's built-in OpenTelemetry backs the API).
// The W3C trace context travels in a small carrier, `{traceparent, tracestate?}`: an HTTP header pair,
// a job document's `trace` field, an approved application's `approvalTrace`.
import {
  type Attributes,
  type Context,
  context,
  type Link,
  propagation,
  ROOT_CONTEXT,
  type Span,
  SpanKind,
  SpanStatusCode,
  type Tracer,
  trace,
} from '@opentelemetry/api';

export { SpanKind, SpanStatusCode } from '@opentelemetry/api';

/** The W3C trace context as stored in a document or sent in headers. */
export interface TraceCarrier {
  traceparent: string;
  tracestate?: string;
}

let enabled = false;

/** Called once by the entry that backed the API (Node's SDK, Deno's own): root spans (requests, jobs) are made from now on. */
export function enableTracing(): void {
  enabled = true;
}

/** Whether this process exports spans (Node's SDK is registered, or Deno's OpenTelemetry is on). */
export function tracingEnabled(): boolean {
  return enabled;
}

export function tracer(): Tracer {
  return trace.getTracer('loan-admin');
}

/** The span this code runs under, if it records (nothing is made on its behalf otherwise). */
export function recordingSpan(): Span | undefined {
  const span = trace.getActiveSpan();
  return span?.isRecording() ? span : undefined;
}

/** The active context as a carrier, or undefined when no recording span is active. */
export function currentTrace(): TraceCarrier | undefined {
  if (!recordingSpan()) return undefined;
  const carrier: Record<string, string> = {};
  propagation.inject(context.active(), carrier);
  return carrier.traceparent ? carrierOf(carrier) : undefined;
}

const carrierOf = (headers: Record<string, string | undefined>): TraceCarrier | undefined => {
  const traceparent = headers.traceparent;
  if (typeof traceparent !== 'string') return undefined;
  return typeof headers.tracestate === 'string' && headers.tracestate !== ''
    ? { traceparent, tracestate: headers.tracestate }
    : { traceparent };
};

/** A context whose parent is the carrier's span (the root context when there is none or it is malformed). */
export function contextOf(carrier: Partial<TraceCarrier> | null | undefined): Context {
  if (!carrier || typeof carrier.traceparent !== 'string') return ROOT_CONTEXT;
  return propagation.extract(ROOT_CONTEXT, carrier);
}

/** Adds traceparent (and tracestate) of the active span to outgoing headers. */
export function injectHeaders(headers: Record<string, string>): void {
  if (recordingSpan()) propagation.inject(context.active(), headers);
}

/** The trace and span ids a log line carries while a span is active (none otherwise). */
export function traceLogFields(): { trace_id: string; span_id: string } | undefined {
  const span = trace.getActiveSpan();
  if (!span) return undefined;
  const { traceId, spanId } = span.spanContext();
  return trace.isSpanContextValid(span.spanContext()) ? { trace_id: traceId, span_id: spanId } : undefined;
}

export interface SpanOptions {
  kind?: SpanKind;
  attributes?: Attributes;
  links?: Link[];
  /** The parent; the active context when omitted. */
  parent?: Context;
  /** Make the span even without a recording parent (a request, a job run): only while tracing is on. */
  root?: boolean;
}

/**
 * Runs `fn` inside a span that ends when it settles (an error is recorded and rethrown). Without a
 * recording parent (and not `root` with tracing on) it runs `fn` as it is: no span, no context switch.
 */
export function inSpan<T>(name: string, options: SpanOptions, fn: (span: Span | undefined) => Promise<T>): Promise<T> {
  const parent = options.parent ?? context.active();
  const parentRecords = trace.getSpan(parent)?.isRecording() ?? false;
  if (!parentRecords && !(options.root && enabled)) return fn(undefined);
  const span = tracer().startSpan(
    name,
    { kind: options.kind ?? SpanKind.INTERNAL, attributes: options.attributes, links: options.links },
    parent,
  );
  return context.with(trace.setSpan(parent, span), async () => {
    try {
      return await fn(span);
    } catch (error) {
      failSpan(span, error);
      throw error;
    } finally {
      span.end();
    }
  });
}

/** Marks a span failed with the error. */
export function failSpan(span: Span, error: unknown): void {
  span.recordException(error instanceof Error ? error : String(error));
  span.setStatus({ code: SpanStatusCode.ERROR, message: error instanceof Error ? error.message : String(error) });
}

/** A link to the active recording span, or none. */
export function linkToActive(): Link[] {
  const span = recordingSpan();
  return span ? [{ context: span.spanContext() }] : [];
}
