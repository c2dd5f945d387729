import type { IncomingMessage } from 'node:http';
import type { RequestContext } from '../context';

/**
 * The RequestContext each request was given by `CellsContextMiddleware`, by its Node request: the
 * interceptors enter it again where the adapter lost it (Fastify reads a body from socket events,
 * outside the middleware's async context), and the exception filter reads its request id.
 */
const contexts = new WeakMap<IncomingMessage, RequestContext>();

/** @internal */
export function rememberContext(request: IncomingMessage, ctx: RequestContext): void {
  contexts.set(request, ctx);
}

/** The context the middleware gave `request`, if any. @internal */
export function contextOfRequest(request: IncomingMessage | undefined): RequestContext | undefined {
  return request === undefined ? undefined : contexts.get(request);
}
