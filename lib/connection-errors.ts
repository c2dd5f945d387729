import {
  QueryFailedError,
  QueryRunnerAlreadyReleasedError,
  QueryRunnerProviderAlreadyReleasedError,
  type QueryRunner,
} from 'typeorm';
import { maskSecrets } from './connection-url';
import { CellReadOnlyError, CellUnreachableError, CellsError, QueryTimeoutError } from './errors';

const NETWORK_CODES: ReadonlySet<string> = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'ETIMEDOUT',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'ENOTFOUND',
  'EAI_AGAIN',
  'EPIPE',
]);
// SQLSTATE: 57P01 admin_shutdown, 57P02 crash_shutdown, 57P03 cannot_connect_now, 3D000
// invalid_catalog_name (the cell's database was dropped: the pool's next connection fails); class 08
// is "connection exception".
// 53300 too_many_connections and class 28 (invalid authorization: a rotated password, a dropped
// role) arise only while a connection starts: the pool of an open cell could not add one.
const SERVER_GONE_STATES: ReadonlySet<string> = new Set(['57P01', '57P02', '57P03', '3D000', '53300', '28000', '28P01']);
// 55000 object_not_in_prerequisite_state covers many things; at connect it is the database that
// does not take connections (`ALTER DATABASE ... ALLOW_CONNECTIONS false`, a template database).
const REFUSING_DATABASE = /is not currently accepting connections/;
// mysql2 (MySQL, MariaDB): codes that mean the connection is gone whenever they arrive. The server
// closed it (PROTOCOL_CONNECTION_LOST), killed it (MariaDB's ER_CONNECTION_KILLED, 1927), is shutting
// down (ER_SERVER_SHUTDOWN, 1053), refused a new one (ER_CON_COUNT_ERROR, 1040; ER_USER_LIMIT_REACHED,
// 1226) or dropped it idle (MySQL 8's ER_CLIENT_INTERACTION_TIMEOUT, 4031).
const MYSQL_GONE_CODES: ReadonlySet<string> = new Set([
  'PROTOCOL_CONNECTION_LOST',
  'ER_CONNECTION_KILLED',
  'ER_SERVER_SHUTDOWN',
  'ER_CON_COUNT_ERROR',
  'ER_USER_LIMIT_REACHED',
  'ER_CLIENT_INTERACTION_TIMEOUT',
]);
// mysql2 marks `fatal` every error after which the connection is unusable: handshake failures (a wrong
// password, ER_ACCESS_DENIED_ERROR; a dropped database, ER_BAD_DB_ERROR; ER_HOST_NOT_PRIVILEGED...) and
// protocol or socket failures. The same codes without `fatal` come from a statement on a live
// connection (`SELECT * FROM missing_db.t` is ER_BAD_DB_ERROR too) and are the caller's error.
function isFatalMysqlError(candidate: { code?: unknown; fatal?: unknown }): boolean {
  return candidate.fatal === true && typeof candidate.code === 'string';
}
// 'timeout expired': pg's own connect timeout (the Client's connectionTimeoutMillis).
// mysql2: "Can't add new command when connection is in closed state" (a query on a lost connection).
const CLIENT_GONE_MESSAGES =
  /closed state|Connection terminated|connection timeout|timeout expired|timeout exceeded when trying to connect|Client has encountered a connection error/i;

/**
 * The server's error code of a failed query (TypeORM's QueryFailedError): PostgreSQL's SQLSTATE
 * (`42P01`), MySQL's and MariaDB's name (`ER_NO_SUCH_TABLE`); undefined for any other error.
 * @internal
 */
export function queryErrorCode(error: unknown): string | undefined {
  if (!(error instanceof QueryFailedError)) return undefined;
  const code = (error.driverError as { code?: unknown } | undefined)?.code;
  return typeof code === 'string' ? code : undefined;
}

/** True when `error` says the database could not be reached or dropped the connection. */
export function isConnectionError(error: unknown): boolean {
  const candidates = [error, error instanceof QueryFailedError ? error.driverError : undefined];
  for (const candidate of candidates) {
    // Duck-typed, not `instanceof Error`: socket errors come from Node's own realm, which differs
    // from the caller's under vm sandboxes such as Jest's.
    if (typeof candidate !== 'object' || candidate === null) continue;
    const { code, message } = candidate as { code?: unknown; message?: unknown };
    if (typeof code === 'string' && (NETWORK_CODES.has(code) || SERVER_GONE_STATES.has(code) || code.startsWith('08'))) {
      return true;
    }
    if (typeof code === 'string' && MYSQL_GONE_CODES.has(code)) return true;
    if (isFatalMysqlError(candidate)) return true;
    if (typeof message === 'string' && CLIENT_GONE_MESSAGES.test(message)) return true;
    if (code === '55000' && typeof message === 'string' && REFUSING_DATABASE.test(message)) return true;
  }
  return false;
}

// The server's refusal of a write in a read-only transaction: PostgreSQL's SQLSTATE 25006
// read_only_sql_transaction; MySQL/MariaDB's ER_CANT_EXECUTE_IN_READ_ONLY_TRANSACTION (1792), and
// ER_OPTION_PREVENTS_STATEMENT (1290) when the option is the server's `--read-only` or
// `--super-read-only` (1290 also names other options, which are not a read-only refusal).
const READ_ONLY_SERVER_OPTION = /--(super-)?read-only/;

/** True when `error` (or its driver error) is the server refusing a write as read-only. */
export function isReadOnlyRefusal(error: unknown): boolean {
  for (const candidate of [error, error instanceof QueryFailedError ? error.driverError : undefined]) {
    if (typeof candidate !== 'object' || candidate === null) continue;
    const { code, errno, message } = candidate as { code?: unknown; errno?: unknown; message?: unknown };
    if (code === '25006' || code === 'ER_CANT_EXECUTE_IN_READ_ONLY_TRANSACTION' || errno === 1792) return true;
    if ((code === 'ER_OPTION_PREVENTS_STATEMENT' || errno === 1290) && typeof message === 'string' && READ_ONLY_SERVER_OPTION.test(message)) {
      return true;
    }
  }
  return false;
}

/** The code of the error a pool's client fails a query with once its deadline passed. @internal */
export const QUERY_DEADLINE_CODE = 'CELLS_QUERY_DEADLINE';

/**
 * Where the pg clients of the library's pools record the first connection error they receive
 * (cell-client.ts), whenever it arrives: also between a transaction's statements. @internal
 */
export const kLostError = Symbol('typeorm-cells.lostError');

/** The connection error the pg client of `queryRunner` recorded, if any. @internal */
export function lossOf(queryRunner: QueryRunner | undefined): unknown {
  return clientOf(queryRunner)?.[kLostError];
}

/**
 * Records `error` as the loss of `queryRunner`'s connection, for an error the pg client reported
 * to its running query rather than as an `'error'` event: its pool then destroys the connection
 * on release instead of handing it to the next call. @internal
 */
export function markLost(queryRunner: QueryRunner | undefined, error: unknown): void {
  const client = clientOf(queryRunner);
  if (client !== undefined) client[kLostError] ??= error;
}

function clientOf(queryRunner: QueryRunner | undefined): { [kLostError]?: unknown } | undefined {
  return (queryRunner as { databaseConnection?: { [kLostError]?: unknown } } | undefined)?.databaseConnection;
}

/**
 * Returns CellUnreachableError (naming the database by `label`, with masked text) for a connection
 * failure of a running call, and any other error with its connection secrets masked (message,
 * stack, query parameters and causes: a failed insert of a CellMapping carries its URL). With the call's transaction
 * `queryRunner`, also for TypeORM's "already released" errors after its connection was lost. With
 * `readOnly` (a read-only cell's connections), the server's refusal of a write is CellReadOnlyError.
 */
export function translateConnectionError(error: unknown, label: string, queryRunner?: QueryRunner, readOnly = false): unknown {
  if (error instanceof CellsError) return error;
  if (readOnly && isReadOnlyRefusal(error)) return new CellReadOnlyError(label, 'a write', { byServer: true, cause: maskErrorSecrets(error) });
  const lost = lossOf(queryRunner);
  if (
    lost !== undefined &&
    (error instanceof QueryRunnerAlreadyReleasedError || error instanceof QueryRunnerProviderAlreadyReleasedError)
  ) {
    return typedLoss(label, lost);
  }
  const deadline = deadlineOf(error);
  if (deadline !== undefined) return new QueryTimeoutError(label, deadline, { cause: maskErrorSecrets(error) });
  if (!isConnectionError(error)) return maskErrorSecrets(error);
  return typedLoss(label, lost !== undefined && deadlineOf(lost) !== undefined ? lost : error);
}

/** QueryTimeoutError when the connection was closed for a passed deadline, else CellUnreachableError. */
function typedLoss(label: string, lost: unknown): CellsError {
  const deadline = deadlineOf(lost);
  if (deadline !== undefined) return new QueryTimeoutError(label, deadline, { cause: maskErrorSecrets(lost) });
  return new CellUnreachableError(label, messageOf(lost), { cause: maskErrorSecrets(lost) });
}

/** The deadline (ms) of a query failed by its client's deadline, from the error or its driver error. */
function deadlineOf(error: unknown): number | undefined {
  for (const candidate of [error, error instanceof QueryFailedError ? error.driverError : undefined]) {
    const { code, timeoutMs } = (candidate ?? {}) as { code?: unknown; timeoutMs?: unknown };
    if (code === QUERY_DEADLINE_CODE && typeof timeoutMs === 'number') return timeoutMs;
  }
  return undefined;
}

/**
 * The masked message of any thrown value, from any realm: its `message`, else its `code` (a
 * refused connection to several addresses is an AggregateError with an empty message and code
 * `ECONNREFUSED`), else `fallback`.
 */
export function messageOf(error: unknown, fallback = 'connection failed'): string {
  let text: string;
  try {
    const { message, code } = (error ?? {}) as { message?: unknown; code?: unknown };
    text = typeof message === 'string' ? message : String(error);
    text ||= typeof code === 'string' ? code : '';
  } catch {
    // A getter, Proxy trap or toString() that throws (a user's config may export anything).
    text = 'an error that cannot be described';
  }
  return maskSecrets(text) || fallback;
}

/** Fields of errors (TypeORM's QueryFailedError, the pg error it wraps) that may quote a URL. */
// mysql2 puts the statement, its parameters filled in, on `sql` (and TypeORM copies it to its error).
const TEXT_FIELDS = ['message', 'stack', 'query', 'detail', 'hint', 'where', 'internalQuery', 'sql', 'sqlMessage'] as const;
const MAX_CAUSE_DEPTH = 8;

/**
 * Masks, in place, every password in `error` and its chain of causes: their text fields and the
 * query parameters TypeORM keeps on a QueryFailedError (a failed write of a CellMapping carries
 * its URL there). Returns `error`, so that it can wrap a `throw` or a `cause`.
 */
export function maskErrorSecrets<T>(error: T): T {
  const seen = new Set<object>();
  const visit = (value: unknown, depth: number): void => {
    if (typeof value !== 'object' || value === null || seen.has(value) || depth > MAX_CAUSE_DEPTH) return;
    seen.add(value);
    const fields = value as Record<string, unknown>;
    try {
      for (const field of TEXT_FIELDS) {
        const text = fields[field];
        if (typeof text === 'string' && maskSecrets(text) !== text) fields[field] = maskSecrets(text);
      }
      if (Array.isArray(fields.parameters)) fields.parameters = fields.parameters.map(maskParameter);
      visit(fields.driverError, depth + 1);
      visit(fields.cause, depth + 1);
    } catch {
      // A frozen or exotic object: nothing of ours to mask in it.
    }
  };
  visit(error, 0);
  return error;
}

function maskParameter(value: unknown): unknown {
  if (typeof value === 'string') return maskSecrets(value);
  return Array.isArray(value) ? value.map(maskParameter) : value;
}
