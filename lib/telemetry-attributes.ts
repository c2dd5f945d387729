import type { Attributes, Span } from '@opentelemetry/api';
import { maskSecrets } from './connection-url';
import { CellsError } from './errors';

/**
 * The attributes typeorm-cells puts on spans and metrics, after the OpenTelemetry database
 * semantic conventions (`db.system.name`, `db.namespace`, `server.address`...) plus the cell
 * (`typeorm_cells.cell.uuid`, `.name`). Built from a database's parsed connection parts, never
 * from its URL: no password, user name or query parameter can reach them. @internal
 */

/** What a database's attributes are built from: its parsed connection parts, no credentials. */
export interface DatabaseIdentity {
  /** The engine type; undefined when the URL could not be parsed (no `db.system.name` then). */
  readonly type: string | undefined;
  readonly host?: string | undefined;
  readonly port?: number | undefined;
  readonly database?: string | undefined;
}

/** `db.system.name` of an engine type, as the semantic conventions spell it. */
export function dbSystemName(type: string | undefined): string | undefined {
  if (type === undefined) return undefined;
  if (type === 'postgres') return 'postgresql';
  return type === 'mysql' || type === 'mariadb' ? type : 'other_sql';
}

/**
 * The attributes of one database (a cell, the API or the default main database), built once when
 * its DataSource opens: those of its call spans, and those of its operation-duration metric per
 * operation name (cached, so that a routed call allocates none).
 */
export class RouteTelemetry {
  /** The span attributes: db.system.name, db.namespace, server.address/port, the cell's uuid and name. */
  readonly span: Attributes;
  readonly system: string | undefined;
  private readonly byOperation = new Map<string, Attributes>();

  constructor(
    identity: DatabaseIdentity,
    private readonly cell?: { readonly uuid: string; readonly name: string },
  ) {
    this.system = dbSystemName(identity.type);
    const span: Attributes = {};
    if (this.system !== undefined) span['db.system.name'] = this.system;
    if (identity.database !== undefined && identity.database !== '') span['db.namespace'] = identity.database;
    if (identity.host !== undefined && identity.host !== '') span['server.address'] = identity.host;
    if (identity.port !== undefined) span['server.port'] = identity.port;
    if (cell !== undefined) {
      span['typeorm_cells.cell.uuid'] = cell.uuid;
      span['typeorm_cells.cell.name'] = cell.name;
    }
    this.span = Object.freeze(span);
  }

  /** The attributes of `db.client.operation.duration` for `operation` on this database. */
  forOperation(operation: string): Attributes {
    let attributes = this.byOperation.get(operation);
    if (attributes === undefined) {
      attributes = {};
      if (this.system !== undefined) attributes['db.system.name'] = this.system;
      attributes['db.operation.name'] = operation;
      if (this.cell !== undefined) attributes['typeorm_cells.cell.uuid'] = this.cell.uuid;
      this.byOperation.set(operation, Object.freeze(attributes));
    }
    return attributes;
  }
}

/** The route a failed cell open was for, by the error it failed with. */
const failedRoutes = new WeakMap<object, RouteTelemetry>();

/**
 * Records that `error` ended the open of the cell `telemetry` describes, so the call span and
 * operation-duration point of the call that waited for the open name the cell (a call learns its
 * route only once the open succeeded). Costs nothing on a call that opens nothing. @internal
 */
export function markFailedOpen(error: unknown, telemetry: RouteTelemetry): void {
  if (error !== null && typeof error === 'object' && !failedRoutes.has(error)) failedRoutes.set(error, telemetry);
}

/** The route whose open failed with `error` (markFailedOpen), if any. @internal */
export function failedOpenRoute(error: unknown): RouteTelemetry | undefined {
  return error !== null && typeof error === 'object' ? failedRoutes.get(error) : undefined;
}

/** `error.type`: the CellsError's stable code, else the exception's class name, else `_OTHER`. */
export function errorType(error: unknown): string {
  if (error instanceof CellsError) return error.code;
  if (error instanceof Error) return error.constructor.name || error.name || '_OTHER';
  return '_OTHER';
}

const SQLSTATE = /^[0-9A-Z]{5}$/;
const MYSQL_CODE = /^ER_[A-Z_0-9]+$/;

/**
 * `db.response.status_code`: the SQLSTATE a PostgreSQL server sent (on a pg DatabaseError, which
 * carries `severity`) or the `ER_` code of a MySQL/MariaDB server error (mysql2's, which carries
 * `sqlState`), found on the error, its TypeORM `driverError` or its `cause`. Undefined otherwise:
 * a Node errno such as `EPIPE` or a CellsError code is no database status.
 */
export function dbStatusCode(error: unknown): string | undefined {
  let current: unknown = error;
  for (let depth = 0; depth < 4 && current !== null && typeof current === 'object'; depth++) {
    const candidate = current as { code?: unknown; severity?: unknown; sqlState?: unknown; driverError?: unknown; cause?: unknown };
    const { code } = candidate;
    if (typeof code === 'string') {
      if (typeof candidate.severity === 'string' && SQLSTATE.test(code)) return code;
      if (typeof candidate.sqlState === 'string' && MYSQL_CODE.test(code)) return code;
    }
    current = candidate.driverError ?? candidate.cause;
  }
  return undefined;
}

/** The error's message with every secret masked (`maskSecrets`); never throws. */
export function safeErrorMessage(error: unknown): string {
  try {
    return maskSecrets(error instanceof Error ? error.message : String(error));
  } catch {
    return 'unprintable error';
  }
}

/**
 * Marks `span` failed by `error`: `error.type`, `db.response.status_code` for a server's SQLSTATE
 * or `ER_` code, status ERROR and an `exception` event whose message passed `maskSecrets` (no
 * stack: it repeats the message unmasked). @internal
 */
export function recordError(span: Span, error: unknown): void {
  const type = errorType(error);
  const message = safeErrorMessage(error);
  span.setAttribute('error.type', type);
  const status = dbStatusCode(error);
  if (status !== undefined) span.setAttribute('db.response.status_code', status);
  span.addEvent('exception', { 'exception.type': type, 'exception.message': message });
  // SpanStatusCode.ERROR, a value of the API's enum (only its types are imported here).
  span.setStatus({ code: 2, message });
}
