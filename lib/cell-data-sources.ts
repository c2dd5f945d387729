import type { DataSource } from 'typeorm';
import { CellReaders, type ReplicaEvent } from './cell-readers';
import type { CellsOptions } from './cells-options';
import { parseConnectionUrl, type ConnectionParts, type Engine } from './connection-url';
import {
  DEFAULTS,
  cellDataSourceOptions,
  closeDataSource,
  connect,
  fromParts,
  secretSettings,
  type DatabaseOptions,
  type PostgresOptions,
} from './data-source-options';
import { CellDisabledError, CellUnreachableError, UnknownCellError } from './errors';
import { openedFrom, type CellMappings } from './mappings';
import { DataSourceRegistry, containHook, type OpenedCell, type RegistryEvent } from './registry';
import { cellRouteLabel } from './route';
import type { Telemetry } from './telemetry';
import { RouteTelemetry, markFailedOpen } from './telemetry-attributes';
import { freshRefusal, type SchemaGate } from './schema-gate';

/** Opens of a cell whose mapping keeps changing meanwhile give up after this many attempts. */
const MAX_OPEN_ATTEMPTS = 5;

/** What CellDataSources needs from `Cells`. @internal */
export interface CellDataSourcesHost {
  readonly options: CellsOptions;
  /** `cellQueryTimeoutMs`, by lower-case uuid or by name. */
  readonly cellQueryTimeouts: ReadonlyMap<string, number>;
  /**
   * Filled here: what each open cell DataSource was opened from (`openedFrom`: its connections and
   * state), to find stale ones after a listener outage; emptied as they close, so no closed cell's
   * password stays in memory.
   */
  readonly cellConnections: Map<string, string>;
  /** The mappings of the API database; called only once Cells is initialized. */
  mappings(): CellMappings;
  /** True while Cells is ready (not initializing, not destroying). */
  ready(): boolean;
  /** The schema gate (`requireSchema`); undefined when off. Read once Cells is initialized. */
  schemaGate(): SchemaGate | undefined;
  /** The telemetry of the Cells: open spans, open and eviction metrics. */
  readonly telemetry: Telemetry;
  /**
   * A guarded DataSource with the Cells' bounds; `queryTimeoutMs` overrides the Cells option;
   * `poolName` (the cell's uuid) names its pool in metrics; `readOnly` makes its connections run
   * read-only transactions.
   */
  guardedDataSource(options: DatabaseOptions, label: string, queryTimeoutMs: number | undefined, poolName: string, readOnly: boolean): DataSource;
  /**
   * Readies what cells of `engine` share before the first opens (the entity metadata of MySQL and
   * MariaDB cells). @throws MissingDriverError when its driver package is not installed.
   */
  prepareEngine(engine: Engine, label: string): Promise<void>;
  /** The same, for a cell's reader: its own DataSource, with no entity metadata. */
  readerDataSource(options: PostgresOptions, label: string, queryTimeoutMs?: number): DataSource;
}

/**
 * The cell DataSources of a Cells, kept in step with their CellMappings: opened through the
 * registry from the current mapping (again when it changed during the open), and evicted when a
 * mapping change is notified, when the listener missed notifications (resync), or when a periodic
 * lookup finds a cell re-pointed or deleted with plain SQL (revalidation). @internal
 */
export class CellDataSources {
  readonly registry: DataSourceRegistry;
  /** See `CellDataSourcesHost.cellConnections`. */
  private readonly connections: Map<string, string>;
  /** Moves each time a cell is retired: an open that began before a move starts again. */
  private readonly epochs = new Map<string, number>();
  /** Moves each time a cell's schema is reported changed: a check that began before a move runs again. */
  private readonly schemaEpochs = new Map<string, number>();
  private revalidator: NodeJS.Timeout | undefined;

  constructor(private readonly host: CellDataSourcesHost) {
    const { options } = host;
    this.connections = host.cellConnections;
    this.registry = new DataSourceRegistry({
      maxOpen: options.maxOpenCells ?? DEFAULTS.maxOpenCells,
      idleTimeoutMs: options.idleTimeoutMs ?? DEFAULTS.idleTimeoutMs,
      admit: (key) => this.admit(key),
      open: (key) => this.open(key),
      telemetry: host.telemetry,
      onEvent: (event) => {
        this.forgetClosed(event);
        // Returned, so that the registry also contains the rejection of an async logger.
        return options.logger?.(event);
      },
    });
  }

  /** Reports a reader event to the `logger` option; what the logger throws or rejects is ignored. */
  private readonly replicaEvent = containHook((event: ReplicaEvent) => this.host.options.logger?.(event));


  /**
   * Drops the connection URL kept for a cell once its DataSource left the registry, so the map
   * holds open cells only and no closed cell's password stays in memory.
   */
  private forgetClosed(event: RegistryEvent): void {
    if (
      (event.type === 'evict' && !this.registry.has(event.key)) ||
      (event.type === 'close' && !this.host.ready())
    ) {
      this.connections.delete(event.key);
    }
  }

  /** Evicts the open DataSource of `uuid` (running calls finish first) and forgets its connection. */
  retire(uuid: string): void {
    this.epochs.set(uuid, (this.epochs.get(uuid) ?? 0) + 1);
    this.connections.delete(uuid);
    this.registry.evict(uuid);
  }

  /**
   * Evicts the open DataSource of `uuid` when it was opened from another mapping than `now`
   * (`openedFrom`: connections and state).
   */
  check(uuid: string, now: string | undefined): void {
    const opened = this.connections.get(uuid);
    if (opened !== undefined && opened !== now) this.retire(uuid);
  }

  /**
   * Refuses to open a disabled cell before it takes a slot of the `maxOpen` bound (which could
   * evict an open cell). A cache hit unless the mapping changed.
   * @throws CellDisabledError; UnknownCellError.
   */
  private async admit(key: string): Promise<void> {
    const cell = await this.host.mappings().cellByUuid(key);
    if (cell.state === 'disabled') throw new CellDisabledError(cellRouteLabel(cell));
  }

  /**
   * A cell re-pointed with plain SQL sends no notification. Every `intervalMs` (the mapping-cache
   * TTL), the mappings of open cells are looked up again (a cache hit until the TTL has passed, then
   * one query each), and a cell whose connection changed or which was deleted is evicted: running
   * calls finish on the old database, new ones go to the new one.
   */
  startRevalidation(intervalMs: number): void {
    this.revalidator = setInterval(() => void this.revalidate(), intervalMs);
    this.revalidator.unref();
  }

  stopRevalidation(): void {
    if (this.revalidator !== undefined) clearInterval(this.revalidator);
  }

  private async revalidate(): Promise<void> {
    if (!this.host.ready()) return;
    // A cell migrated without the CLI's notification (TypeORM's own CLI, say) passes within a period.
    this.recheckRefused();
    for (const uuid of [...this.connections.keys()]) {
      try {
        // onCellLoaded evicts a re-pointed cell when this lookup refreshed it.
        await this.host.mappings().cellByUuid(uuid);
      } catch (error) {
        if (error instanceof UnknownCellError) this.retire(uuid);
        // Otherwise the API database is unreachable now: keep serving, try again next time.
      }
    }
  }

  /** After the listener missed notifications, closes DataSources whose cell was deleted, re-pointed or changed state. */
  async resync(): Promise<void> {
    if (this.connections.size === 0 || !this.host.ready()) return;
    const current = new Map<string, string>();
    try {
      for (const cell of await this.host.mappings().allCells()) current.set(cell.uuid, openedFrom(cell));
    } catch {
      current.clear();
    }
    for (const [uuid, connection] of this.connections) {
      if (current.get(uuid) !== connection) this.retire(uuid);
    }
    // A migration reported during the outage was missed too.
    this.recheckRefused();
  }

  /** Checks again the schema of each open cell refused by the schema gate. */
  private recheckRefused(): void {
    for (const uuid of [...this.connections.keys()]) {
      if (this.registry.peek(uuid)?.refusal !== undefined) void this.recheckSchema(uuid);
    }
  }

  /**
   * Checks the schema of `uuid`'s open DataSource again (one query), after a migration was reported
   * for it: its calls pass or are refused from then on. Running calls go on; nothing is drained or
   * reopened. A check that fails (the cell unreachable now) retires the DataSource: the next call
   * opens it again and checks then. Does nothing without the gate or when the cell is not open.
   */
  async recheckSchema(uuid: string): Promise<void> {
    const gate = this.host.schemaGate();
    if (gate === undefined) return;
    this.schemaEpochs.set(uuid, (this.schemaEpochs.get(uuid) ?? 0) + 1);
    const entry = this.registry.peek(uuid);
    if (entry === undefined) return;
    try {
      entry.refusal = (await this.schemaRefusal(gate, entry.dataSource, uuid, entry.label)).refusal;
    } catch {
      this.retire(uuid);
    }
  }

  /**
   * What a cell's calls are refused with under `gate` (`refusal` undefined: nothing), checked again
   * when a migration is reported for it while the query runs; `epoch` is the cell's schema epoch it
   * is valid for.
   */
  private async schemaRefusal(
    gate: SchemaGate,
    dataSource: DataSource,
    uuid: string,
    label: string,
  ): Promise<{ refusal: (() => Error) | undefined; epoch: number }> {
    for (;;) {
      const epoch = this.schemaEpochs.get(uuid) ?? 0;
      const refused = await gate.check(dataSource, label);
      if ((this.schemaEpochs.get(uuid) ?? 0) !== epoch) continue;
      // A new error per refused call: its stack is that call's.
      return { refusal: refused && (() => freshRefusal(refused, uuid)), epoch };
    }
  }

  private async open(key: string): Promise<OpenedCell> {
    const { host } = this;
    for (let attempt = 1; ; attempt++) {
      // A change notified while this open runs evicts nothing (the DataSource is not in the
      // registry yet); it moves the cell's epoch, and the open starts again from the new mapping.
      const epoch = this.epochs.get(key) ?? 0;
      const cell = await host.mappings().cellByUuid(key);
      const label = cellRouteLabel(cell);
      // Disabled while an earlier attempt opened it (its epoch moved).
      if (cell.state === 'disabled') throw new CellDisabledError(label);
      const readOnly = cell.state === 'read-only';
      let parts: ConnectionParts;
      try {
        parts = parseConnectionUrl(cell.databaseConnection, label);
      } catch (error) {
        markFailedOpen(error, new RouteTelemetry({ type: undefined }, cell));
        throw error;
      }
      const telemetry = new RouteTelemetry(parts, cell);
      // A call that waited for this open learns its route from the error (markFailedOpen).
      const failed = (error: unknown): never => {
        markFailedOpen(error, telemetry);
        throw error;
      };
      const deadline = host.cellQueryTimeouts.get(cell.uuid.toLowerCase()) ?? host.cellQueryTimeouts.get(cell.name);
      const shared = cellDataSourceOptions(host.options);
      await host.prepareEngine(parts.type, label).catch(failed);
      const owner = { label, uuid: cell.uuid, name: cell.name };
      const secrets = secretSettings(host.options);
      const dataSource = host.guardedDataSource(fromParts(shared, parts, owner, secrets), label, deadline, key, readOnly);
      // Readers are PostgreSQL's (CellMappings refuses them for a cell of another engine).
      if (parts.type === 'postgres' && cell.readConnections != null && cell.readConnections.length > 0) {
        new CellReaders(key, cell.readConnections, label, shared, {
          readerDataSource: (options, readerLabel) => host.readerDataSource(options, readerLabel, deadline),
          backoffMs: host.options.replicaBackoffMs ?? DEFAULTS.replicaBackoffMs,
          owner,
          secrets,
          onEvent: (event) => this.replicaEvent(event),
        }).attach(dataSource);
      }
      await connect(dataSource, label).catch(failed);
      const gate = host.schemaGate();
      const from = openedFrom(cell);
      for (;;) {
        let schema: { refusal: (() => Error) | undefined; epoch: number } | undefined;
        try {
          schema = gate && (await this.schemaRefusal(gate, dataSource, key, label));
        } catch (error) {
          await closeDataSource(dataSource);
          throw error;
        }
        // Checked again after connecting (a cache hit unless it changed): the registry takes the
        // DataSource in the same tick, so no change can slip in between.
        const now = await host.mappings().cellByUuid(key).catch(() => undefined);
        if (now === undefined || openedFrom(now) !== from || (this.epochs.get(key) ?? 0) !== epoch) break;
        // A migration reported during that lookup found no entry to check again: check here.
        if (schema !== undefined && (this.schemaEpochs.get(key) ?? 0) !== schema.epoch) continue;
        this.connections.set(key, from);
        return { dataSource, label, readOnly, telemetry, refusal: schema?.refusal };
      }
      await closeDataSource(dataSource);
      if (attempt === MAX_OPEN_ATTEMPTS) {
        throw new CellUnreachableError(
          label,
          `its CellMapping changed ${attempt} times while it was being opened`,
        );
      }
    }
  }
}
