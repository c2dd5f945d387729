import type { IncomingMessage, ServerResponse } from 'node:http';
import { Injectable, type NestMiddleware } from '@nestjs/common';
import { RequestContext, runWithContext } from '../context';
import { InvalidArgumentError } from '../errors';
import { otelApi } from '../telemetry';
import { InvalidHeaderError } from './errors';
import { rememberContext } from './request-contexts';
import { ADMIN_ROLE, CELLS_CONTEXT_HEADERS, rolesOf, singleHeader } from './request-headers';

/**
 * Opens the request's `RequestContext` for the rest of the request, from its headers (see
 * `CELLS_CONTEXT_HEADERS`): `x-request-id` (echoed back; a random id when absent), `x-project-id`,
 * and `x-roles` (`admin` sets `isAdmin`). Works under the Express and the Fastify adapters; apply
 * it with `consumer.apply(CellsContextMiddleware).forRoutes('*')`.
 *
 * `x-roles` is trusted as sent: a proxy in front of the app must authenticate the caller and
 * overwrite the header, or anyone can claim `admin`.
 * @throws InvalidHeaderError (400 through `CellsExceptionFilter`) for any of the three headers sent
 * twice, or a request id or project id holding a comma or a control character, or that
 * RequestContext refuses (longer than 255 characters, blank).
 */
@Injectable()
export class CellsContextMiddleware implements NestMiddleware<IncomingMessage, ServerResponse> {
  use(request: IncomingMessage, response: ServerResponse, next: (error?: unknown) => void): void {
    const ctx = contextFromHeaders(request);
    // The active OpenTelemetry context too (the HTTP server span's): restored with the RequestContext.
    rememberContext(request, ctx, otelApi()?.context.active());
    response.setHeader(CELLS_CONTEXT_HEADERS.requestId, ctx.requestId);
    runWithContext(ctx, () => next());
  }
}

function contextFromHeaders(request: IncomingMessage): RequestContext {
  const requestId = singleHeader(request, CELLS_CONTEXT_HEADERS.requestId);
  const projectId = singleHeader(request, CELLS_CONTEXT_HEADERS.projectId);
  const roles = rolesOf(request);
  try {
    return new RequestContext({
      ...(requestId === undefined ? {} : { requestId }),
      projectId: projectId ?? null,
      isAdmin: roles.includes(ADMIN_ROLE),
    });
  } catch (error) {
    if (!(error instanceof InvalidArgumentError)) throw error;
    const header = /requestId/.test(error.message) ? CELLS_CONTEXT_HEADERS.requestId : CELLS_CONTEXT_HEADERS.projectId;
    throw new InvalidHeaderError(header, 'must be 1-255 characters, not blank, without a NUL byte');
  }
}
