import { context, metrics, propagation, trace, type Meter, type Tracer } from '@opentelemetry/api';
import { AsyncLocalStorageContextManager } from '@opentelemetry/context-async-hooks';
import { W3CTraceContextPropagator } from '@opentelemetry/core';
import { PrometheusExporter } from '@opentelemetry/exporter-prometheus';
import { OTLPTraceExporter } from '@opentelemetry/exporter-trace-otlp-http';
import { resourceFromAttributes } from '@opentelemetry/resources';
import { MeterProvider, type IMetricReader } from '@opentelemetry/sdk-metrics';
import {
  BasicTracerProvider,
  BatchSpanProcessor,
  SimpleSpanProcessor,
  type SpanExporter,
  type SpanProcessor,
} from '@opentelemetry/sdk-trace-base';

/** Instrumentation scope of the example app's own spans and metrics (the library has its own, `typeorm-cells`). */
export const EXAMPLE_SCOPE = 'typeorm-cells-example';

/** Options of `startTelemetry`. */
export interface AppTelemetryOptions {
  /** Environment read for `OTEL_SERVICE_NAME` and the OTLP endpoint. Default: `process.env`. */
  env?: Readonly<Record<string, string | undefined>>;
  /** More span exporters, each behind a SimpleSpanProcessor (tests pass an InMemorySpanExporter). Default: none. */
  spanExporters?: readonly SpanExporter[];
  /** More metric readers beside the Prometheus one (tests pass an in-memory one). Default: none. */
  metricReaders?: readonly IMetricReader[];
}

/**
 * The OpenTelemetry SDK of the example app, registered as the global providers so that the library
 * (which reads the globals of `@opentelemetry/api` by default) reports through it too.
 */
export interface AppTelemetry {
  tracerProvider: BasicTracerProvider;
  meterProvider: MeterProvider;
  /** The app's own tracer and meter (scope `typeorm-cells-example`). */
  tracer: Tracer;
  meter: Meter;
  /** Serves the metrics in Prometheus text format from the app's `GET /metrics`; it starts no server of its own. */
  prometheus: PrometheusExporter;
  /** Where traces go over OTLP/HTTP, or undefined when no endpoint is set (then no trace leaves the process). */
  otlpTracesUrl: string | undefined;
  /** Flushes the pending spans (an OTLP export included), then stops the providers and unregisters the globals. */
  shutdown(): Promise<void>;
}

/**
 * Sets up and registers the OpenTelemetry SDK for the example app: W3C trace context, an
 * AsyncLocalStorage context manager, service.name from `OTEL_SERVICE_NAME` (default
 * `typeorm-cells-example`), metrics through the Prometheus exporter, and traces over OTLP/HTTP (JSON)
 * when `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` (used as is) or `OTEL_EXPORTER_OTLP_ENDPOINT` (plus
 * `/v1/traces`) is set. The exporter reads its other settings (`OTEL_EXPORTER_OTLP_HEADERS`, timeout,
 * compression) from `process.env` itself.
 *
 * Call it once, before `new Cells()`: a meter taken from the global provider before it is registered
 * stays a no-op. Call `shutdown()` on exit.
 */
export function startTelemetry(options: AppTelemetryOptions = {}): AppTelemetry {
  const env = options.env ?? process.env;
  const resource = resourceFromAttributes({
    'service.name': env['OTEL_SERVICE_NAME'] || EXAMPLE_SCOPE,
  });
  const otlpTracesUrl = otlpTracesUrlOf(env);
  const spanProcessors: SpanProcessor[] = (options.spanExporters ?? []).map(
    (exporter) => new SimpleSpanProcessor(exporter),
  );
  if (otlpTracesUrl)
    spanProcessors.push(new BatchSpanProcessor(new OTLPTraceExporter({ url: otlpTracesUrl })));
  const tracerProvider = new BasicTracerProvider({ resource, spanProcessors });
  const prometheus = new PrometheusExporter({ preventServerStart: true });
  const meterProvider = new MeterProvider({
    resource,
    readers: [prometheus, ...(options.metricReaders ?? [])],
  });

  const contextManager = new AsyncLocalStorageContextManager().enable();
  context.setGlobalContextManager(contextManager);
  propagation.setGlobalPropagator(new W3CTraceContextPropagator());
  trace.setGlobalTracerProvider(tracerProvider);
  metrics.setGlobalMeterProvider(meterProvider);

  return {
    tracerProvider,
    meterProvider,
    tracer: tracerProvider.getTracer(EXAMPLE_SCOPE),
    meter: meterProvider.getMeter(EXAMPLE_SCOPE),
    prometheus,
    otlpTracesUrl,
    async shutdown() {
      try {
        await Promise.all([tracerProvider.shutdown(), meterProvider.shutdown()]);
      } finally {
        trace.disable();
        metrics.disable();
        propagation.disable();
        context.disable();
      }
    },
  };
}

/** The OTLP/HTTP traces URL that the OpenTelemetry environment variables name, as the SDK resolves it. */
export function otlpTracesUrlOf(
  env: Readonly<Record<string, string | undefined>>,
): string | undefined {
  const traces = env['OTEL_EXPORTER_OTLP_TRACES_ENDPOINT']?.trim();
  if (traces) return traces;
  const base = env['OTEL_EXPORTER_OTLP_ENDPOINT']?.trim();
  if (!base) return undefined;
  return `${base.replace(/\/+$/, '')}/v1/traces`;
}
