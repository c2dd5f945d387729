import type { ServerResponse } from 'node:http';
import { Catch, Logger, type ArgumentsHost, type ExceptionFilter } from '@nestjs/common';
import { throwError, type Observable } from 'rxjs';
import { maskSecrets } from '../connection-url';
import { tryGetContext } from '../context';
import { CellsError } from '../errors';
import { requestContextOf } from './request-contexts';

/**
 * The HTTP status of each typeorm-cells error code; any other `CellsError` (a programming error
 * such as NoContextError) is a 500.
 */
export const CELLS_ERROR_STATUS: Readonly<Record<string, number>> = {
  CELLS_INVALID_ARGUMENT: 400,
  CELLS_INVALID_HEADER: 400,
  CELLS_UNKNOWN_INSTANCE: 404,
  CELLS_UNKNOWN_CELL: 404,
  CELLS_UNKNOWN_HOST: 404,
  CELLS_DUPLICATE_MAPPING: 409,
  CELLS_CELL_IN_USE: 409,
  // Concurrent mapping writes kept deadlocking on the API database: retry later.
  CELLS_MAPPING_WRITE_CONFLICT: 503,
  CELLS_CELL_UNREACHABLE: 503,
  CELLS_CELL_BUSY: 503,
  CELLS_SERVER_BUSY: 503,
  CELLS_QUERY_TIMEOUT: 503,
  CELLS_NOT_READY: 503,
  // The cell's stored connection URL cannot be used: to the client, a cell it cannot reach.
  CELLS_BAD_CONNECTION_URL: 503,
  // An operator took the cell out of service for a while (cell set-state): retry later.
  CELLS_CELL_READ_ONLY: 503,
  CELLS_CELL_DISABLED: 503,
  // The cell's schema is behind what this code needs (requireSchema): served once it is migrated.
  CELLS_SCHEMA_BEHIND: 503,
  // Its migrations table cannot be read (requireSchema): served once it can and is reported.
  CELLS_SCHEMA_UNREADABLE: 503,
};

/** The JSON body `CellsExceptionFilter` answers with: Nest's error fields, plus `code` and `requestId`. */
export interface CellsErrorBody {
  statusCode: number;
  /** The typeorm-cells error code (`CELLS_UNKNOWN_INSTANCE`...), or `INTERNAL` for a 500. */
  code: string;
  /** The error's message, passwords masked; `Internal server error.` for a 500. */
  message: string;
  /** The request id of the request context, or `null` outside one. */
  requestId: string | null;
}

/**
 * The adapter's response: an Express response (a ServerResponse), a Fastify reply (`raw`), or, for a
 * middleware under Fastify, the bare ServerResponse.
 */
interface AdapterResponse {
  raw?: ServerResponse;
  status(code: number): AdapterResponse;
  json?(body: unknown): unknown;
  send(body: unknown): unknown;
}

/**
 * Maps typeorm-cells errors to HTTP answers under the Express and the Fastify adapters (see
 * `CELLS_ERROR_STATUS`): bad input 400, unknown instance or cell 404, an unreachable, busy or not
 * ready cell 503. Messages are masked and never hold a connection string; a 500 says nothing and is
 * logged (masked) instead. When the response has begun already (a stream that failed midway), it
 * cannot be answered: the connection is destroyed, so the client sees a cut response, and the
 * error is logged. Register it with `app.useGlobalFilters(new CellsExceptionFilter())` or as
 * `APP_FILTER`, so the 400 of `CellsContextMiddleware` is answered by it too.
 */
@Catch(CellsError)
export class CellsExceptionFilter implements ExceptionFilter<CellsError> {
  private readonly logger = new Logger('CellsExceptionFilter');

  /**
   * Answers `error` on an HTTP host. On another host (an APP_FILTER also sees the handlers of a
   * microservice, a GraphQL resolver or a gateway), it writes nothing: a microservice (`rpc`) gets
   * an Observable failing with the typed error, as Nest's own RPC filters return; a gateway (`ws`)
   * client gets an `exception` event `{ status: 'error', code, message }` (masked; for a 500 only
   * `INTERNAL`, as HTTP answers, the error logged), as Nest's
   * BaseWsExceptionFilter emits (a gateway ignores what a filter returns: the error would vanish);
   * any other host (GraphQL) gets the error back, for its own error handling.
   */
  catch(error: CellsError, host: ArgumentsHost): Observable<never> | CellsError | undefined {
    const type = host.getType<string>();
    if (type === 'rpc') return throwError(() => error);
    if (type === 'ws') {
      const client = host.switchToWs().getClient<{ emit?: unknown } | undefined>();
      const { status, code, message } = shownError(error);
      if (status === 500) this.logger.error(`[-] ${describe(error)}`);
      if (typeof client?.emit === 'function') {
        (client.emit as (event: string, payload: unknown) => unknown).call(client, 'exception', { status: 'error', code, message });
      }
      return undefined;
    }
    if (type !== 'http') return error;
    this.answer(error, host);
    return undefined;
  }

  private answer(error: CellsError, host: ArgumentsHost): void {
    const http = host.switchToHttp();
    const response = http.getResponse<AdapterResponse>();
    const requestId = (requestContextOf(http.getRequest()) ?? tryGetContext())?.requestId ?? null;
    const { status, code, message } = shownError(error);
    const raw = response.raw ?? (response as unknown as ServerResponse);
    if (raw.headersSent) {
      this.logger.error(`[${requestId ?? '-'}] response cut after its headers were sent: ${describe(error)}`);
      raw.destroy();
      return;
    }
    if (status === 500) this.logger.error(`[${requestId ?? '-'}] ${describe(error)}`);
    const body: CellsErrorBody = { statusCode: status, code, message, requestId };
    if (typeof response.status !== 'function') {
      // A middleware's error under Fastify: middie hands it the Node response, not the reply.
      raw.statusCode = status;
      raw.setHeader('content-type', 'application/json; charset=utf-8');
      raw.end(JSON.stringify(body));
      return;
    }
    const answer = response.status(status);
    if (typeof answer.json === 'function') answer.json(body);
    else answer.send(body);
  }
}

/**
 * What a client is told of `error`: its status (CELLS_ERROR_STATUS, else 500), and its code and
 * masked message, or for a 500 (a server bug) only `INTERNAL` and `Internal server error.`.
 */
function shownError(error: CellsError): { status: number; code: string; message: string } {
  const status = CELLS_ERROR_STATUS[error.code] ?? 500;
  return status === 500
    ? { status, code: 'INTERNAL', message: 'Internal server error.' }
    : { status, code: error.code, message: maskSecrets(error.message) };
}

function describe(error: CellsError): string {
  return maskSecrets(error.stack ?? `${error.name}: ${error.message}`);
}
