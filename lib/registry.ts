import { LRUCache } from 'lru-cache';
import type { DataSource, EntityManager } from 'typeorm';
import { closeDataSource } from './data-source-options';
import { CellsNotReadyError } from './errors';
import type { Route } from './route';
import { TELEMETRY_OFF, type Telemetry } from './telemetry';
import type { RouteTelemetry } from './telemetry-attributes';

/** What `RegistryOptions.open` returns: the initialized DataSource and how errors name it. @internal */
export interface OpenedCell {
  dataSource: DataSource;
  label: string;
  /** The cell was read-only when opened: routed writes are refused (see Route.readOnly). */
  readOnly?: boolean;
  /** Its span and metric attributes. */
  telemetry?: RouteTelemetry;
  /** Set when its calls must be refused (a schema behind `requireSchema`); see RegistryEntry.refusal. */
  refusal?: (() => Error) | undefined;
}

/** One open cell DataSource in the registry. @internal */
export class RegistryEntry implements Route {
  readonly manager: EntityManager;
  /** Calls and transactions running on this DataSource now. */
  leases = 0;
  /** `open` while in the LRU; `draining` once evicted, until its last lease ends; then `closed`. */
  state: 'open' | 'draining' | 'closed' = 'open';
  /** The registry's idle tick at the last acquire: a counter, so the hot path reads no clock. */
  lastTick = 0;
  /**
   * While set, acquires fail with the error it makes, before taking a lease (a cell whose schema
   * is behind `requireSchema`); the DataSource stays open, so that a later check can lift it
   * without a reopen. Leases taken before it was set run on.
   */
  refusal: (() => Error) | undefined;

  constructor(
    readonly key: string,
    readonly dataSource: DataSource,
    readonly label: string,
    private readonly onIdleAfterEviction: (entry: RegistryEntry) => void,
    readonly telemetry?: RouteTelemetry,
    readonly readOnly = false,
  ) {
    this.manager = dataSource.manager;
  }

  release(): void {
    if (--this.leases === 0 && this.state === 'draining') this.onIdleAfterEviction(this);
  }
}

/** Counters returned by `cells.stats()`. */
export interface RegistryStats {
  /** Cell DataSources open and in the LRU. */
  open: number;
  /** Evicted DataSources still finishing their running calls. */
  draining: number;
  /** DataSources being initialized now (connecting; each holds a slot of the bound). */
  opening: number;
  /** Cells whose callers wait for a free slot under the `maxOpen` bound. */
  waiting: number;
  /** Routed calls that found their cell's DataSource open. */
  hits: number;
  /** Routed calls that had to open (or wait for) their cell's DataSource. */
  misses: number;
  /** DataSources evicted by the LRU bound, the idle timeout or an explicit eviction. */
  evictions: number;
  /** DataSources opened successfully since start. */
  opened: number;
  /** DataSources closed since start. */
  closed: number;
  /** Opens that failed (they are not cached: the next call retries). */
  failedOpens: number;
}

/** How the registry opens a cell and reports what it does. @internal */
export interface RegistryOptions {
  /** Upper bound on DataSources open at once, counting those opening and draining. */
  maxOpen: number;
  /** Close a DataSource unused for this long; 0 keeps it until the LRU bound evicts it. */
  idleTimeoutMs: number;
  /**
   * Checks that `key` may be opened before it takes a slot; throws a typed error when not (the
   * callers of that open get it; no 'open-failed' event). Default: every key may.
   */
  admit?(key: string): Promise<void>;
  /** Opens (initializes) the DataSource of a cell; throws a typed error when it cannot. */
  open(key: string): Promise<OpenedCell>;
  /** Spans of opens (`typeorm_cells.open`) and the open and eviction metrics. Default: off. */
  telemetry?: Telemetry;
  /** Receives lifecycle events for logging; what it throws (or rejects with) is ignored. */
  onEvent?(event: RegistryEvent): void;
}

/** What the registry reports to the `logger` option. Keys are cell uuids, never URLs. */
export type RegistryEvent =
  | { type: 'open'; key: string; ms: number }
  | { type: 'open-failed'; key: string; error: unknown }
  | { type: 'evict'; key: string; reason: string }
  | { type: 'close'; key: string }
  | { type: 'close-failed'; key: string; error: unknown };

/**
 * LRU-cached cell DataSources keyed by cell uuid: opened lazily with single flight, bounded by
 * `maxOpen`, closed when idle or evicted only after their running calls finish.
 * @internal
 */
export class DataSourceRegistry {
  private readonly lru: LRUCache<string, RegistryEntry>;
  private readonly opening = new Map<string, Promise<RegistryEntry>>();
  private readonly draining = new Set<RegistryEntry>();
  private readonly closing = new Set<Promise<void>>();
  private readonly slotWaiters: Array<() => void> = [];
  private slotsUsed = 0;
  private initializing = 0;
  private sweeper: NodeJS.Timeout | undefined;
  /** Advanced by the sweeper; an entry idle for `idleTicks` ticks is closed. */
  private tick = 0;
  private idleTicks = 0;
  private retireReason: string | undefined;
  private destroyed = false;
  /** Set by `forceClose()`: applied to every DataSource held, and to each one that opens later. */
  private forced: ((dataSource: DataSource) => void) | undefined;
  private readonly counters = { hits: 0, misses: 0, evictions: 0, opened: 0, closed: 0, failedOpens: 0 };

  constructor(private readonly options: RegistryOptions) {
    // Contained once here, so the state machine never depends on a user hook returning.
    if (options.onEvent !== undefined) this.options = { ...options, onEvent: containHook(options.onEvent) };
    this.lru = new LRUCache<string, RegistryEntry>({
      max: options.maxOpen,
      // After the entry has left the cache (not `dispose`, which runs before): an 'evict' event's
      // stats() then counts the evicted DataSource once, as draining, not also as open.
      disposeAfter: (entry, _key, reason) => this.retire(entry, reason),
    });
    // Idle closing uses a tick counter rather than lru-cache's TTL: its TTL reads the clock and
    // arms a timer on the hot path, which measurably slowed every routed call.
    if (options.idleTimeoutMs > 0) {
      const interval = Math.max(5, Math.min(Math.floor(options.idleTimeoutMs / 4), 30_000));
      this.idleTicks = Math.max(1, Math.ceil(options.idleTimeoutMs / interval));
      this.sweeper = setInterval(() => this.sweep(), interval);
      this.sweeper.unref();
    }
  }

  /** Closes entries unused for the idle timeout (within one sweep interval); busy ones stay. */
  private sweep(): void {
    this.tick++;
    const idle: string[] = [];
    for (const [key, entry] of this.lru.entries()) {
      if (entry.leases === 0 && this.tick - entry.lastTick > this.idleTicks) idle.push(key);
    }
    // Deleted after the walk, not during it: lru-cache's iterators do not promise to survive deletes.
    for (const key of idle) {
      // lru-cache reports an explicit delete as 'delete'; say why it left.
      this.retireReason = 'idle';
      this.lru.delete(key);
      this.retireReason = undefined;
    }
  }

  /**
   * Returns the entry of `key` with a lease taken: synchronously when it is open, else after opening
   * it (one open for any number of concurrent callers). The caller must `release()` it.
   * @throws CellsNotReadyError after destroy(); whatever `open` throws (not cached).
   */
  acquire(key: string): RegistryEntry | Promise<RegistryEntry> {
    const entry = this.lru.get(key);
    if (entry !== undefined) {
      // Rejected, not thrown: callers of a routed call meet it as they meet a failed open.
      if (entry.refusal !== undefined) return Promise.reject(entry.refusal());
      this.counters.hits++;
      entry.leases++;
      entry.lastTick = this.tick;
      return entry;
    }
    if (this.destroyed) throw new CellsNotReadyError('destroyed');
    this.counters.misses++;
    return this.acquireSlow(key);
  }

  private async acquireSlow(key: string): Promise<RegistryEntry> {
    for (;;) {
      let flight = this.opening.get(key);
      if (flight === undefined) {
        flight = this.open(key);
        this.opening.set(key, flight);
        const clear = () => this.opening.delete(key);
        flight.then(clear, clear);
      }
      const entry = await flight;
      // Evicted and already closed between the open and this caller's turn: open it again.
      if (entry.state === 'closed') {
        if (this.destroyed) throw new CellsNotReadyError('destroyed');
        const reopened = this.lru.get(key);
        if (reopened === undefined) continue;
        if (reopened.refusal !== undefined) throw reopened.refusal();
        reopened.leases++;
        reopened.lastTick = this.tick;
        return reopened;
      }
      if (entry.refusal !== undefined) throw entry.refusal();
      entry.leases++;
      entry.lastTick = this.tick;
      return entry;
    }
  }

  private async open(key: string): Promise<RegistryEntry> {
    await this.options.admit?.(key);
    await this.takeSlot();
    const started = performance.now();
    let opened: OpenedCell;
    this.initializing++;
    try {
      // An open asked for before destroy() began goes on: its callers were already running.
      opened = await (this.options.telemetry ?? TELEMETRY_OFF).open(key, () => this.options.open(key));
    } catch (error) {
      this.counters.failedOpens++;
      this.giveSlot();
      this.options.onEvent?.({ type: 'open-failed', key, error });
      throw error;
    } finally {
      this.initializing--;
    }
    const entry = new RegistryEntry(key, opened.dataSource, opened.label, (e) => this.close(e), opened.telemetry, opened.readOnly === true);
    entry.refusal = opened.refusal;
    this.counters.opened++;
    // Opened after a forced close began: its callers fail at once too.
    this.forced?.(opened.dataSource);
    if (this.destroyed) {
      // Opened after destroy() began: the calls that waited for this open were running when it
      // began, so they lease it (in the microtasks that follow) and it closes after them.
      entry.state = 'draining';
      this.draining.add(entry);
      setImmediate(() => {
        if (entry.leases === 0) this.close(entry);
      });
    } else {
      this.lru.set(key, entry);
      // Openers waiting for a slot may now evict this entry; let its own callers lease it first.
      if (this.slotWaiters.length > 0) setImmediate(() => this.slotWaiters.shift()?.());
    }
    // Once it is in the LRU, so that stats() read in the event counts it.
    this.options.onEvent?.({ type: 'open', key, ms: performance.now() - started });
    return entry;
  }

  /** Waits until opening one more DataSource keeps the total within `maxOpen`, evicting the LRU tail. */
  private async takeSlot(): Promise<void> {
    while (this.slotsUsed >= this.options.maxOpen) {
      if (this.destroyed) throw new CellsNotReadyError('destroyed');
      // Free a slot for each waiter: evict the least recently used open cell unless enough are draining.
      if (this.draining.size <= this.slotWaiters.length && this.lru.size > 0) this.lru.pop();
      await new Promise<void>((resolve) => this.slotWaiters.push(resolve));
    }
    this.slotsUsed++;
  }

  private giveSlot(): void {
    this.slotsUsed--;
    this.slotWaiters.shift()?.();
  }

  /** Called by the LRU when an entry leaves it: close now if idle, else once its last lease ends. */
  private retire(entry: RegistryEntry, reason: string): void {
    if (entry.state !== 'open') return;
    entry.state = 'draining';
    this.draining.add(entry);
    this.counters.evictions++;
    this.options.telemetry?.evicted(this.retireReason ?? reason);
    this.options.onEvent?.({ type: 'evict', key: entry.key, reason: this.retireReason ?? reason });
    if (entry.leases === 0) this.close(entry);
  }

  private close(entry: RegistryEntry): void {
    if (entry.state !== 'draining') return;
    entry.state = 'closed';
    const done = closeDataSource(entry.dataSource)
      .catch((error: unknown) => this.options.onEvent?.({ type: 'close-failed', key: entry.key, error }))
      .finally(() => {
        this.draining.delete(entry);
        this.closing.delete(done);
        this.counters.closed++;
        this.options.onEvent?.({ type: 'close', key: entry.key });
        this.giveSlot();
      });
    this.closing.add(done);
  }

  /** Evicts `key` (for example after its mapping changed); running calls finish first. */
  evict(key: string): void {
    this.lru.delete(key);
  }

  /** The open entry of `key`, if any, without touching its recency or taking a lease. */
  peek(key: string): RegistryEntry | undefined {
    return this.lru.peek(key);
  }

  /** True when `key` has an open DataSource in the LRU (does not touch recency). */
  has(key: string): boolean {
    return this.lru.has(key);
  }

  /** Every DataSource the registry holds now: open and draining (not those still opening). */
  dataSources(): DataSource[] {
    return [...[...this.lru.values()].map((e) => e.dataSource), ...[...this.draining].map((e) => e.dataSource)];
  }

  stats(): RegistryStats {
    return {
      open: this.lru.size,
      draining: this.draining.size,
      opening: this.initializing,
      waiting: this.slotWaiters.length,
      ...this.counters,
    };
  }

  /**
   * Applies `close` (a forced close, see `forceClose` in forced-close.ts) to every DataSource held
   * now and to each one whose open completes later, so that a `destroy()` past its deadline ends.
   */
  forceClose(close: (dataSource: DataSource) => void): void {
    this.forced = close;
    for (const dataSource of this.dataSources()) close(dataSource);
  }

  /**
   * Closes every DataSource: open ones at once when idle, busy ones when their calls finish, and
   * those still opening once open. Resolves when all are closed; later acquires throw.
   */
  async destroy(): Promise<void> {
    this.destroyed = true;
    if (this.sweeper !== undefined) clearInterval(this.sweeper);
    for (const wake of this.slotWaiters.splice(0)) wake();
    this.lru.clear();
    await Promise.allSettled([...this.opening.values()]);
    while (this.closing.size > 0 || this.draining.size > 0) {
      if (this.closing.size > 0) await Promise.allSettled([...this.closing]);
      else await new Promise((resolve) => setTimeout(resolve, 5));
    }
  }
}

/**
 * `hook` wrapped so that a throw or a rejected promise from it is swallowed: a logger that fails
 * must not fail the call, leave an evicted DataSource open or end the process. @internal
 */
export function containHook<A>(hook: (arg: A) => void): (arg: A) => void {
  return (arg) => {
    try {
      const result = hook(arg) as unknown;
      if (typeof (result as PromiseLike<unknown> | undefined)?.then === 'function') {
        (result as PromiseLike<unknown>).then(undefined, () => undefined);
      }
    } catch {
      // Contained on purpose; see above.
    }
  };
}
