import { randomUUID } from 'node:crypto';
import type { DataSource, EntityManager } from 'typeorm';
import type { CellMapping } from '../entities/CellMapping';
import { MappingChangeLog, recordChange } from './mapping-change-log';
import { DEFAULTS } from './data-source-options';
import { ALL_CELLS_KEY, MappingCache, type MappingCacheOptions, type MappingCacheStats } from './mapping-cache';
import {
  MAPPINGS_CHANNEL,
  MappingListener,
  decodeChange,
  encodeChange,
  listenerConfig,
  type MappingChange,
} from './mapping-listener';

/** What MappingSync reports to its owner (CellMappingsOptions has them). @internal */
export interface MappingSyncOptions {
  cache?: MappingCacheOptions;
  onCellReconnect?: (uuid: string) => void;
  onResync?: () => void;
  onCellMigrated?: (uuid: string) => Promise<void>;
}

/**
 * This process's mapping cache kept coherent with the API database: a write notifies every
 * process in its own transaction (`notify`), and each drops the keys the change touched when the
 * notification arrives (`apply`, run at once in the writing process). The cache is kept only while
 * the listener listens. On PostgreSQL the notification is a NOTIFY (mapping-listener.ts); on MySQL
 * and MariaDB a row of the change log, polled (mapping-change-log.ts). @internal
 */
export class MappingSync {
  readonly cache: MappingCache;
  /** Tags this process's notifications, so that it does not apply its own changes twice. */
  private readonly origin = randomUUID();
  private listener: MappingListener | MappingChangeLog | undefined;
  /** MySQL and MariaDB have no NOTIFY: changes go through the change log. */
  private readonly polled: boolean;

  constructor(
    private readonly api: DataSource,
    private readonly options: MappingSyncOptions = {},
  ) {
    this.cache = new MappingCache(options.cache);
    this.polled = api.options.type === 'mysql' || api.options.type === 'mariadb';
  }

  /**
   * Opens the LISTEN connection (PostgreSQL) or starts polling the change log (MySQL, MariaDB),
   * and starts caching once it listens; never throws (see MappingListener, MappingChangeLog).
   */
  async listen(): Promise<void> {
    if (this.listener !== undefined) return;
    const feed = {
      onPayload: (payload: string) => this.onPayload(payload),
      onUp: (afterOutage: boolean) => {
        this.cache.setActive(true);
        if (afterOutage) this.options.onResync?.();
      },
      onDown: () => this.cache.setActive(false),
    };
    this.listener = this.polled
      ? new MappingChangeLog({ ...feed, api: this.api, pollIntervalMs: this.options.cache?.pollIntervalMs ?? DEFAULTS.mappingPollIntervalMs })
      : new MappingListener({ ...feed, connection: listenerConfig(this.api) });
    await this.listener.start();
  }

  /** Stops caching and closes the LISTEN connection. Safe to call twice. */
  async stop(): Promise<void> {
    this.cache.setActive(false);
    await this.listener?.stop();
  }

  /** The cache's counters and the listener's state. */
  stats(): MappingCacheStats {
    return {
      ...this.cache.stats(),
      listening: this.listener?.listening ?? false,
      reconnects: this.listener?.reconnects ?? 0,
    };
  }

  /** Notifies every process of `change` from inside the write's transaction `tx` (seen once it commits). */
  async notify(tx: EntityManager, change: MappingChange): Promise<void> {
    const payload = encodeChange(this.origin, change);
    if (this.polled) await recordChange(tx, payload);
    else await tx.query('SELECT pg_notify($1, $2)', [MAPPINGS_CHANNEL, payload]);
  }

  private onPayload(payload: string): void {
    const decoded = decodeChange(payload);
    if (decoded === undefined) {
      // Written by another version, or damaged: forget everything rather than serve stale data.
      this.cache.clear();
      return;
    }
    // The schema check it may start never rejects (CellDataSources.recheckSchema); contained all the same.
    if (decoded.origin !== this.origin) this.apply(decoded.change)?.catch(() => undefined);
  }

  /**
   * Drops the cached keys `change` touched; a cell re-pointed or deleted, or migrated, is reported
   * to the owner. @returns for a migrated cell, the owner's check of it.
   */
  apply(change: MappingChange): Promise<void> | undefined {
    switch (change.kind) {
      case 'instance':
        this.cache.invalidate(`i:${change.uuid}`);
        return;
      case 'host':
        this.cache.invalidate(`h:${change.host}`);
        return;
      case 'schema':
        return this.options.onCellMigrated?.(change.uuid);
      case 'cell':
        if (change.deleted) {
          // Instance and host entries may point at the deleted cell; it is rare enough to start over.
          this.cache.clear();
        } else {
          this.cache.invalidate(`u:${change.uuid}`);
          for (const name of change.names) this.cache.invalidate(`n:${name}`);
          this.cache.invalidate(ALL_CELLS_KEY);
        }
        if (change.reconnect) this.options.onCellReconnect?.(change.uuid);
    }
  }

  /** Drops the cached lookups of a cell: by uuid, by name, and the list of all cells. */
  forgetCell(uuid: string): void {
    const cached = this.cache.peek(`u:${uuid}`);
    this.cache.invalidate(`u:${uuid}`);
    if (cached !== undefined && !Array.isArray(cached) && typeof cached !== 'string') {
      this.cache.invalidate(`n:${(cached as CellMapping).name}`);
    }
    this.cache.invalidate(ALL_CELLS_KEY);
  }
}
