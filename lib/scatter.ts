import { inspect } from 'node:util';
import { CellMapping } from '../entities/CellMapping';
import { MAX_TIMER_MS } from './arguments';
import { maskSecrets } from './connection-url';
import { cellUuidOf, currentContext, kCallSignal, targetCell, type CellRef } from './context';
import { DEFAULTS } from './data-source-options';
import { InvalidArgumentError, ScatterGatherAbortedError } from './errors';
import type { AllCellsOptions } from './mappings';
import { TELEMETRY_OFF, type Telemetry } from './telemetry';
import { GatherTelemetry } from './telemetry-scatter';

/** Options of `cells.scatterGather()`. */
export interface ScatterGatherOptions {
  /**
   * Deadline of the whole gather in ms: cells that have not answered by then (running, or still
   * queued behind `concurrency`) get DidNotRespond, and the signal passed to their `fn` aborts with
   * a `TimeoutError`. Default: 30000 (30 s).
   */
  timeoutMs?: number;
  /** Most cells whose `fn` runs at once. Default: all of them. */
  concurrency?: number;
  /** Aborting it ends the gather at once with ScatterGatherAbortedError and aborts every `fn`'s signal. */
  signal?: AbortSignal;
}

/**
 * Options of `cells.scatterGatherAll()`: those of `scatterGather`, and which cells to include:
 * cell0 unless `includeCell0: false`; disabled cells only with `includeDisabled: true` (their
 * routed calls still fail with CellDisabledError, which reports them as RaisedError).
 */
export interface ScatterGatherAllOptions extends ScatterGatherOptions, AllCellsOptions {
  /** Include cells whose state is `'disabled'`. Default: false (unlike `allCells`). */
  includeDisabled?: boolean;
}

/** The work done in each cell: runs inside `targetCell(cell)`, so routed repositories reach that cell. */
export type CellTask<T> = (cell: CellMapping, signal: AbortSignal) => Promise<T>;

/** Marks a cell that did not answer before the gather's deadline (Nova's `did_not_respond_sentinel`). */
export class DidNotRespond {
  constructor(
    /** The cell's uuid. */
    readonly cellUuid: string,
    /** The cell's name, or null when it was given by uuid and not resolved in time. */
    readonly cellName: string | null,
  ) {}
}

/** Marks a cell whose work threw (Nova's `raised_exception_sentinel`); `error` is what it threw. */
export class RaisedError {
  constructor(
    /** The cell's uuid. */
    readonly cellUuid: string,
    /** The cell's name, or null when it was given by uuid and could not be resolved. */
    readonly cellName: string | null,
    /** The error thrown by `fn`, or by resolving or opening the cell (e.g. CellUnreachableError). */
    readonly error: unknown,
  ) {}

  /** The error's message with any password masked, safe to log or return to a client. */
  get message(): string {
    return maskSecrets(
      readSafely(() => (this.error instanceof Error ? this.error.message : String(this.error)), 'unprintable error'),
    );
  }

  toJSON(): Record<string, unknown> {
    // `fn` may throw anything, even an object whose getters or toString throw: never rethrow here.
    const code = readSafely(() => (this.error as { code?: unknown } | null)?.code, undefined);
    const name = readSafely(() => (this.error instanceof Error ? this.error.name : typeof this.error), 'unknown');
    return {
      cellUuid: this.cellUuid,
      cellName: this.cellName,
      error: {
        name: typeof name === 'string' ? name : 'unknown',
        ...(typeof code === 'string' ? { code } : {}),
        message: this.message,
      },
    };
  }

  [inspect.custom](): string {
    return `RaisedError ${inspect(this.toJSON(), { depth: 3 })}`;
  }
}

function readSafely<T>(read: () => T, fallback: T): T {
  try {
    return read();
  } catch {
    return fallback;
  }
}

/** What one cell produced: `fn`'s value, DidNotRespond or RaisedError. */
export type CellResult<T> = T | DidNotRespond | RaisedError;

/** Every requested cell's result, keyed by cell uuid, in the order the cells were given. */
export type ScatterGatherResult<T> = Map<string, CellResult<T>>;

/** True when a scatter-gather result is DidNotRespond or RaisedError rather than a value. */
export function isCellFailure(value: unknown): value is DidNotRespond | RaisedError {
  return value instanceof DidNotRespond || value instanceof RaisedError;
}

/**
 * Runs `fn` in each cell in parallel (up to `concurrency`) and gathers the results by the deadline.
 * @internal Reached as `cells.scatterGather()`.
 */
export function scatterGather<T>(
  refs: readonly CellRef[],
  fn: CellTask<T>,
  options: ScatterGatherOptions,
  resolve: (uuid: string) => Promise<CellMapping>,
  telemetry: Telemetry = TELEMETRY_OFF,
): Promise<ScatterGatherResult<T>> {
  if (!Array.isArray(refs))
    throw new InvalidArgumentError('scatterGather needs an array of cells or cell uuids.');
  if (typeof fn !== 'function')
    throw new InvalidArgumentError('scatterGather needs a function to run in each cell.');
  if (options === null || typeof options !== 'object')
    throw new InvalidArgumentError('scatterGather options must be an object.');
  const timeoutMs = positive(options.timeoutMs, 'timeoutMs', MAX_TIMER_MS) ?? DEFAULTS.scatterGatherTimeoutMs;
  const concurrency = positive(options.concurrency, 'concurrency', Infinity) ?? Infinity;
  const { signal } = options;
  if (signal !== undefined && !isAbortSignal(signal))
    throw new InvalidArgumentError('scatterGather signal must be an AbortSignal.');
  // Validate every ref before running anything; a cell listed twice runs once.
  const cells = new Map<string, CellRef>();
  for (const ref of refs) {
    const uuid = cellUuidOf(ref);
    if (!cells.has(uuid)) cells.set(uuid, ref);
  }
  if (signal?.aborted) return Promise.reject(new ScatterGatherAbortedError(signal.reason));

  return new Promise((done, fail) => {
    const queue = [...cells.entries()];
    const names = new Map<string, string | null>();
    const results = new Map<string, CellResult<T>>();
    const running = new Map<string, AbortController>();
    let settled = false;
    const traced = telemetry.on ? new GatherTelemetry(telemetry, cells.size) : undefined;

    for (const [uuid, ref] of queue)
      names.set(uuid, typeof ref === 'string' ? null : (ref.name ?? null));

    const settle = (): void => {
      settled = true;
      clearTimeout(timer);
      signal?.removeEventListener('abort', onAbort);
    };
    const finish = (): void => {
      settle();
      for (const [uuid, controller] of running) {
        controller.abort(
          new DOMException(`Cell ${uuid} did not respond within ${timeoutMs} ms.`, 'TimeoutError'),
        );
      }
      const gathered: ScatterGatherResult<T> = new Map();
      for (const uuid of cells.keys()) {
        gathered.set(
          uuid,
          results.has(uuid)
            ? (results.get(uuid) as CellResult<T>)
            : new DidNotRespond(uuid, names.get(uuid) ?? null),
        );
      }
      traced?.end(cells.keys(), names);
      done(gathered);
    };
    const onAbort = (): void => {
      settle();
      for (const controller of running.values()) controller.abort(signal?.reason);
      const error = new ScatterGatherAbortedError(signal?.reason);
      traced?.end(cells.keys(), names, error);
      fail(error);
    };

    const runOne = async (uuid: string, ref: CellRef, cellSignal: AbortSignal): Promise<T> => {
      const cell = ref instanceof CellMapping ? ref : await resolve(uuid);
      names.set(uuid, cell.name);
      return targetCell(cell, () => {
        // Waits of this cell's calls for a pooled connection end with the gather's deadline too.
        const ctx = currentContext();
        if (ctx !== undefined) ctx[kCallSignal] = cellSignal;
        return fn(cell, cellSignal);
      });
    };
    const launch = (): void => {
      while (!settled && running.size < concurrency && queue.length > 0) {
        const [uuid, ref] = queue.shift()!;
        const controller = new AbortController();
        running.set(uuid, controller);
        const work = () => runOne(uuid, ref, controller.signal);
        (traced === undefined ? work() : traced.run(uuid, work))
          .then(
            (value): CellResult<T> => value,
            (error: unknown) => new RaisedError(uuid, names.get(uuid) ?? null, error),
          )
          .then((result) => {
            running.delete(uuid);
            if (settled) return;
            if (result instanceof RaisedError) traced?.cellDone(uuid, result.cellName, 'raised', result.error);
            else traced?.cellDone(uuid, names.get(uuid) ?? null, 'ok');
            results.set(uuid, result);
            launch();
          });
      }
      if (!settled && running.size === 0 && queue.length === 0) finish();
    };

    const timer = setTimeout(finish, timeoutMs);
    signal?.addEventListener('abort', onAbort, { once: true });
    launch();
  });
}

/** Duck-typed, not `instanceof`: a signal may come from another realm (a vm sandbox, a test runner). */
function isAbortSignal(value: unknown): value is AbortSignal {
  const signal = value as Partial<AbortSignal> | null;
  return (
    typeof signal === 'object' &&
    signal !== null &&
    typeof signal.aborted === 'boolean' &&
    typeof signal.addEventListener === 'function' &&
    typeof signal.removeEventListener === 'function'
  );
}

function positive(value: number | undefined, name: string, max: number): number | undefined {
  if (value === undefined) return undefined;
  const integer = Number.isInteger(value) || value === Infinity;
  if (typeof value !== 'number' || !integer || value < 1 || value > max) {
    throw new InvalidArgumentError(
      `${name} must be an integer from 1 to ${max}, got ${String(value).slice(0, 20)}.`,
    );
  }
  return value;
}
