import type * as OtelApi from '@opentelemetry/api';
import type { Attributes, Context, Counter, Histogram, Meter, Span } from '@opentelemetry/api';
import { currentContext, kLostTrace } from './context';
import { RouteTelemetry, errorType, failedOpenRoute, recordError } from './telemetry-attributes';
import { guardCounter, guardHistogram, guardTracer, reportSdkFailure, type GuardedTracer } from './telemetry-guard';
import type { TelemetryOptions } from './telemetry-options';

/**
 * OpenTelemetry for typeorm-cells, through `@opentelemetry/api` only: the tracer and meter of a
 * Cells (or of the CLI), acquired once, and the spans and instruments every module records with.
 * `@opentelemetry/api` is an optional peer dependency, loaded lazily; without it, or with
 * `telemetry: false`, or when no SDK is registered, `on` is false and the instrumented modules take
 * their plain path: no span, no attribute object, no clock read.
 */

/** Instrumentation scope name of every tracer and meter. */
export const SCOPE_NAME = 'typeorm-cells';

let api: typeof OtelApi | null | undefined;

/** `@opentelemetry/api`, loaded once per process; undefined when it is not installed. @internal */
export function otelApi(): typeof OtelApi | undefined {
  if (api === undefined) {
    try {
      // A plain require, not createRequire: a test runner's module registry (Jest's) then gives
      // the library the same API instance, and so the same context manager, as the application.
      // eslint-disable-next-line @typescript-eslint/no-require-imports
      api = require('@opentelemetry/api') as typeof OtelApi;
    } catch {
      api = null;
    }
  }
  return api ?? undefined;
}

/**
 * The OpenTelemetry context the library's spans are children of: the active one, except where it
 * is the context of another request that a NestJS guard found active (a middleware resumed the
 * request from a shared client's callback; see `CellsContextGuard`): then the request's own.
 * @internal
 */
export function parentContext(otel: typeof OtelApi): Context {
  const active = otel.context.active();
  const lost = currentContext()?.[kLostTrace];
  return lost !== undefined && lost.foreign === active ? (lost.own as Context) : active;
}

let version: string | undefined;
function scopeVersion(): string | undefined {
  if (version === undefined) {
    // Compiled to dist/lib/, run from source in lib/.
    for (const path of ['../../package.json', '../package.json']) {
      try {
        // eslint-disable-next-line @typescript-eslint/no-require-imports
        const pkg = require(path) as { name?: string; version?: string };
        if (pkg.name === 'typeorm-cells') {
          version = pkg.version ?? '';
          break;
        }
      } catch {
        // Not there: the other layout.
      }
    }
  }
  return version || undefined;
}

type GuardedCounter = Pick<Counter, 'add'>;
type GuardedHistogram = Pick<Histogram, 'record'>;

/**
 * The instruments of a meter, created once (names and units as in README "Observability"), each
 * guarded: one that throws never reaches the call it measures.
 */
interface Instruments {
  opens: GuardedCounter;
  openDuration: GuardedHistogram;
  evictions: GuardedCounter;
  waitTime: GuardedHistogram;
  busyErrors: GuardedCounter;
  scatterDuration: GuardedHistogram;
  scatterOutcomes: GuardedCounter;
  operationDuration: GuardedHistogram;
  meter: Meter;
}

function createInstruments(meter: Meter, otel: typeof OtelApi): Instruments {
  const seconds = (name: string, description: string) => guardHistogram(meter.createHistogram(name, { unit: 's', description }), otel);
  const counter = (name: string, options: { unit: string; description: string }) => guardCounter(meter.createCounter(name, options), otel);
  return {
    meter,
    opens: counter('typeorm_cells.data_source.opens', { unit: '{open}', description: 'Cell DataSource opens, by outcome.' }),
    openDuration: seconds('typeorm_cells.data_source.open.duration', 'Time to open (initialize) a cell DataSource.'),
    evictions: counter('typeorm_cells.data_source.evictions', { unit: '{eviction}', description: 'Cell DataSources evicted, by reason.' }),
    waitTime: seconds('db.client.connection.wait_time', 'Time to obtain a connection from a pool.'),
    busyErrors: counter('typeorm_cells.pool.busy_errors', { unit: '{error}', description: 'Waits for a pooled connection that timed out (CellBusyError, ServerBusyError).' }),
    scatterDuration: seconds('typeorm_cells.scatter_gather.duration', 'Duration of a scatter-gather.'),
    scatterOutcomes: counter('typeorm_cells.scatter_gather.cell.outcomes', { unit: '{cell}', description: 'Per-cell outcomes of scatter-gathers.' }),
    operationDuration: seconds('db.client.operation.duration', 'Duration of a routed repository call or query-builder execution.'),
  };
}

/** What the observable instruments read, each time the SDK collects. @internal */
export interface ObservedState {
  dataSources(): { open: number; opening: number; draining: number };
  mappingCache(): Record<'cell' | 'instance' | 'host', { hits: number; misses: number; loads: number }>;
  listening(): boolean;
}

/** Reports a pool's waits for a connection (`db.client.connection.wait_time`) and busy errors. @internal */
export interface PoolObserver {
  /** False while metrics are off: the pool then reads no clock for them. */
  readonly active: boolean;
  waited(seconds: number): void;
  busy(): void;
}

/** What a routed operation reports once its route is known. @internal */
export type OnRoute = (telemetry: RouteTelemetry | undefined) => void;

const OUTCOME_OK: Attributes = Object.freeze({ 'typeorm_cells.outcome': 'ok' });
const OUTCOME_ERROR: Attributes = Object.freeze({ 'typeorm_cells.outcome': 'error' });

/**
 * The tracer and instruments of one Cells (or one CLI run). Made off; `start()` acquires them
 * from the providers and checks once whether anything records: the global providers of an API
 * with no SDK registered leave it off. @internal
 */
export class Telemetry {
  /** True when spans or metrics are recorded: the one check of the hot path. */
  on = false;
  api: typeof OtelApi | undefined;
  /** The tracer, guarded: neither it nor its spans ever throw. */
  tracer: GuardedTracer | undefined;
  instruments: Instruments | undefined;
  private readonly evictionAttributes = new Map<string, Attributes>();
  private unobserve: (() => void) | undefined;
  private started = false;

  constructor(private readonly option: TelemetryOptions | false | undefined) {}

  /**
   * Acquires the tracer and meter. Call after the SDK is registered (before `cells.initialize()`);
   * a tracer that creates only invalid spans and a no-op meter count as absent.
   */
  start(observed?: ObservedState): this {
    // Once: an initialize() that failed and is called again must not observe twice.
    if (this.started || this.option === false) return this;
    this.started = true;
    const otel = otelApi();
    if (otel === undefined) return this;
    this.api = otel;
    // A provider that throws while handing out its tracer or meter leaves that half off.
    try {
      const tracerProvider = (this.option?.tracerProvider ?? otel.trace.getTracerProvider()) as OtelApi.TracerProvider;
      const tracer = guardTracer(tracerProvider.getTracer(SCOPE_NAME, scopeVersion()), otel);
      // A probe span (never ended, so never exported): a no-op tracer returns an invalid context,
      // an SDK a valid one, sampled or not; a processor that throws in onStart an invalid one.
      const probe = tracer.startSpan('typeorm_cells.probe', { root: true }, otel.ROOT_CONTEXT);
      if (otel.isSpanContextValid(probe.spanContext())) this.tracer = tracer;
    } catch (error) {
      reportSdkFailure(otel, error);
    }
    try {
      const meterProvider = (this.option?.meterProvider ?? otel.metrics.getMeterProvider()) as OtelApi.MeterProvider;
      const meter = meterProvider.getMeter(SCOPE_NAME, scopeVersion());
      if (meter.constructor !== otel.createNoopMeter().constructor) {
        this.instruments = createInstruments(meter, otel);
        if (observed !== undefined) this.observe(meter, observed);
      }
    } catch (error) {
      reportSdkFailure(otel, error);
    }
    this.on = this.tracer !== undefined || this.instruments !== undefined;
    return this;
  }

  /** Stops the observable instruments' callbacks (on destroy). */
  stop(): void {
    this.unobserve?.();
    this.unobserve = undefined;
  }

  private observe(meter: Meter, state: ObservedState): void {
    const count = meter.createObservableUpDownCounter('typeorm_cells.data_source.count', { unit: '{data_source}', description: 'Cell DataSources by state.' });
    const cache = (what: string) =>
      meter.createObservableCounter(`typeorm_cells.mapping_cache.${what}`, { unit: `{${what === 'hits' ? 'hit' : what === 'misses' ? 'miss' : 'load'}}`, description: `Mapping-cache ${what}, by mapping kind.` });
    const hits = cache('hits');
    const misses = cache('misses');
    const loads = cache('loads');
    const up = meter.createObservableGauge('typeorm_cells.mapping_listener.up', { description: '1 while the mapping listener (or change-log poller) is up, else 0.' });
    const callback = (result: OtelApi.BatchObservableResult): void => {
      // The SDK catches a callback that throws, but a meter of another make may not.
      try {
        observeState(result, state, { count, hits, misses, loads, up });
      } catch (error) {
        reportSdkFailure(this.api, error);
      }
    };
    const observables = [count, hits, misses, loads, up];
    meter.addBatchObservableCallback(callback, observables);
    this.unobserve = () => meter.removeBatchObservableCallback(callback, observables);
  }

  /**
   * Runs a routed call `run` in a CLIENT span `<operation> <collection>` (the active span while it
   * runs, so a cell open and driver spans are its children) and records its duration. `run` calls
   * its argument once it knows the route. Only called when `on`.
   */
  operation<R>(operation: string, collection: string | undefined, run: (onRoute: OnRoute) => Promise<R>): Promise<R> {
    const otel = this.api!;
    const started = performance.now();
    let route: RouteTelemetry | undefined;
    let span: Span | undefined;
    let ctx: Context | undefined;
    if (this.tracer !== undefined) {
      const attributes: Attributes = { 'db.operation.name': operation };
      if (collection !== undefined) attributes['db.collection.name'] = collection;
      const parent = parentContext(otel);
      span = this.tracer.startSpan(collection === undefined ? operation : `${operation} ${collection}`, { kind: otel.SpanKind.CLIENT, attributes }, parent);
      ctx = otel.trace.setSpan(parent, span);
    }
    const onRoute: OnRoute = (telemetry) => {
      route = telemetry;
      if (span !== undefined && telemetry !== undefined) span.setAttributes(telemetry.span);
    };
    let result: Promise<R>;
    try {
      result = ctx === undefined ? run(onRoute) : otel.context.with(ctx, run, undefined, onRoute);
    } catch (error) {
      result = Promise.reject(error);
    }
    const histogram = this.instruments?.operationDuration;
    return result.then(
      (value) => {
        span?.end();
        histogram?.record((performance.now() - started) / 1000, route?.forOperation(operation) ?? { 'db.operation.name': operation });
        return value;
      },
      (error: unknown) => {
        // A call whose cell failed to open never learnt its route: the open's error names it.
        if (route === undefined) onRoute(failedOpenRoute(error));
        if (span !== undefined) recordError(span, error);
        span?.end();
        if (histogram !== undefined) {
          const attributes = { ...(route?.forOperation(operation) ?? { 'db.operation.name': operation }), 'error.type': errorType(error) };
          histogram.record((performance.now() - started) / 1000, attributes);
        }
        throw error;
      },
    );
  }

  /**
   * Runs `open` (the open of cell `key`'s DataSource) in a `typeorm_cells.open` span, a child of
   * the call that had to open it, and records the open's outcome and duration.
   */
  async open<R>(key: string, open: () => Promise<R>): Promise<R> {
    if (!this.on) return open();
    const otel = this.api!;
    const started = performance.now();
    const parent = parentContext(otel);
    const span = this.tracer?.startSpan('typeorm_cells.open', { kind: otel.SpanKind.INTERNAL, attributes: { 'typeorm_cells.cell.uuid': key } }, parent);
    const run = () => open();
    try {
      const value = span === undefined ? await run() : await otel.context.with(otel.trace.setSpan(parent, span), run);
      this.instruments?.opens.add(1, OUTCOME_OK);
      this.instruments?.openDuration.record((performance.now() - started) / 1000, OUTCOME_OK);
      return value;
    } catch (error) {
      if (span !== undefined) recordError(span, error);
      this.instruments?.opens.add(1, OUTCOME_ERROR);
      this.instruments?.openDuration.record((performance.now() - started) / 1000, OUTCOME_ERROR);
      throw error;
    } finally {
      span?.end();
    }
  }

  /** Counts an eviction of a cell DataSource (`reason`: lru-cache's, or `idle`, `delete`...). */
  evicted(reason: string): void {
    const evictions = this.instruments?.evictions;
    if (evictions === undefined) return;
    let attributes = this.evictionAttributes.get(reason);
    if (attributes === undefined) {
      attributes = Object.freeze({ 'typeorm_cells.eviction.reason': reason });
      this.evictionAttributes.set(reason, attributes);
    }
    evictions.add(1, attributes);
  }

  /**
   * The observer of the pool named `name` (a cell uuid, `api` or `main`). Made with the DataSource,
   * possibly before `start()`: it reads the instruments at each report.
   */
  poolObserver(name: string): PoolObserver {
    const attributes = Object.freeze({ 'db.client.connection.pool.name': name });
    // eslint-disable-next-line @typescript-eslint/no-this-alias -- read by the getter below
    const telemetry = this;
    return {
      get active() {
        return telemetry.instruments !== undefined;
      },
      waited: (seconds) => this.instruments?.waitTime.record(seconds, attributes),
      busy: () => this.instruments?.busyErrors.add(1, attributes),
    };
  }

  /**
   * Runs `fn` in an INTERNAL span `name`, the active span meanwhile; `fn` may add attributes to
   * it. Without a tracer, runs `fn` with no span.
   */
  async span<R>(name: string, attributes: Attributes, fn: (span: Span | undefined) => Promise<R>): Promise<R> {
    const otel = this.api;
    if (this.tracer === undefined || otel === undefined) return fn(undefined);
    const parent = parentContext(otel);
    const span = this.tracer.startSpan(name, { kind: otel.SpanKind.INTERNAL, attributes }, parent);
    try {
      return await otel.context.with(otel.trace.setSpan(parent, span), fn, undefined, span);
    } catch (error) {
      recordError(span, error);
      throw error;
    } finally {
      span.end();
    }
  }
}

/** Observes `state` into the observable instruments of `Telemetry.observe`. */
function observeState(
  result: OtelApi.BatchObservableResult,
  state: ObservedState,
  { count, hits, misses, loads, up }: Record<'count' | 'hits' | 'misses' | 'loads' | 'up', OtelApi.Observable>,
): void {
  const sources = state.dataSources();
  for (const key of ['open', 'opening', 'draining'] as const) {
    result.observe(count, sources[key], { 'typeorm_cells.data_source.state': key });
  }
  const kinds = state.mappingCache();
  for (const kind of ['cell', 'instance', 'host'] as const) {
    const attributes = { 'typeorm_cells.mapping.kind': kind };
    result.observe(hits, kinds[kind].hits, attributes);
    result.observe(misses, kinds[kind].misses, attributes);
    result.observe(loads, kinds[kind].loads, attributes);
  }
  result.observe(up, state.listening() ? 1 : 0);
}

/** A Telemetry that never records. @internal */
export const TELEMETRY_OFF = new Telemetry(false);
