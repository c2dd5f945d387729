/**
 * The public types of the `telemetry` option. Structural, and in a file of their own, so that the
 * published declarations never import `@opentelemetry/api`: an application without it installed
 * type-checks against typeorm-cells unchanged. A TracerProvider or MeterProvider of
 * `@opentelemetry/api` (an SDK's) fits them.
 */

/** What typeorm-cells uses of an OpenTelemetry TracerProvider. */
export interface TelemetryTracerProvider {
  getTracer(name: string, version?: string, options?: { schemaUrl?: string }): unknown;
}

/** What typeorm-cells uses of an OpenTelemetry MeterProvider. */
export interface TelemetryMeterProvider {
  getMeter(name: string, version?: string, options?: { schemaUrl?: string }): unknown;
}

/** The `telemetry` option of Cells: the providers to use instead of the global ones. */
export interface TelemetryOptions {
  /** Default: the global tracer provider of `@opentelemetry/api`. */
  tracerProvider?: TelemetryTracerProvider;
  /** Default: the global meter provider of `@opentelemetry/api`. */
  meterProvider?: TelemetryMeterProvider;
}
