import { AsyncLocalStorage } from 'node:async_hooks';
import { randomUUID } from 'node:crypto';
import { inspect } from 'node:util';
import { MAX_TIMER_MS, UUID_PATTERN, booleanArg, describeType, functionArg, integerArg, nameArg, optionalNameArg } from './arguments';
import { CellSwitchInTransactionError, InvalidArgumentError, NoContextError } from './errors';
import type { ActiveTransaction } from './route';

/*
 * The request context: `RequestContext`, its AsyncLocalStorage store, and the scoped helpers that
 * run a function in a modified copy (`targetCell`, `readFromReplica`, `readFromPrimary`,
 * `bindContext`). Longer than ~300 lines because each field of the public class carries its
 * validation and TSDoc; what routing does with the context lives in route.ts and cells.ts.
 */

/** How routed reads treat soft-deleted rows (`@DeleteDateColumn`): hide, include, or only them. */
export type ReadDeleted = 'no' | 'yes' | 'only';

const READ_DELETED_MODES: ReadonlySet<string> = new Set(['no', 'yes', 'only']);

/**
 * Where routed reads outside a transaction go: the cell's primary (`'primary'`, the default), or one
 * of the reader connections its CellMapping lists (`'replica'`; the primary when it lists none or
 * none answers). Writes, raw `query()` and everything inside a transaction always use the primary.
 */
export type ReadFrom = 'primary' | 'replica';

/** Anything that names a cell for targeting: a `CellMapping` (or any `{ uuid, name? }`) or a uuid. */
export type CellRef = string | { readonly uuid: string; readonly name?: string };

/** Fields accepted by `new RequestContext(init)`; every one is optional. */
export interface RequestContextInit {
  /** Defaults to a random uuid. */
  requestId?: string;
  userId?: string | null;
  projectId?: string | null;
  /** Defaults to `false`. */
  isAdmin?: boolean;
  /** Defaults to `'no'`. */
  readDeleted?: ReadDeleted;
  /** The cell to target from the start; defaults to none (the default main database). */
  cell?: CellRef | null;
  /** Deadline of each statement of this context's calls, in ms; defaults to `null` (Cells' `queryTimeoutMs`). */
  queryTimeoutMs?: number | null;
  /** Where routed reads go; defaults to `'primary'`. See `RequestContext.readFrom`. */
  readFrom?: ReadFrom;
}

/** Marks the init of a copy made by `clone()`, whose fields need no checking. */
const kCopyOf = Symbol('typeorm-cells.copyOf');

/** Slots for the transaction open on the main (cell) database and on the API database. @internal */
export const kMainTransaction = Symbol('typeorm-cells.mainTransaction');
/** @internal */
export const kApiTransaction = Symbol('typeorm-cells.apiTransaction');
/** Aborts the waits of a context's calls (a scatter-gather's deadline for its cell). @internal */
export const kCallSignal = Symbol('typeorm-cells.callSignal');
/**
 * The OpenTelemetry context a NestJS guard found active although it belonged to another request
 * (`foreign`), and this request's own (`own`): the library parents its spans to `own` wherever
 * `foreign` is still the active one (a guard cannot enter an OpenTelemetry context). Typed loosely
 * so that the declarations never import `@opentelemetry/api`. @internal
 */
export const kLostTrace = Symbol('typeorm-cells.lostTrace');

/** See `kLostTrace`. @internal */
export interface LostTrace {
  readonly foreign: object;
  readonly own: object;
}

/**
 * The state of one request: who makes it and which cell database it talks to. It lives in an
 * AsyncLocalStorage store (see `runWithContext`), so data-access code reads it without parameters.
 * Its routing key is `cellUuid` (Nova's `dbConnection`), never a URL: `toJSON()`, `toString()`
 * and `util.inspect` show nothing secret.
 */
export class RequestContext {
  requestId: string;
  userId: string | null;
  projectId: string | null;
  isAdmin: boolean;
  #readDeleted: ReadDeleted = 'no';
  #cellUuid: string | null = null;
  #cellName: string | null = null;
  #queryTimeoutMs: number | null = null;
  #readFrom: ReadFrom = 'primary';
  /** @internal */
  [kMainTransaction]: ActiveTransaction | undefined;
  /** @internal */
  [kApiTransaction]: ActiveTransaction | undefined;
  /** @internal */
  [kCallSignal]: AbortSignal | undefined;
  /** @internal */
  [kLostTrace]: LostTrace | undefined;

  /**
   * @throws InvalidArgumentError for an `init` that is not an object, an id that is not a string of
   * 1-255 characters (or has a NUL byte or a lone surrogate), an `isAdmin` that is not a boolean, an
   * unknown `readDeleted` mode, a `readFrom` other than `'primary'` or `'replica'`, or a malformed
   * cell uuid.
   */
  constructor(init: RequestContextInit = {}) {
    if (init === null || typeof init !== 'object') {
      throw new InvalidArgumentError(`new RequestContext() takes an object of fields or nothing, got ${describeType(init)}.`);
    }
    // clone() copies a context whose fields were checked already: targetCell clones on every call.
    const source = (init as { [kCopyOf]?: RequestContext })[kCopyOf];
    if (source !== undefined) {
      this.requestId = source.requestId;
      this.userId = source.userId;
      this.projectId = source.projectId;
      this.isAdmin = source.isAdmin;
      return;
    }
    this.requestId = init.requestId === undefined ? `req-${randomUUID()}` : nameArg(init.requestId, 'requestId');
    this.userId = optionalNameArg(init.userId, 'userId') ?? null;
    this.projectId = optionalNameArg(init.projectId, 'projectId') ?? null;
    this.isAdmin = booleanArg(init.isAdmin, 'isAdmin', false);
    if (init.readDeleted !== undefined) this.readDeleted = init.readDeleted;
    if (init.cell != null) this.#setCell(init.cell);
    if (init.queryTimeoutMs != null) this.queryTimeoutMs = init.queryTimeoutMs;
    if (init.readFrom !== undefined) this.readFrom = init.readFrom;
  }

  /**
   * Where this context's routed reads outside a transaction go: `'primary'` (default; nothing
   * changes for cells without readers) or `'replica'`, one of the reader connections of the cell's
   * CellMapping (`readConnections`), round-robin. A replica may lag behind its primary: a read
   * right after a write may not see it; read such rows with `'primary'` (`readFromPrimary(fn)`).
   * A reader that cannot be reached is skipped for a backoff (`replicaBackoffMs`) and the read
   * goes to the primary, with a `replica-unavailable` event to the `logger`, never an error.
   * Writes, raw `query()`/`sql` and every call inside a transaction always use the primary.
   */
  get readFrom(): ReadFrom {
    return this.#readFrom;
  }

  /** @throws InvalidArgumentError when `mode` is not `'primary'` or `'replica'`. */
  set readFrom(mode: ReadFrom) {
    if (mode !== 'primary' && mode !== 'replica') {
      throw new InvalidArgumentError(`readFrom must be 'primary' or 'replica', got ${describe(mode)}.`);
    }
    this.#readFrom = mode;
  }

  /**
   * Deadline of each statement of this context's routed calls, in ms (0: none), overriding the
   * `queryTimeoutMs` option of Cells; `null` (default) uses that option. A statement that passes
   * it fails with QueryTimeoutError and its connection is closed.
   */
  get queryTimeoutMs(): number | null {
    return this.#queryTimeoutMs;
  }

  /** @throws InvalidArgumentError unless an integer from 0 to 2147483647, or null. */
  set queryTimeoutMs(ms: number | null) {
    if (ms !== null) integerArg(ms, 'queryTimeoutMs', 0, MAX_TIMER_MS);
    this.#queryTimeoutMs = ms;
  }

  /** `'no'` (default) hides soft-deleted rows from routed reads, `'yes'` includes them, `'only'` returns only them. */
  get readDeleted(): ReadDeleted {
    return this.#readDeleted;
  }

  /** @throws InvalidArgumentError when `mode` is not `'no'`, `'yes'` or `'only'`. */
  set readDeleted(mode: ReadDeleted) {
    if (typeof mode !== 'string' || !READ_DELETED_MODES.has(mode)) {
      throw new InvalidArgumentError(
        `readDeleted must be 'no', 'yes' or 'only', got ${describe(mode)}.`,
      );
    }
    this.#readDeleted = mode;
  }

  /**
   * The uuid of the target cell, or `null` when untargeted (the default main database): the
   * routing key of the context's calls.
   */
  get cellUuid(): string | null {
    return this.#cellUuid;
  }

  /**
   * Nova's name of the routing key: the same as `cellUuid`, a cell uuid and never a URL (unlike
   * `CellMapping.databaseConnection`). Code of typeorm-cells reads `cellUuid`.
   */
  get dbConnection(): string | null {
    return this.#cellUuid;
  }

  /** The name of the target cell when it was targeted by a `CellMapping`, else `null`. */
  get cellName(): string | null {
    return this.#cellName;
  }

  /** Returns an independent copy; a transaction open in this context stays joined in the copy. */
  clone(): RequestContext {
    const copy = new RequestContext({ [kCopyOf]: this } as RequestContextInit);
    copy.#readDeleted = this.#readDeleted;
    copy.#cellUuid = this.#cellUuid;
    copy.#cellName = this.#cellName;
    copy.#queryTimeoutMs = this.#queryTimeoutMs;
    copy.#readFrom = this.#readFrom;
    copy[kMainTransaction] = this[kMainTransaction];
    copy[kApiTransaction] = this[kApiTransaction];
    copy[kCallSignal] = this[kCallSignal];
    copy[kLostTrace] = this[kLostTrace];
    return copy;
  }

  /** Points this context at `cell`, or at the default main database for `null`. @internal */
  retarget(cell: CellRef | null): void {
    let tx = this[kMainTransaction];
    const uuid = cell === null ? null : cellUuidOf(cell);
    if (tx !== undefined && !tx.running) {
      // Work that outlived its transaction runs as if none had been opened.
      this[kMainTransaction] = tx = undefined;
    }
    if (tx !== undefined && uuid !== (this.#cellUuid ?? null)) {
      throw new CellSwitchInTransactionError(tx.label, uuid === null ? 'the default main database' : `cell ${uuid}`);
    }
    if (cell === null) {
      this.#cellUuid = null;
      this.#cellName = null;
    } else {
      this.#setCell(cell);
    }
  }

  #setCell(cell: CellRef): void {
    this.#cellUuid = cellUuidOf(cell);
    this.#cellName = typeof cell === 'string' ? null : (cell.name ?? null);
  }

  toJSON(): Record<string, unknown> {
    return {
      requestId: this.requestId,
      userId: this.userId,
      projectId: this.projectId,
      isAdmin: this.isAdmin,
      readDeleted: this.#readDeleted,
      readFrom: this.#readFrom,
      dbConnection: this.#cellUuid,
      cellUuid: this.#cellUuid,
      cellName: this.#cellName,
    };
  }

  toString(): string {
    const target = this.#cellUuid === null ? 'main' : `cell ${this.#cellName ?? this.#cellUuid}`;
    return `RequestContext(${this.requestId}, ${target})`;
  }

  [inspect.custom](): string {
    return `RequestContext ${inspect(this.toJSON())}`;
  }
}

/**
 * Returns the lowercase uuid of a cell reference.
 * @throws InvalidArgumentError when it is not a CellMapping or a well-formed uuid.
 */
export function cellUuidOf(cell: CellRef): string {
  const uuid = typeof cell === 'string' ? cell : (cell as { uuid?: unknown } | null)?.uuid;
  if (typeof uuid !== 'string' || !UUID_PATTERN.test(uuid)) {
    throw new InvalidArgumentError(
      `A cell must be a CellMapping or a cell uuid, got ${describe(typeof cell === 'string' ? cell : uuid)}.`,
    );
  }
  return uuid.toLowerCase();
}

function describe(value: unknown): string {
  if (typeof value === 'string') {
    const shown = value.length > 60 ? `${value.slice(0, 60)}...` : value;
    return `'${shown}'`;
  }
  if (typeof value === 'number') return String(value);
  return value === null ? 'null' : typeof value;
}

const storage = new AsyncLocalStorage<RequestContext>();

/** The active context or `undefined`; the routing hot path reads it once per call. @internal */
export function currentContext(): RequestContext | undefined {
  return storage.getStore();
}

/**
 * Runs `fn` with `ctx` as the active request context and returns its result.
 * @throws InvalidArgumentError when `ctx` is not a RequestContext.
 */
export function runWithContext<T>(ctx: RequestContext, fn: () => T): T {
  if (!(ctx instanceof RequestContext)) {
    throw new InvalidArgumentError('runWithContext needs a RequestContext instance.');
  }
  return storage.run(ctx, fn);
}

/**
 * Returns the active request context.
 * @throws NoContextError outside any context.
 */
export function getContext(): RequestContext {
  const ctx = storage.getStore();
  if (ctx === undefined) throw new NoContextError('getContext()');
  return ctx;
}

/** Returns the active request context, or `undefined` outside any context. */
export function tryGetContext(): RequestContext | undefined {
  return storage.getStore();
}

/**
 * Runs `fn` with a copy of the current context pointed at `cell` (Nova's `target_cell`) and returns
 * its result. The outer context is untouched, also when `fn` throws; calls nest. `null` targets the
 * default main database. Outside any context, a fresh context is created for `fn`.
 * @throws InvalidArgumentError for a malformed cell; CellSwitchInTransactionError inside a
 * transaction on another database.
 */
export function targetCell<T>(cell: CellRef | null, fn: () => T): T {
  functionArg(fn, 'targetCell(cell, fn): fn');
  return runInCopy((next) => next.retarget(cell), fn);
}

/** Runs `fn` in a copy of the current context (a fresh one outside any) changed by `change`. */
function runInCopy<T>(change: (next: RequestContext) => void, fn: () => T): T {
  const current = storage.getStore();
  const next = current === undefined ? new RequestContext() : current.clone();
  change(next);
  return storage.run(next, fn);
}

/**
 * Runs `fn` with a copy of the current context whose routed reads go to the cell's replicas
 * (`readFrom: 'replica'`) and returns its result; the outer context is untouched, also when `fn`
 * throws. Outside any context, a fresh context is created for `fn`. Writes and transactions inside
 * `fn` still use the primary; see `RequestContext.readFrom` for lag and fallback.
 * @throws InvalidArgumentError when `fn` is not a function.
 */
export function readFromReplica<T>(fn: () => T): T {
  return withReadFrom('replica', fn, 'readFromReplica(fn): fn');
}

/**
 * Runs `fn` with a copy of the current context whose routed reads go to the cell's primary
 * (`readFrom: 'primary'`), as `readFromReplica` does for replicas: for a read that must see a write
 * just made, inside code that otherwise reads from replicas.
 * @throws InvalidArgumentError when `fn` is not a function.
 */
export function readFromPrimary<T>(fn: () => T): T {
  return withReadFrom('primary', fn, 'readFromPrimary(fn): fn');
}

function withReadFrom<T>(mode: ReadFrom, fn: () => T, what: string): T {
  functionArg(fn, what);
  return runInCopy((next) => (next.readFrom = mode), fn);
}

/**
 * Points `ctx` at `cell` for good (Nova's `set_target_cell`); `null` untargets it.
 * @throws InvalidArgumentError for a malformed cell; CellSwitchInTransactionError when `ctx` is
 * inside a transaction on another database.
 */
export function setTargetCell(ctx: RequestContext, cell: CellRef | null): void {
  if (!(ctx instanceof RequestContext)) {
    throw new InvalidArgumentError('setTargetCell needs a RequestContext instance.');
  }
  ctx.retarget(cell);
}

/**
 * Returns a function that runs `fn` in the context active now, wherever it is later called from: an
 * event listener, a stream or pool callback. Bound outside any context, it runs outside any context,
 * so it never picks up the context of whoever happens to call it.
 */
export function bindContext<A extends unknown[], R>(fn: (...args: A) => R): (...args: A) => R {
  const ctx = storage.getStore();
  if (ctx === undefined) return (...args: A) => storage.exit(() => fn(...args));
  return (...args: A) => storage.run(ctx, () => fn(...args));
}

/** Runs `fn` in `ctx` without the checks of `runWithContext`. @internal */
export function runInternal<T>(ctx: RequestContext, fn: () => T): T {
  return storage.run(ctx, fn);
}

/**
 * Makes `ctx` the context of the rest of the current synchronous execution and of everything it
 * starts (AsyncLocalStorage `enterWith`): for the NestJS guard, which cannot wrap what follows it.
 * @internal
 */
export function enterInternal(ctx: RequestContext): void {
  storage.enterWith(ctx);
}
