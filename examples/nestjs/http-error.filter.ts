import { Catch, type ArgumentsHost, type ExceptionFilter } from '@nestjs/common';
import { tryGetContext } from '../../lib';
import { HttpError } from '../express/errors';

/**
 * Answers the Express example's own errors (bad parameters, a server that is not found), which the
 * Nest app reuses with its parameter parsers, in the body shape of `CellsExceptionFilter`.
 */
@Catch(HttpError)
export class HttpErrorFilter implements ExceptionFilter<HttpError> {
  catch(error: HttpError, host: ArgumentsHost): void {
    const response = host.switchToHttp().getResponse<{ status(code: number): { send(body: unknown): unknown } }>();
    const body = { statusCode: error.status, code: error.code, message: error.message, requestId: tryGetContext()?.requestId ?? null };
    response.status(error.status).send(body);
  }
}
