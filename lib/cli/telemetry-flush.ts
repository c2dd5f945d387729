import { otelApi } from '../telemetry';

/**
 * Flushing what the CLI recorded before it exits. An SDK started by the config file (NodeSDK with
 * an OTLP exporter, say) batches spans and metrics and exports them on a timer; the CLI ends long
 * before that timer fires, and without a flush its spans and metrics are lost.
 */

/** The longest wait for the flush before the CLI exits, in ms: an exporter that hangs delays no exit longer. */
export const TELEMETRY_FLUSH_TIMEOUT_MS = 2_000;

interface Flushable {
  forceFlush(): Promise<unknown>;
}

function isFlushable(provider: unknown): provider is Flushable {
  return typeof (provider as { forceFlush?: unknown } | null | undefined)?.forceFlush === 'function';
}

/**
 * The providers the CLI's spans and metrics went to: the global tracer provider of
 * `@opentelemetry/api` (the SDK's, behind the API's ProxyTracerProvider), the global meter
 * provider, and the config's `telemetry` providers (`configured`).
 */
function providers(configured: readonly unknown[]): Set<unknown> {
  const found = new Set<unknown>(configured);
  const otel = otelApi();
  if (otel !== undefined) {
    const tracerProvider = otel.trace.getTracerProvider() as { getDelegate?: () => unknown };
    found.add(typeof tracerProvider.getDelegate === 'function' ? tracerProvider.getDelegate() : tracerProvider);
    found.add(otel.metrics.getMeterProvider());
  }
  return found;
}

/**
 * Calls `forceFlush()` on every provider that has one (see `providers`) and waits for them, at
 * most `timeoutMs`. Never throws: a failed export costs spans, not the command's exit status.
 * @param configured - the config's `telemetry.tracerProvider` and `.meterProvider`, if any.
 * @param timeoutMs - default TELEMETRY_FLUSH_TIMEOUT_MS (2 s).
 */
export async function flushTelemetry(configured: readonly unknown[], timeoutMs = TELEMETRY_FLUSH_TIMEOUT_MS): Promise<void> {
  const flushes: Promise<unknown>[] = [];
  for (const provider of providers(configured)) {
    if (!isFlushable(provider)) continue;
    try {
      flushes.push(Promise.resolve(provider.forceFlush()).catch(() => undefined));
    } catch {
      // A provider that throws instead of rejecting flushes nothing; the others still do.
    }
  }
  if (flushes.length === 0) return;
  let timer: NodeJS.Timeout | undefined;
  // Not unref'd: with nothing else left, the process would exit during the wait, before main's
  // status is set.
  const late = new Promise<void>((resolve) => (timer = setTimeout(resolve, timeoutMs)));
  try {
    await Promise.race([Promise.allSettled(flushes), late]);
  } finally {
    clearTimeout(timer);
  }
}
