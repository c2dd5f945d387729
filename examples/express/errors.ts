import type { ErrorRequestHandler, RequestHandler } from 'express';
import { maskSecrets, tryGetContext } from '../../lib';

/** An error whose status and message are meant for the client (bad input, forbidden, not found). */
export class HttpError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
    this.name = 'HttpError';
  }
}

/** Status of each typeorm-cells error code; any other error is a 500. */
const STATUS_BY_CODE: Readonly<Record<string, number>> = {
  CELLS_INVALID_ARGUMENT: 400,
  // Only a client-named cell (`?cell=`) can be unknown in this app: bad input, not a missing resource.
  CELLS_UNKNOWN_CELL: 400,
  CELLS_UNKNOWN_INSTANCE: 404,
  CELLS_DUPLICATE_MAPPING: 409,
  CELLS_CELL_UNREACHABLE: 503,
  CELLS_NOT_READY: 503,
};

/** Body-parser failures the client caused, by their `type`. */
const STATUS_BY_BODY_ERROR: Readonly<Record<string, number>> = {
  'entity.parse.failed': 400,
  'entity.too.large': 413,
  'encoding.unsupported': 415,
  'charset.unsupported': 415,
  'request.aborted': 400,
  'request.size.invalid': 400,
};

/** What the error middleware reports about a 500, for logging; never sent to the client. */
export type ErrorLogger = (line: string) => void;

/** The JSON body of every error response. */
export interface ErrorBody {
  error: { status: number; code: string; message: string; request_id: string | null };
}

/** Answers any unmatched route with a JSON 404. */
export const notFound: RequestHandler = (req, _res, next) => {
  next(new HttpError(404, 'NOT_FOUND', `No route for ${req.method} ${req.path.slice(0, 200)}.`));
};

/**
 * The one place errors become responses: HttpError and typeorm-cells errors (by `code`) keep their
 * message; body-parser errors become 400/413/415; anything else is a 500 whose details go to `log`
 * (secrets masked) and never to the client.
 */
export function errorHandler(log: ErrorLogger = (line) => console.error(line)): ErrorRequestHandler {
  return (err: unknown, _req, res, next) => {
    if (res.headersSent) {
      next(err);
      return;
    }
    const requestId = tryGetContext()?.requestId ?? null;
    const { status, code, message } = describe(err);
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
  const fields = (err ?? {}) as { code?: unknown; type?: unknown; message?: unknown };
  if (typeof fields.code === 'string') {
    const status = STATUS_BY_CODE[fields.code];
    if (status !== undefined) return { status, code: fields.code, message: String(fields.message) };
  }
  if (typeof fields.type === 'string') {
    const status = STATUS_BY_BODY_ERROR[fields.type];
    if (status !== undefined) {
      const message = status === 400 ? 'The request body is not valid JSON.' : `The request body was refused (${fields.type}).`;
      return { status, code: 'BAD_REQUEST_BODY', message };
    }
  }
  return { status: 500, code: 'INTERNAL', message: 'Internal server error.' };
}
