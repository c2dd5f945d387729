import type { ErrorRequestHandler, RequestHandler } from 'express';
import { maskSecrets, tryGetContext } from '../../lib';
import { recordErrorCode } from './request-telemetry';

/**
 * The codes of the app's own errors and their HTTP status. Library errors keep their `CELLS_*`
 * code (LIBRARY_ERROR_STATUS); the README's error table lists every code of both.
 */
export const APP_ERRORS = {
  BAD_UUID: 400,
  BAD_LIMIT: 400,
  BAD_MARKER: 400,
  BAD_CELL: 400,
  BAD_BODY: 400,
  BAD_NAME: 400,
  BAD_PROJECT_ID: 400,
  BAD_READ_DELETED: 400,
  BAD_REQUEST_BODY: 400,
  BAD_PATH: 400,
  FORBIDDEN: 403,
  NOT_FOUND: 404,
  SERVER_NOT_FOUND: 404,
  BODY_TOO_LARGE: 413,
  UNSUPPORTED_BODY: 415,
  NO_CELLS: 503,
  INTERNAL: 500,
} as const;

/** A code of the app's own errors. */
export type AppErrorCode = keyof typeof APP_ERRORS;

/** An error whose status and message are meant for the client (bad input, forbidden, not found). */
export class HttpError extends Error {
  readonly status: number;

  constructor(
    readonly code: AppErrorCode,
    message: string,
  ) {
    super(message);
    this.name = 'HttpError';
    this.status = APP_ERRORS[code];
  }
}

/** Status of each typeorm-cells error code the app answers with; any other error is a 500. */
export const LIBRARY_ERROR_STATUS: Readonly<Record<string, number>> = {
  CELLS_INVALID_ARGUMENT: 400,
  // Only a client-named cell (`?cell=`) can be unknown in this app: bad input, not a missing resource.
  CELLS_UNKNOWN_CELL: 400,
  CELLS_UNKNOWN_INSTANCE: 404,
  CELLS_DUPLICATE_MAPPING: 409,
  CELLS_CELL_UNREACHABLE: 503,
  CELLS_CELL_BUSY: 503,
  CELLS_SERVER_BUSY: 503,
  CELLS_QUERY_TIMEOUT: 503,
  CELLS_NOT_READY: 503,
  // An operator took the cell out of service for a while (cell set-state): retry later.
  CELLS_CELL_READ_ONLY: 503,
  CELLS_CELL_DISABLED: 503,
  // The cell's schema is behind what this code needs (requireSchema): served once it is migrated.
  CELLS_SCHEMA_BEHIND: 503,
  // Its migrations table cannot be read (requireSchema): served once it can and is reported.
  CELLS_SCHEMA_UNREADABLE: 503,
  // A mapping write the API database kept rolling back to break deadlocks: retry.
  CELLS_MAPPING_WRITE_CONFLICT: 503,
};

/**
 * The HttpError for a failure of the body parser: every one is the client's (a body that is not
 * JSON, too large, in an unsupported encoding, or whose gzip/br bytes do not decompress).
 */
export function bodyError(error: unknown): HttpError {
  const { status, type } = (error ?? {}) as { status?: unknown; type?: unknown };
  if (status === 413) return new HttpError('BODY_TOO_LARGE', 'The request body is larger than the 16 kB allowed.');
  if (status === 415) {
    return new HttpError('UNSUPPORTED_BODY', `The request body's content-encoding or charset is not supported (${String(type)}).`);
  }
  if (type === 'entity.parse.failed') return new HttpError('BAD_REQUEST_BODY', 'The request body is not valid JSON.');
  return new HttpError('BAD_REQUEST_BODY', 'The request body could not be read: a bad content-encoding payload or an aborted upload.');
}

/** What the error middleware reports about a 500, for logging; never sent to the client. */
export type ErrorLogger = (line: string) => void;

/** The JSON body of every error response. */
export interface ErrorBody {
  error: { status: number; code: string; message: string; request_id: string | null };
}

/** Answers any unmatched route with a JSON 404. */
export const notFound: RequestHandler = (req, _res, next) => {
  next(new HttpError('NOT_FOUND', `No route for ${req.method} ${req.path.slice(0, 200)}.`));
};

/**
 * The one place errors become responses: HttpError and typeorm-cells errors (by `code`) keep their
 * message; anything else is a 500 whose details go to `log` (secrets masked) and never to the client.
 */
export function errorHandler(log: ErrorLogger = (line) => console.error(line)): ErrorRequestHandler {
  return (err: unknown, _req, res, next) => {
    if (res.headersSent) {
      next(err);
      return;
    }
    const requestId = tryGetContext()?.requestId ?? null;
    const { status, code, message } = describe(err);
    recordErrorCode(res, code);
    if (status >= 500 && code === 'INTERNAL') {
      const detail = err instanceof Error ? (err.stack ?? err.message) : String(err);
      log(`[${requestId ?? '-'}] ${maskSecrets(detail)}`);
    }
    const body: ErrorBody = { error: { status, code, message: maskSecrets(message), request_id: requestId } };
    res.status(status).json(body);
  };
}

function describe(err: unknown): { status: number; code: string; message: string } {
  if (err instanceof HttpError) return { status: err.status, code: err.code, message: err.message };
  // Express's router fails a path segment that is not valid percent-encoding (`/servers/%zz`).
  if (err instanceof URIError) {
    return { status: 400, code: 'BAD_PATH', message: 'The request path holds a malformed percent-escape.' };
  }
  const fields = (err ?? {}) as { code?: unknown; message?: unknown };
  if (typeof fields.code === 'string') {
    const status = LIBRARY_ERROR_STATUS[fields.code];
    if (status !== undefined) return { status, code: fields.code, message: String(fields.message) };
  }
  return { status: 500, code: 'INTERNAL', message: 'Internal server error.' };
}
