import { LRUCache } from 'lru-cache';
import { Client, type ClientConfig } from 'pg';
import type { DataSource } from 'typeorm';
import type { PostgresConnectionCredentialsOptions } from 'typeorm/driver/postgres/PostgresConnectionCredentialsOptions';
import type { CellMapping } from '../entities/CellMapping';
import { endClient } from './connection-pool';
import { DEFAULTS } from './data-source-options';

/** Options of the mapping cache, set through the `mappingCache` option of `Cells`. */
export interface MappingCacheOptions {
  /** Most lookups kept (cells by uuid and name, instances, hosts, the cell list). Default: 10000. */
  max?: number;
  /**
   * Keep a lookup at most this many ms. Changes made through typeorm-cells invalidate at once in
   * every process (LISTEN/NOTIFY), so this only bounds staleness after changes made behind the
   * library's back (plain SQL on the API database). Default: 60000 (1 min).
   */
  ttlMs?: number;
}

/** Counters returned by `cells.mappings.cacheStats()`. */
export interface MappingCacheStats {
  /** Lookups answered from the cache, with no API-database query. */
  hits: number;
  /** Lookups that waited for a query (their own, or one already running for the same key). */
  misses: number;
  /** Queries run to fill the cache; concurrent misses of one key share one. */
  loads: number;
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

/** A committed change to the mappings, as sent to every process. Never carries a connection string. @internal */
export type MappingChange =
  | { kind: 'cell'; uuid: string; names: string[]; reconnect: boolean; deleted: boolean }
  | { kind: 'instance'; uuid: string }
  | { kind: 'host'; host: string };

/** The PostgreSQL channel writers notify and every process listens on. @internal */
export const MAPPINGS_CHANNEL = 'typeorm_cells_mappings';

/** What the cache holds: a cell, a cell uuid (of an instance or host), or the list of all cells. @internal */
export type CachedValue = CellMapping | string | readonly CellMapping[];

interface Flight {
  promise: Promise<CachedValue>;
  /** False once the key was invalidated while the query ran: its result is returned, not kept. */
  keep: boolean;
}

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
  private readonly counters = { hits: 0, misses: 0, loads: 0, invalidations: 0 };

  private readonly ttl: number;

  constructor(options: MappingCacheOptions = {}) {
    this.ttl = options.ttlMs ?? DEFAULTS.mappingCacheTtlMs;
    this.lru = new LRUCache<string, CachedValue>({
      max: options.max ?? DEFAULTS.mappingCacheMax,
      ttl: this.ttl,
      // lru-cache re-reads the clock and arms a timer every `ttlResolution` ms on the hit path; the
      // TTL is only a backstop behind LISTEN/NOTIFY, so a coarse resolution costs no correctness.
      ttlResolution: Math.max(1, Math.min(1000, Math.floor(this.ttl / 10))),
    });
  }

  /** Stores with the TTL spread by ±10%, so entries loaded together do not all expire together. */
  private store(key: string, value: CachedValue): void {
    this.lru.set(key, value, { ttl: Math.max(1, Math.round(this.ttl * (0.9 + Math.random() * 0.2))) });
  }

  /** The value of `key`: from the cache, or from `load`, run once for any number of concurrent misses. */
  get<T extends CachedValue>(key: string, load: () => Promise<T>): Promise<T> {
    if (this.active) {
      const hit = this.lru.get(key);
      if (hit !== undefined) {
        this.counters.hits++;
        return Promise.resolve(hit as T);
      }
    }
    this.counters.misses++;
    const running = this.flights.get(key);
    if (running !== undefined) return running.promise as Promise<T>;
    this.counters.loads++;
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
        throw error;
      },
    );
    this.flights.set(key, flight);
    return flight.promise as Promise<T>;
  }

  /** The cached value of `key`, counted as a hit, or undefined (not counted: `get` follows). */
  peek(key: string): CachedValue | undefined {
    if (!this.active) return undefined;
    const hit = this.lru.get(key);
    if (hit !== undefined) this.counters.hits++;
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
}

/** What the listener reports to its owner. @internal */
export interface MappingListenerOptions {
  /** Connection of the API database; never logged. */
  connection: ClientConfig;
  /** A notification payload from any process, this one included. */
  onPayload(payload: string): void;
  /** Listening (again); `afterOutage` is false for the first connection. */
  onUp(afterOutage: boolean): void;
  /** The connection was lost or could not be made; notifications may be missed until `onUp`. */
  onDown(): void;
}

const MIN_BACKOFF_MS = 100;
const MAX_BACKOFF_MS = 5_000;

/** How long `stop()` waits for the server to let the LISTEN connection go before closing its socket. */
const LISTENER_CLOSE_WAIT_MS = 1_000;

/**
 * A dedicated pg Client that LISTENs for mapping changes, reconnecting with exponential backoff
 * when its connection drops. Its timers never keep the process alive; `stop()` closes it. @internal
 */
export class MappingListener {
  private client: Client | undefined;
  private timer: NodeJS.Timeout | undefined;
  private failures = 0;
  private stopped = false;
  private everUp = false;
  /** True while connected and listening. */
  listening = false;
  /** Connections lost after having listened. */
  reconnects = 0;

  constructor(private readonly options: MappingListenerOptions) {}

  /** Connects and listens; resolves after the first attempt, retrying in the background if it failed. */
  async start(): Promise<void> {
    await this.connect();
  }

  /** Closes the connection and cancels any retry. Safe to call twice. */
  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer !== undefined) clearTimeout(this.timer);
    this.timer = undefined;
    const client = this.client;
    this.client = undefined;
    this.listening = false;
    // Bounded: an API server that stopped answering never acknowledges the close.
    if (client !== undefined) await endClient(client, LISTENER_CLOSE_WAIT_MS);
  }

  private async connect(): Promise<void> {
    if (this.stopped) return;
    const client = new Client(this.options.connection);
    this.client = client;
    client.on('error', () => this.lost(client));
    client.on('end', () => this.lost(client));
    client.on('notification', (message) => {
      if (message.channel === MAPPINGS_CHANNEL && message.payload !== undefined)
        this.options.onPayload(message.payload);
    });
    try {
      await client.connect();
      await client.query(`LISTEN ${MAPPINGS_CHANNEL}`);
    } catch {
      this.lost(client);
      return;
    }
    if (this.client !== client) return;
    this.failures = 0;
    this.listening = true;
    this.options.onUp(this.everUp);
    this.everUp = true;
  }

  private lost(client: Client): void {
    if (this.client !== client) return;
    this.client = undefined;
    if (this.listening) this.reconnects++;
    this.listening = false;
    this.options.onDown();
    client.end().catch(() => undefined);
    if (this.stopped) return;
    const backoff = Math.min(MAX_BACKOFF_MS, MIN_BACKOFF_MS * 2 ** this.failures++);
    this.timer = setTimeout(
      () => {
        this.timer = undefined;
        void this.connect();
      },
      backoff * (0.5 + Math.random() / 2),
    );
    this.timer.unref();
  }
}

/** Encodes a change for pg_notify, tagged with the writer so it can skip its own. @internal */
export function encodeChange(origin: string, change: MappingChange): string {
  return JSON.stringify({ origin, change });
}

/**
 * Decodes a notification payload; `undefined` when it is not a change this version understands,
 * in which case the caller drops the whole cache.
 * @internal
 */
export function decodeChange(
  payload: string,
): { origin: string; change: MappingChange } | undefined {
  let parsed: unknown;
  try {
    parsed = JSON.parse(payload);
  } catch {
    return undefined;
  }
  if (typeof parsed !== 'object' || parsed === null) return undefined;
  const { origin, change } = parsed as {
    origin?: unknown;
    change?: Partial<Record<string, unknown>>;
  };
  if (typeof origin !== 'string' || typeof change !== 'object' || change === null) return undefined;
  if (change.kind === 'cell' && typeof change.uuid === 'string' && Array.isArray(change.names)) {
    const names = change.names.filter((n): n is string => typeof n === 'string');
    return {
      origin,
      change: {
        kind: 'cell',
        uuid: change.uuid,
        names,
        reconnect: change.reconnect === true,
        deleted: change.deleted === true,
      },
    };
  }
  if (change.kind === 'instance' && typeof change.uuid === 'string')
    return { origin, change: { kind: 'instance', uuid: change.uuid } };
  if (change.kind === 'host' && typeof change.host === 'string')
    return { origin, change: { kind: 'host', host: change.host } };
  return undefined;
}

/** pg Client options for the listener, from the API DataSource's connection options. @internal */
export function listenerConfig(api: DataSource): ClientConfig {
  const o = api.options as PostgresConnectionCredentialsOptions & { connectTimeoutMS?: number };
  return {
    ...(o.url === undefined ? {} : { connectionString: o.url }),
    host: o.host,
    port: o.port,
    user: o.username,
    password: o.password,
    database: o.database,
    ssl: o.ssl as ClientConfig['ssl'],
    connectionTimeoutMillis: o.connectTimeoutMS ?? DEFAULTS.listenerConnectTimeoutMs,
    keepAlive: true,
    application_name: 'typeorm-cells mapping listener',
  };
}
