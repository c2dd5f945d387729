/**
 * Every error typeorm-cells throws. Each class has a stable `code` that callers can switch on, and a
 * message that names the cell by uuid or name and never contains a connection string or password.
 */

/** Base class of every typeorm-cells error; `code` is stable across releases. */
export abstract class CellsError extends Error {
  abstract readonly code: string;

  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = new.target.name;
  }
}

/** A routed `'main'` call, `getContext()` or a transaction ran outside any request context. */
export class NoContextError extends CellsError {
  readonly code = 'CELLS_NO_CONTEXT';
  constructor(what = 'This call') {
    super(
      `${what} needs a request context, but none is active. Wrap the work in ` +
        `runWithContext(new RequestContext(), fn) (or targetCell(cell, fn)), and use cells.bind(fn) ` +
        `for callbacks registered elsewhere (event listeners, streams).`,
    );
  }
}

/** A `'main'` call ran in an untargeted context and no default main database was configured. */
export class NoTargetCellError extends CellsError {
  readonly code = 'CELLS_NO_TARGET_CELL';
  constructor() {
    super(
      `The request context targets no cell and no default main database is configured. ` +
        `Use targetCell(cell, fn), or pass the 'main' option to new Cells().`,
    );
  }
}

/** No `CellMapping` exists for the requested cell. */
export class UnknownCellError extends CellsError {
  readonly code = 'CELLS_UNKNOWN_CELL';
  constructor(readonly cell: string) {
    super(`Unknown cell '${cell}': no CellMapping has this uuid or name. List cells with cells.mappings.allCells().`);
  }
}

/** A cell's stored database connection is not a usable PostgreSQL, MySQL or MariaDB URL. */
export class BadConnectionUrlError extends CellsError {
  readonly code = 'CELLS_BAD_CONNECTION_URL';
  /** @param cell how the database is named: `cell 'name' (uuid)`, `the API database`... */
  constructor(readonly cell: string, reason: string) {
    super(
      `The database connection of ${cell} is not a valid connection URL (${reason}). Expected a URL ` +
        `such as postgres://user@host:5432/database (or mysql://, mariadb://); a password, if any, ` +
        `follows the user name after a colon.`,
    );
  }
}

/**
 * The cell entities cannot run on a cell's engine: TypeORM refused their metadata for it (a column
 * type such as `timestamptz` or `jsonb` that MySQL and MariaDB do not have). Entities shared by cells
 * of several engines must use column types every one of them has.
 */
export class IncompatibleEntityError extends CellsError {
  readonly code = 'CELLS_INCOMPATIBLE_ENTITY';
  /**
   * @param database how the database is named: `cell 'name' (uuid)`...
   * @param engine TypeORM's type of its engine (`mysql`, `mariadb`).
   * @param reason TypeORM's refusal, masked.
   */
  constructor(readonly database: string, readonly engine: string, reason: string, options?: { cause?: unknown }) {
    super(
      `${sentenceStart(database)} is a ${engine} database, but the cell entities cannot run on it: ${reason} ` +
        `Entities shared by cells of several engines must use column types every one of them has.`,
      options,
    );
  }
}

/**
 * A database of an engine whose driver package is not installed: `mysql2` for a `mysql://` or
 * `mariadb://` cell (an optional peer dependency, loaded only when such a database is used).
 */
export class MissingDriverError extends CellsError {
  readonly code = 'CELLS_MISSING_DRIVER';
  /**
   * @param database how the database is named: `cell 'name' (uuid)`, `the API database`...
   * @param driverPackage the npm package that is missing.
   */
  constructor(readonly database: string, readonly driverPackage: string, options?: { cause?: unknown }) {
    super(
      `${sentenceStart(database)} needs the '${driverPackage}' package, which is not installed. ` +
        `Install it next to typeorm-cells: npm install ${driverPackage}`,
      options,
    );
  }
}

/**
 * A database could not be reached, or dropped the connection of a running call (server down,
 * authentication, missing database). `cell` is how the database is named: `cell 'name' (uuid)`,
 * `the API database` or `the default main database`. Nothing is cached: a later call connects anew.
 */
export class CellUnreachableError extends CellsError {
  readonly code = 'CELLS_CELL_UNREACHABLE';
  constructor(
    readonly cell: string,
    reason: string,
    options?: { cause?: unknown; hint?: string },
  ) {
    const hint = options?.hint ?? 'A later call connects anew.';
    // Drivers' messages may end with their own full stop ('...closed the connection.').
    super(`${sentenceStart(cell)} is unreachable: ${reason.replace(/\.+$/, '')}.${hint === '' ? '' : ` ${hint}`}`, options);
  }
}

/**
 * A healthy database whose connection pool stayed fully in use for `acquireTimeoutMs`: the call
 * waited for a free pooled connection and gave up. Not a connection failure: the database answers,
 * it is only saturated (a burst of slow queries, more concurrent calls than `poolSize` can serve).
 * Retry later, raise `poolSize`, or shorten the queries that hold the connections.
 */
export class CellBusyError extends CellsError {
  readonly code = 'CELLS_CELL_BUSY';
  constructor(
    readonly cell: string,
    readonly poolSize: number,
    readonly waitedMs: number,
  ) {
    super(
      `${sentenceStart(cell)} is busy: all ${poolSize} pooled connection(s) stayed in use for the ${waitedMs} ms ` +
        `this call could wait (acquireTimeoutMs, or a scatter-gather's deadline). Retry later, raise ` +
        `poolSize, or shorten the queries that hold them.`,
    );
  }
}

/**
 * A connection to a cell could not open because its server's connection budget
 * (`maxConnectionsPerServer`) stayed fully in use, by the connections of this and other cells on
 * the same server, for `acquireTimeoutMs`. The server is healthy; the fleet is saturated. Retry
 * later, raise the budget (keeping it below the server's `max_connections`), or lower `poolSize`.
 * `server` is `host:port`, never a user name or password.
 */
export class ServerBusyError extends CellsError {
  readonly code = 'CELLS_SERVER_BUSY';
  constructor(
    readonly cell: string,
    readonly server: string,
    readonly limit: number,
    readonly waitedMs: number,
  ) {
    super(
      `${sentenceStart(cell)} could not open a connection: all ${limit} connection(s) of the budget of its server ` +
        `${server} (maxConnectionsPerServer) stayed in use for the ${waitedMs} ms this call could wait ` +
        `(acquireTimeoutMs). Retry later, raise maxConnectionsPerServer below the server's max_connections, ` +
        `or lower poolSize.`,
    );
  }
}

/**
 * A statement of a routed call did not answer within its deadline (the context's
 * `queryTimeoutMs`, else the cell's `cellQueryTimeoutMs` entry, else Cells' `queryTimeoutMs`): the server stopped answering, or the query runs longer than allowed.
 * Its connection was closed (not left busy, which would also block what is queued behind it), so
 * the server ends the statement; a transaction it belonged to is rolled back.
 */
export class QueryTimeoutError extends CellsError {
  readonly code = 'CELLS_QUERY_TIMEOUT';
  constructor(
    readonly cell: string,
    readonly timeoutMs: number,
    options?: { cause?: unknown },
  ) {
    super(
      `A query on ${cell} did not answer within ${timeoutMs} ms (queryTimeoutMs), so its connection was ` +
        `closed. Check the database server, or raise queryTimeoutMs for long queries.`,
      options,
    );
  }
}

/** `cell 'x'` -> `Cell 'x'`, `the API database` -> `The API database`. @internal */
export function sentenceStart(label: string): string {
  return label.charAt(0).toUpperCase() + label.slice(1);
}

/** Code inside `cells.transaction()` tried to target a different database. */
export class CellSwitchInTransactionError extends CellsError {
  readonly code = 'CELLS_CELL_SWITCH_IN_TRANSACTION';
  constructor(from: string, to: string) {
    super(
      `Cannot target ${to} inside a transaction on ${from}: a transaction lives in one database. ` +
        `Finish the transaction first, or run the other cell's work outside it.`,
    );
  }
}

/**
 * A write to a read-only cell was refused. `cell` is how the cell is named: `cell 'name' (uuid)`.
 * Either the library refused a routed write (save, insert, update, delete, a write query builder,
 * or one inside a transaction) before it reached the database, or the cell's database refused a
 * write the library does not read (raw SQL, a transaction's manager): its connections run read-only
 * transactions, and the server's refusal (PostgreSQL SQLSTATE 25006; MySQL/MariaDB errno 1792, or
 * 1290 from a `--read-only` server) is kept as `cause`, masked. Reads of the cell work; writes work
 * again once an operator sets the cell `active` (`cells.mappings.setCellState`, or `cell set-state
 * <cell> active`).
 */
export class CellReadOnlyError extends CellsError {
  readonly code = 'CELLS_CELL_READ_ONLY';
  /**
   * @param write the refused call, e.g. `save()` or `an insert query builder`.
   * @param options `byServer`: the database refused it (default: the library, before reaching it);
   *   `cause`: the server's error.
   */
  constructor(readonly cell: string, write: string, options?: { byServer?: boolean; cause?: unknown }) {
    super(
      `${sentenceStart(cell)} is read-only: ${write} was ${options?.byServer === true ? 'refused by its database (read-only transaction)' : 'refused before reaching its database'}. Reads work; ` +
        `writes resume once the cell is set active (cell set-state <cell> active).`,
      options?.cause === undefined ? undefined : { cause: options.cause },
    );
  }
}

/**
 * A routed call (or a transaction) targeted a disabled cell. `cell` is how the cell is named:
 * `cell 'name' (uuid)`. Calls work again once an operator sets the cell `active`.
 */
export class CellDisabledError extends CellsError {
  readonly code = 'CELLS_CELL_DISABLED';
  constructor(readonly cell: string) {
    super(
      `${sentenceStart(cell)} is disabled: routed calls to it are refused. Target another cell, or set this one ` +
        `active (cell set-state <cell> active).`,
    );
  }
}

/**
 * A routed call (or a transaction) targeted a cell whose schema is behind the `requireSchema`
 * option: `migration` (the oldest migration it needs) is missing from the cell's migrations table,
 * with `missing - 1` more. `cell` names the cell: `cell 'name' (uuid)`. Calls pass once the cell is
 * migrated and the CLI reports it (`db migrate`), or the cell's DataSource is reopened.
 */
export class SchemaBehindError extends CellsError {
  readonly code = 'CELLS_SCHEMA_BEHIND';
  constructor(
    readonly cell: string,
    readonly migration: string,
    readonly missing: number,
    /** How the CLI names the cell (its uuid); `<cell>` when not given. */
    cellRef = '<cell>',
  ) {
    super(
      `${sentenceStart(cell)} has not applied migration ${migration}${missing > 1 ? ` (nor ${missing - 1} more)` : ''}, ` +
        `which requireSchema needs: routed calls to it are refused. Migrate it (typeorm-cells db migrate --cell ${cellRef}).`,
    );
  }
}

/**
 * The schema gate (`requireSchema`) could not read a cell's migrations table for a reason other
 * than its absence: the server refused the query (no SELECT privilege, a table without a `name`
 * column: PostgreSQL's SQLSTATE class 42 but 42P01, MySQL's and MariaDB's ER_TABLEACCESS_DENIED_ERROR,
 * ER_COLUMNACCESS_DENIED_ERROR and ER_BAD_FIELD_ERROR). Routed calls to the cell are refused, as for
 * a cell whose schema is behind, until a migration is reported for it (`db migrate`,
 * `cells.mappings.reportMigrated`) or its DataSource is reopened. `reason` is the server's error
 * code; `cell` names the cell: `cell 'name' (uuid)`.
 */
export class SchemaUnreadableError extends CellsError {
  readonly code = 'CELLS_SCHEMA_UNREADABLE';
  constructor(
    readonly cell: string,
    readonly table: string,
    readonly reason: string,
  ) {
    super(
      `The schema of ${cell} cannot be checked: its migrations table ${table} could not be read (server error ${reason}), ` +
        `so requireSchema refuses routed calls to it. Let the cell's user read the table's name column, then ` +
        `report it (typeorm-cells db migrate, or cells.mappings.reportMigrated).`,
    );
  }
}

/** An argument failed validation (malformed uuid, unknown readDeleted mode, bad option). */
export class InvalidArgumentError extends CellsError {
  readonly code = 'CELLS_INVALID_ARGUMENT';
}

/** The `Cells` instance is not initialized yet, or was destroyed. */
export class CellsNotReadyError extends CellsError {
  readonly code = 'CELLS_NOT_READY';
  constructor(state: 'uninitialized' | 'destroyed') {
    super(
      state === 'uninitialized'
        ? 'Cells is not initialized: await cells.initialize() before routing calls.'
        : 'Cells was destroyed: create a new Cells instance to route calls again.',
    );
  }
}

/** No InstanceMapping exists for the instance, or it is not placed in a cell yet. */
export class UnknownInstanceError extends CellsError {
  readonly code = 'CELLS_UNKNOWN_INSTANCE';
  constructor(readonly instanceUuid: string, detail = 'no InstanceMapping has this uuid') {
    super(`Unknown instance '${instanceUuid}': ${detail}.`);
  }
}

/** No HostMapping exists for the host. */
export class UnknownHostError extends CellsError {
  readonly code = 'CELLS_UNKNOWN_HOST';
  constructor(readonly host: string) {
    super(`Unknown host '${host.slice(0, 255)}': no HostMapping has this name. Map it with cells.mappings.mapHost().`);
  }
}

/** A cell cannot be deleted while instances or hosts are mapped to it. */
export class CellInUseError extends CellsError {
  readonly code = 'CELLS_CELL_IN_USE';
  constructor(cell: string, instances: number, hosts: number) {
    super(
      `Cell ${cell} still has ${instances} instance mapping(s) and ${hosts} host mapping(s); ` +
        `move or delete them first, or pass { force: true } to delete the mappings with the cell.`,
    );
  }
}

/** A mapping with this uuid or name already exists. */
export class DuplicateMappingError extends CellsError {
  readonly code = 'CELLS_DUPLICATE_MAPPING';
}

/**
 * A mapping write the API database rolled back to break a deadlock with other writes, every time
 * it was run (5 times): retry later.
 */
export class MappingWriteConflictError extends CellsError {
  readonly code = 'CELLS_MAPPING_WRITE_CONFLICT';
  constructor(readonly attempts: number, options?: { cause?: unknown }) {
    super(`The mapping write was rolled back by the API database to break a deadlock with concurrent writes, ${attempts} times; retry it.`, options);
  }
}

/** The caller's AbortSignal ended a scatter-gather before every cell answered; `cause` is its reason. */
export class ScatterGatherAbortedError extends CellsError {
  readonly code = 'CELLS_SCATTER_GATHER_ABORTED';
  constructor(reason: unknown) {
    super('The scatter-gather was aborted by its caller before every cell answered; no results are returned.', {
      cause: reason,
    });
  }
}

/**
 * The password a connection URL references (`?password=env:NAME`, `file:/path`, or a kind of the
 * `resolveSecret` option) could not be resolved when its database opened. Names the database, the
 * reference's kind and, for the built-in kinds, the reference (the variable's name, the file's
 * path: where the secret is, not the secret); never a `resolveSecret` kind's reference, nor the
 * secret. The call fails, and the next call tries again.
 */
export class SecretResolutionError extends CellsError {
  readonly code = 'CELLS_SECRET_RESOLUTION';
  /**
   * @param cell how the database is named: `cell 'name' (uuid)`, `the API database`...
   * @param kind the reference's kind: `env`, `file`, or one of `resolveSecret`.
   * @param reference the reference after `kind:`, only for the built-in kinds `env` and `file`.
   * @param hint what to do, in place of the default sentence.
   */
  constructor(
    readonly cell: string,
    readonly kind: string,
    /** Why it could not be resolved, e.g. `its environment variable is not set or empty`. */
    readonly reason: string,
    readonly reference?: string,
    hint = `Check the secret reference in its URL's query and that the secret exists where it points.`,
  ) {
    super(
      `The password of ${cell} could not be resolved from its '${kind}' secret reference` +
        `${reference === undefined ? '' : ` (${kind}:${reference})`}: ${reason}. ${hint}`,
    );
  }
}

/**
 * `typeorm-cells db migrate` waited `lockTimeoutMs` for the migration lock of a cell database and
 * another session still held it: another runner is migrating that cell, or one that stopped
 * answering still holds the lock. Nothing was applied to the cell.
 */
export class MigrationLockTimeoutError extends CellsError {
  readonly code = 'CELLS_MIGRATION_LOCK_TIMEOUT';
  /**
   * @param options.whoHolds - how to find the session holding the lock on the database's engine;
   * default: PostgreSQL's (pg_stat_activity).
   * @param options.setting - the setting that bounds the wait; default: the CLI's `--lock-timeout`
   * (`Cells.initialize()` names its `migrateApiLockTimeoutMs` option).
   */
  constructor(
    readonly cell: string,
    readonly lockTimeoutMs: number,
    {
      whoHolds = 'pg_stat_activity shows it',
      setting = '--lock-timeout',
      ...options
    }: { cause?: unknown; whoHolds?: string; setting?: string } = {},
  ) {
    super(
      `${sentenceStart(cell)}: another session held the migration lock for the ${lockTimeoutMs} ms this run could ` +
        `wait (${setting}), so nothing was applied. Wait for the other runner and run it again, or end ` +
        `that session (${whoHolds}).`,
      options,
    );
  }
}
