import { LRUCache } from 'lru-cache';
import type { CellMapping } from '../entities/CellMapping';
import { DEFAULTS } from './data-source-options';

/**
 * Options of the mapping cache, set through the `mappingCache` option of `Cells`. Writes through
 * the library invalidate the cache at once in every process sharing the API database (PostgreSQL
 * LISTEN/NOTIFY, one extra API connection per process; see mapping-listener.ts), so `ttlMs` only
 * bounds staleness after changes made with plain SQL. LISTEN needs a session connection: not
 * through a transaction-mode pooler. On a MySQL or MariaDB API database each process polls a
 * change log instead, every `pollIntervalMs` (see mapping-change-log.ts).
 *
 * A lookup older than its time to live is served while it is refreshed in the background
 * (stale-while-revalidate, as HTTP caches do, RFC 5861): no request waits for a refresh. Refreshes
 * run two at a time on the API pool, instance and host lookups up to 100 per query, and each lookup's time to live is drawn between half and all
 * of `ttlMs`, so lookups loaded together are not refreshed together. While the listener is down
 * nothing is kept or served from the cache.
 */
export interface MappingCacheOptions {
  /**
   * Most lookups kept (cells by uuid and name, instances, hosts, the cell list). From 1 to 1000000.
   * Default: 10000.
   */
  max?: number;
  /**
   * Refresh a lookup at most this many ms after it was loaded (each one between `ttlMs / 2` and
   * `ttlMs`, spread at random); until its refresh has answered, the old value is served. Changes
   * made through typeorm-cells invalidate at once in every process (LISTEN/NOTIFY), so this only
   * bounds staleness after changes made behind the library's back (plain SQL on the API database):
   * at most `ttlMs` plus one refresh; open cells are checked against their mapping as often.
   * From 1 to 2147483647. Default: 60000 (1 min).
   */
  ttlMs?: number;
  /**
   * On a MySQL or MariaDB API database (no LISTEN/NOTIFY), how often each process reads the change
   * log (`cell_mapping_changes`) that every write through typeorm-cells adds to in its own
   * transaction, in ms: a change is seen by every process within this plus one round trip. Each
   * poll lists, on a connection of the API pool, the ids of the last 2 minutes of changes (1000 a
   * query; payloads only of the rows it has not read). Ignored on PostgreSQL.
   * From 1 to 2147483647. Default: 500 (a change is seen within about 0.6 s).
   */
  pollIntervalMs?: number;
}

/** Counters returned by `cells.mappings.cacheStats()`. */
export interface MappingCacheStats {
  /** Lookups answered from the cache, with no API-database query. */
  hits: number;
  /** Lookups that waited for a query (their own, or one already running for the same key). */
  misses: number;
  /**
   * Lookups answered from the cache with a value past its time to live, while a background
   * refresh ran for it (counted in `hits` too: they waited for no query).
   */
  staleHits: number;
  /** Queries run to fill the cache on a miss; concurrent misses of one key share one. */
  loads: number;
  /**
   * Values past their time to live refreshed in the background (none on a request's path);
   * instance and host lookups are refreshed up to 100 per query.
   */
  refreshes: number;
  /** Entries in the cache now. */
  size: number;
  /** Keys dropped because a mapping changed, here or in another process. */
  invalidations: number;
  /**
   * True while the invalidation listener is connected. While it is not, lookups still coalesce
   * but are not kept, so no process can serve a mapping another one changed.
   */
  listening: boolean;
  /** Times the listener connection was lost and had to be re-established. */
  reconnects: number;
}

/** The key of the list of all cells. @internal */
export const ALL_CELLS_KEY = 'all';

/** What the cache holds: a cell, a cell uuid (of an instance or host), or the list of all cells. @internal */
export type CachedValue = CellMapping | string | readonly CellMapping[];

interface Flight {
  promise: Promise<CachedValue>;
  /** False once the key was invalidated while the query ran: its result is returned, not kept. */
  keep: boolean;
}

/**
 * Background refreshes running at once. They take API connections that misses on a request's path
 * need too, so a wave of expiries queues here instead of filling the API pool.
 */
const REFRESH_CONCURRENCY = 2;

/** Keys of one kind refreshed by one query, when the kind has a batch load. */
const REFRESH_BATCH_SIZE = 100;

/**
 * Loads the current values of many keys of one kind (keys without their prefix) in one query:
 * those found; a key left out or null is looked up again on its own, which reports why.
 * @internal
 */
export type BatchLoad = (keys: readonly string[]) => Promise<ReadonlyMap<string, CachedValue | null>>;

/**
 * An LRU of mapping lookups with single-flight misses. Keys name their kind by prefix:
 * `u:` cell by uuid, `n:` cell by name, `i:` instance, `h:` host, `all`. @internal
 */
export class MappingCache {
  private readonly lru: LRUCache<string, CachedValue>;
  private readonly flights = new Map<string, Flight>();
  /** Bumped by every invalidation, so a query may fill other keys only if nothing changed meanwhile. */
  private epoch = 0;
  private active = false;
  private readonly counters = { hits: 0, misses: 0, staleHits: 0, loads: 0, refreshes: 0, invalidations: 0 };
  /** Hits, misses and loads by mapping kind, read by the telemetry's observable counters. */
  private readonly kinds: Record<MappingKind, LookupCounts> = {
    cell: { hits: 0, misses: 0, loads: 0 },
    instance: { hits: 0, misses: 0, loads: 0 },
    host: { hits: 0, misses: 0, loads: 0 },
  };
  /** Keys past their time to live waiting for a refresh slot, in order, with their loads. */
  private readonly refreshQueue = new Map<string, () => Promise<CachedValue>>();
  private refreshing = 0;
  /** Batch loads of background refreshes, by key prefix (`i:`, `h:`). */
  private readonly batchLoads = new Map<string, BatchLoad>();
  /** Reused: lru-cache reports through it whether a `get` found the value fresh or stale. */
  private readonly status: LRUCache.Status<string, CachedValue> = {};
  /** The options of `get`'s lookups, made once: `get` runs on every cached lookup. */
  private readonly staleGet: LRUCache.GetOptions<string, CachedValue, unknown> = { allowStale: true, status: this.status };

  private readonly ttl: number;

  constructor(options: MappingCacheOptions = {}) {
    this.ttl = options.ttlMs ?? DEFAULTS.mappingCacheTtlMs;
    this.lru = new LRUCache<string, CachedValue>({
      max: options.max ?? DEFAULTS.mappingCacheMax,
      ttl: this.ttl,
      // A value past its time to live stays, so that `get` can serve it while refreshing it;
      // `peek` (no load to refresh with) and lru-cache's own reads see it as absent.
      noDeleteOnStaleGet: true,
      // lru-cache re-reads the clock and arms a timer every `ttlResolution` ms on the hit path; the
      // TTL is only a backstop behind LISTEN/NOTIFY, so a coarse resolution costs no correctness.
      ttlResolution: Math.max(1, Math.min(1000, Math.floor(this.ttl / 10))),
    });
  }

  /**
   * Stores with a time to live drawn between half and all of `ttlMs`, so entries loaded together
   * (a warm-up, a restart) are refreshed over half a TTL rather than in one wave.
   */
  private store(key: string, value: CachedValue): void {
    this.lru.set(key, value, { ttl: Math.max(1, Math.round(this.ttl * (0.5 + Math.random() * 0.5))) });
  }

  /**
   * The value of `key`: from the cache, or from `load`, run once for any number of concurrent
   * misses. A value past its time to live is returned at once and refreshed in the background.
   */
  get<T extends CachedValue>(key: string, load: () => Promise<T>): Promise<T> {
    if (this.active) {
      const { status } = this;
      status.get = undefined;
      const hit = this.lru.get(key, this.staleGet);
      if (hit !== undefined) {
        this.counters.hits++;
        this.kinds[kindOf(key)].hits++;
        if (status.get === 'stale') {
          this.counters.staleHits++;
          this.scheduleRefresh(key, load);
        }
        return Promise.resolve(hit as T);
      }
    }
    this.counters.misses++;
    const kind = this.kinds[kindOf(key)];
    kind.misses++;
    const running = this.flights.get(key);
    if (running !== undefined) return running.promise as Promise<T>;
    this.counters.loads++;
    kind.loads++;
    return this.fly(key, load);
  }

  /** Runs `load` as the one query of `key`, keeping its value unless `key` is invalidated meanwhile. */
  private fly<T extends CachedValue>(key: string, load: () => Promise<T>, refresh = false): Promise<T> {
    const flight: Flight = { promise: undefined as unknown as Promise<T>, keep: this.active };
    const done = () => {
      if (this.flights.get(key) === flight) this.flights.delete(key);
    };
    flight.promise = load().then(
      (value) => {
        done();
        if (flight.keep && this.active) this.store(key, value);
        return value;
      },
      (error: unknown) => {
        done();
        // A failed refresh drops the stale value: the next lookup queries and gets the error
        // (a mapping deleted with plain SQL, the API database down), so staleness stays bounded.
        if (refresh && flight.keep) this.lru.delete(key);
        throw error;
      },
    );
    this.flights.set(key, flight);
    return flight.promise as Promise<T>;
  }

  /** Refreshes keys starting with `prefix` (two characters, as `i:`) in batches through `load`. */
  batchRefreshes(prefix: string, load: BatchLoad): void {
    this.batchLoads.set(prefix, load);
  }

  /** Queues a background refresh of `key` unless one is queued or running (or a miss is loading it). */
  private scheduleRefresh(key: string, load: () => Promise<CachedValue>): void {
    if (this.flights.has(key) || this.refreshQueue.has(key)) return;
    this.refreshQueue.set(key, load);
    this.pumpRefreshes();
  }

  private pumpRefreshes(): void {
    while (this.refreshing < REFRESH_CONCURRENCY && this.refreshQueue.size > 0) {
      const batch = this.nextRefreshBatch();
      if (batch.length === 0) continue;
      this.refreshing++;
      this.counters.refreshes += batch.length;
      const batchLoad = batch.length > 1 ? this.batchLoads.get(batch[0]![0].slice(0, 2)) : undefined;
      const found = batchLoad?.(batch.map(([key]) => key.slice(2)));
      // Failures are the flights' own: a refresh that failed dropped its stale value.
      const settled = batch.map(([key, load]) =>
        this.fly(
          key,
          found === undefined
            ? load
            : () => found.then((values) => values.get(key.slice(2)) ?? load()),
          true,
        ).catch(() => undefined),
      );
      void Promise.all(settled).then(() => {
        this.refreshing--;
        this.pumpRefreshes();
      });
    }
  }

  /**
   * Takes the next queued refresh, and with it up to REFRESH_BATCH_SIZE - 1 more queued keys of
   * its kind when that kind has a batch load; skips keys that an invalidation or a miss took first.
   */
  private nextRefreshBatch(): Array<[string, () => Promise<CachedValue>]> {
    const batch: Array<[string, () => Promise<CachedValue>]> = [];
    let prefix: string | undefined;
    let size = 1;
    for (const [key, load] of this.refreshQueue) {
      if (prefix === undefined) {
        prefix = key.slice(0, 2);
        if (this.batchLoads.has(prefix)) size = REFRESH_BATCH_SIZE;
      } else if (!key.startsWith(prefix)) {
        continue;
      }
      this.refreshQueue.delete(key);
      if (!this.flights.has(key) && this.active) batch.push([key, load]);
      if (batch.length === size) break;
    }
    return batch;
  }


  /** The cached value of `key`, counted as a hit, or undefined (not counted: `get` follows). */
  peek(key: string): CachedValue | undefined {
    if (!this.active) return undefined;
    const hit = this.lru.get(key);
    if (hit !== undefined) {
      this.counters.hits++;
      this.kinds[kindOf(key)].hits++;
    }
    return hit;
  }

  /** The current epoch, to pass to `prime` after a query that also returned other keys' values. */
  get currentEpoch(): number {
    return this.epoch;
  }

  /** Keeps `value` under `key` unless something was invalidated since `epoch` or the key is cached. */
  prime(key: string, value: CachedValue, epoch: number): void {
    if (this.active && epoch === this.epoch && !this.lru.has(key)) this.store(key, value);
  }

  /** Drops `key` and makes a query running for it return without being kept. */
  invalidate(key: string): void {
    this.epoch++;
    this.counters.invalidations++;
    this.lru.delete(key);
    this.refreshQueue.delete(key);
    const flight = this.flights.get(key);
    if (flight !== undefined) {
      flight.keep = false;
      this.flights.delete(key);
    }
  }

  /** Drops every key and every running query's claim to be kept. */
  clear(): void {
    this.epoch++;
    this.counters.invalidations += this.lru.size;
    this.lru.clear();
    this.refreshQueue.clear();
    for (const flight of this.flights.values()) flight.keep = false;
    this.flights.clear();
  }

  /** Starts (true) or stops (false) keeping lookups; either way the cache starts empty. */
  setActive(active: boolean): void {
    this.clear();
    this.active = active;
  }

  /** Counters and size; the listener adds its own state. */
  stats(): Omit<MappingCacheStats, 'listening' | 'reconnects'> {
    return { ...this.counters, size: this.lru.size };
  }

  /** Hits, misses and loads by mapping kind (the live counters: read, do not write). */
  countsByKind(): Readonly<Record<MappingKind, Readonly<LookupCounts>>> {
    return this.kinds;
  }
}

/** What a cached lookup finds: a cell (by uuid or name, or the list), an instance's or a host's cell. */
export type MappingKind = 'cell' | 'instance' | 'host';

/** Lookups of one kind: served from the cache, not, and queries run for them. */
export interface LookupCounts {
  hits: number;
  misses: number;
  loads: number;
}

/** The kind of a cache key, from its prefix (`i:` instance, `h:` host, others a cell). */
function kindOf(key: string): MappingKind {
  const first = key.charCodeAt(0);
  if (first === 105 /* i */) return 'instance';
  return first === 104 /* h */ ? 'host' : 'cell';
}
