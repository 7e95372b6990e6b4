// The OpenTelemetry SDK, Node only (the API's Node entry and the workers): with OTEL_EXPORTER_OTLP_ENDPOINT
// set it registers a tracer provider that batches spans to <endpoint>/v1/traces (OTLP over HTTP, JSON), an
// AsyncLocalStorage context manager (the active span follows every await) and the W3C trace-context
// propagator. Unset, nothing is registered: the API's no-op tracer answers every call, and no span is made.
// Other runtimes (workerd, Deno) never import this file; the same code runs there on the no-op tracer.
import { context, propagation, trace } from '@opentelemetry/api';
import { AsyncLocalStorageContextManager } from '@opentelemetry/context-async-hooks';
import { W3CTraceContextPropagator } from '@opentelemetry/core';
import { OTLPTraceExporter } from '@opentelemetry/exporter-trace-otlp-http';
import { resourceFromAttributes } from '@opentelemetry/resources';
import { BasicTracerProvider, BatchSpanProcessor } from '@opentelemetry/sdk-trace-base';
import { ATTR_SERVICE_NAME, ATTR_SERVICE_VERSION } from '@opentelemetry/semantic-conventions';
import type { Config } from '../shared/core/config.ts';
import { enableTracing } from '../shared/core/tracing.ts';

export interface Tracing {
  /** Exports what is still buffered, then stops (call before the process exits). */
  shutdown(): Promise<void>;
}

/** The OTLP/HTTP traces URL of a base endpoint, as the OTLP exporter specification builds it. */
export const tracesUrl = (endpoint: string) => `${endpoint.replace(/\/+$/, '')}/v1/traces`;

/** Registers the SDK when OTEL_EXPORTER_OTLP_ENDPOINT is set; undefined (and nothing registered) otherwise. */
export function startTracing(
  config: Pick<Config, 'OTEL_EXPORTER_OTLP_ENDPOINT' | 'OTEL_SERVICE_NAME'>,
  defaultServiceName: string,
): Tracing | undefined {
  const endpoint = config.OTEL_EXPORTER_OTLP_ENDPOINT;
  if (!endpoint) return undefined;
  const provider = new BasicTracerProvider({
    resource: resourceFromAttributes({
      [ATTR_SERVICE_NAME]: config.OTEL_SERVICE_NAME ?? defaultServiceName,
      [ATTR_SERVICE_VERSION]: '0.1.0',
      'service.instance.id': crypto.randomUUID(),
    }),
    // The batch's delay and size come from OTEL_BSP_* when set (the SDK reads them), else its defaults (5 s).
    spanProcessors: [new BatchSpanProcessor(new OTLPTraceExporter({ url: tracesUrl(endpoint) }))],
  });
  context.setGlobalContextManager(new AsyncLocalStorageContextManager().enable());
  propagation.setGlobalPropagator(new W3CTraceContextPropagator());
  trace.setGlobalTracerProvider(provider);
  enableTracing();
  return {
    async shutdown() {
      await provider.shutdown().catch(() => {});
    },
  };
}
