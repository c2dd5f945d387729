import type { PoolClient } from 'pg';
import type { DataSource } from 'typeorm';
import { isConnectionError, kLostError, messageOf } from './connection-errors';
import { parseConnectionUrl, type ConnectionParts } from './connection-url';
import { currentContext } from './context';
import { closeDataSource, connect, fromParts, type PostgresOptions } from './data-source-options';
import { CellUnreachableError, CellsError } from './errors';
import type { SecretOwner, SecretSettings } from './secret-reference';

/**
 * The read replicas of one cell (its CellMapping's `readConnections`), served through TypeORM's own
 * replication modes: TypeORM runs reads (`find*`, `count*`, `exists*`, aggregates, SELECT query
 * builders, streams) on a query runner of mode `'slave'` and everything else (writes, raw `query()`,
 * transactions, schema work) on one of mode `'master'`. `attach` makes the cell's DataSource ask
 * for `'slave'` only when the current context says `readFrom: 'replica'`, and serves `'slave'`
 * runners from the readers' pools.
 *
 * Each reader is a DataSource of its own (opened at the first replica read, closed with the cell),
 * made by the same `guardedDataSource` as every other: bounded acquire (CellBusyError naming the
 * reader), query deadlines, typed errors, the password hidden, and the connection budget of the
 * reader's own server. TypeORM's `replication.slaves` pools are not used: they connect in
 * `initialize()`, so a reader that is down would fail the cell's open, and they bypass those guards.
 *
 * A reader that cannot be reached (its open fails, a new connection fails, or a connection of it is
 * lost) is skipped for `backoffMs` and the read goes to another reader or the primary, with a
 * `replica-unavailable` event: never an error.
 */

/** What typeorm-cells reports to the `logger` option about read replicas. Never a URL. */
export type ReplicaEvent =
  /** A reader's DataSource opened (at the cell's first replica read). `reader` counts from 1. */
  | { type: 'replica-open'; key: string; reader: number; ms: number }
  /**
   * A reader could not be reached: reads go to another reader or the primary, and this reader is
   * not tried again for `retryInMs`. `error` is typed and masked (CellUnreachableError, or
   * BadConnectionUrlError for a URL written with plain SQL).
   */
  | { type: 'replica-unavailable'; key: string; reader: number; error: Error; retryInMs: number };

/** What CellReaders needs from `Cells`. @internal */
export interface CellReadersHost {
  /** A guarded, not yet initialized DataSource with the Cells' bounds (and the reader's server budget). */
  readerDataSource(options: PostgresOptions, label: string): DataSource;
  /** How long an unreachable reader is skipped, in ms. */
  readonly backoffMs: number;
  /** Receives reader events; must not throw. */
  onEvent(event: ReplicaEvent): void;
  /** The cell, as `resolveSecret` names it for a reader's secret reference. */
  readonly owner: SecretOwner;
  /** How a reader's secret reference is resolved. */
  readonly secrets: SecretSettings;
}

type Checkout = [PoolClient, (error?: unknown) => void];

/** What `attach` uses of TypeORM's PostgresDriver. */
interface ReplicatedDriver {
  isReplicated: boolean;
  obtainMasterConnection(): Promise<Checkout>;
  obtainSlaveConnection(): Promise<Checkout>;
}

class Reader {
  dataSource: DataSource | undefined;
  opening: Promise<DataSource | undefined> | undefined;
  /** `performance.now()` until which the reader is skipped. */
  downUntil = 0;

  constructor(
    /** Its place in `readConnections`, from 1. */
    readonly index: number,
    readonly label: string,
    /** Its connection, or why its URL is unusable (a URL written with plain SQL). */
    readonly parts: ConnectionParts | Error,
  ) {}
}

/** The reader DataSources of each open cell DataSource, for a forced close. */
const readersOf = new WeakMap<DataSource, CellReaders>();

/** @internal */
export class CellReaders {
  private readonly readers: Reader[];
  private next = 0;
  private closed = false;

  /**
   * @param key the cell's uuid (events name it).
   * @param urls its reader connections.
   * @param cellLabel how errors name the cell; a reader is `<cellLabel> reader <n>`.
   * @param options the options shared with the cell's DataSource (pool size, timeouts, logging).
   */
  constructor(
    private readonly key: string,
    urls: readonly string[],
    cellLabel: string,
    private readonly options: Omit<PostgresOptions, 'host'>,
    private readonly host: CellReadersHost,
  ) {
    this.readers = urls.map((url, i) => {
      const label = `${cellLabel} reader ${i + 1}`;
      let parts: ConnectionParts | Error;
      try {
        parts = parseConnectionUrl(url, label);
      } catch (error) {
        parts = error as Error;
      }
      return new Reader(i + 1, label, parts);
    });
  }

  /**
   * Makes `dataSource` (the cell's, before `initialize()`) route reads of contexts with
   * `readFrom: 'replica'` to these readers, and close them when it is destroyed.
   */
  attach(dataSource: DataSource): void {
    const driver = dataSource.driver as unknown as ReplicatedDriver;
    // PostgresQueryRunner asks obtainSlaveConnection for a runner of mode 'slave' only when set.
    driver.isReplicated = true;
    driver.obtainSlaveConnection = () => this.obtain(driver);
    // The mode TypeORM gives the runners of reads (SelectQueryBuilder, and so find*, count*...):
    // read per call, from the context the call runs in.
    dataSource.defaultReplicationModeForReads = () => (currentContext()?.readFrom === 'replica' ? 'slave' : 'master');
    // A read that starts a transaction of its own (`find({ transaction: true })`, a builder's
    // `useTransaction(true)`, and so every pessimistic lock) runs on the primary: its runner has
    // no connection yet when the transaction starts, so it takes the primary's instead.
    const createQueryRunner = dataSource.createQueryRunner.bind(dataSource);
    dataSource.createQueryRunner = (mode = 'master') => {
      const runner = createQueryRunner(mode);
      if (mode !== 'slave') return runner;
      const startTransaction = runner.startTransaction.bind(runner);
      runner.startTransaction = (isolationLevel) => {
        const unconnected = runner as unknown as { mode: string; databaseConnection?: unknown };
        if (unconnected.databaseConnection === undefined) unconnected.mode = 'master';
        return startTransaction(isolationLevel);
      };
      return runner;
    };
    const destroy = dataSource.destroy.bind(dataSource);
    dataSource.destroy = async () => {
      try {
        await destroy();
      } finally {
        await this.close();
      }
    };
    readersOf.set(dataSource, this);
  }

  /** A connection of the next reader that answers, round-robin; the primary's when none does. */
  private async obtain(driver: ReplicatedDriver): Promise<Checkout> {
    const count = this.readers.length;
    for (let tried = 0; tried < count && !this.closed; tried++) {
      const reader = this.readers[this.next++ % count]!;
      if (reader.downUntil > performance.now()) continue;
      if (reader.parts instanceof Error) {
        this.down(reader, reader.parts);
        continue;
      }
      let dataSource: DataSource | undefined;
      try {
        dataSource = reader.dataSource ?? (await this.open(reader, reader.parts));
      } catch (error) {
        this.down(reader, error);
        continue;
      }
      if (dataSource === undefined) break;
      let checkout: Checkout;
      try {
        // The reader's guarded checkout: bounded by acquireTimeoutMs, CellBusyError naming the reader.
        checkout = await (dataSource.driver as unknown as ReplicatedDriver).obtainMasterConnection();
      } catch (error) {
        if (!isConnectionError(error)) throw error;
        this.down(reader, error);
        continue;
      }
      const [client, release] = checkout;
      return [
        client,
        (error?: unknown) => {
          // A connection lost while in use: the reader is likely down, skip it for a while.
          const lost = (client as unknown as { [kLostError]?: unknown })[kLostError];
          if (lost !== undefined && isConnectionError(lost)) this.down(reader, lost);
          release(error);
        },
      ];
    }
    return driver.obtainMasterConnection();
  }

  /** Opens `reader`'s DataSource, once for concurrent callers; undefined when the cell closed meanwhile. */
  private open(reader: Reader, parts: ConnectionParts): Promise<DataSource | undefined> {
    reader.opening ??= (async () => {
      const started = performance.now();
      const dataSource = this.host.readerDataSource(
        {
          ...(fromParts(this.options, parts, { ...this.host.owner, label: reader.label }, this.host.secrets) as PostgresOptions),
          type: 'postgres',
          // A replica is read-only, and a reader runs no entity code: no metadata, no schema work.
          entities: [],
          migrations: [],
          subscribers: [],
          synchronize: false,
          migrationsRun: false,
          dropSchema: false,
          installExtensions: false,
        },
        reader.label,
      );
      try {
        await connect(dataSource, reader.label);
      } finally {
        reader.opening = undefined;
      }
      if (this.closed) {
        await closeDataSource(dataSource);
        return undefined;
      }
      reader.dataSource = dataSource;
      this.host.onEvent({ type: 'replica-open', key: this.key, reader: reader.index, ms: performance.now() - started });
      return dataSource;
    })();
    return reader.opening;
  }

  private down(reader: Reader, error: unknown): void {
    if (reader.downUntil > performance.now()) return;
    const retryInMs = this.host.backoffMs;
    reader.downUntil = performance.now() + retryInMs;
    const typed = error instanceof CellsError ? error : new CellUnreachableError(reader.label, messageOf(error));
    this.host.onEvent({ type: 'replica-unavailable', key: this.key, reader: reader.index, error: typed, retryInMs });
  }

  /** Closes every reader DataSource, also one still opening. */
  async close(): Promise<void> {
    this.closed = true;
    await Promise.all(this.readers.map((reader) => reader.opening?.catch(() => undefined)));
    await Promise.all(
      this.readers.map(async (reader) => {
        const { dataSource } = reader;
        reader.dataSource = undefined;
        if (dataSource !== undefined) await closeDataSource(dataSource).catch(() => undefined);
      }),
    );
  }

  /** The open reader DataSources of the cell DataSource `dataSource` (none without readers). */
  static dataSourcesOf(dataSource: DataSource): DataSource[] {
    const readers = readersOf.get(dataSource);
    if (readers === undefined) return [];
    return readers.readers.flatMap((reader) => (reader.dataSource === undefined ? [] : [reader.dataSource]));
  }
}
