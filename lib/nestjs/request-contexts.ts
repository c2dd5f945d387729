import type { IncomingMessage } from 'node:http';
import type { Context } from '@opentelemetry/api';
import type { RequestContext } from '../context';
import { rawRequest } from './request-headers';

/** What `CellsContextMiddleware` remembers of a request: its RequestContext and the active OpenTelemetry context. */
interface Remembered {
  ctx: RequestContext;
  /** The active OpenTelemetry context in the middleware (the HTTP server span's), when the API is loaded. */
  otel: Context | undefined;
}

/**
 * The contexts each request had in `CellsContextMiddleware`, by its Node request: the guard and the
 * interceptor enter them again where they were lost (Fastify reads a body from socket events, a
 * middleware may resume `next()` from another request's async context), and the exception filter
 * reads the request id.
 */
const contexts = new WeakMap<IncomingMessage, Remembered>();

/** @internal */
export function rememberContext(request: IncomingMessage, ctx: RequestContext, otel: Context | undefined): void {
  contexts.set(request, { ctx, otel });
}

/** What the middleware remembered of `request`, if it ran for it. @internal */
export function rememberedOf(request: IncomingMessage | undefined): Remembered | undefined {
  return request === undefined ? undefined : contexts.get(request);
}

/**
 * The RequestContext `CellsContextMiddleware` opened for `request`: an Express request, a Fastify
 * request, or the Node request under either. Reads it from the request, not from the async
 * context, so it is right wherever the code runs (a guard registered before `CellsModule`'s, a
 * callback of a shared client).
 * @returns `undefined` when the middleware did not run for `request` (or it is not a request).
 */
export function requestContextOf(request: unknown): RequestContext | undefined {
  return rememberedOf(rawRequest(request))?.ctx;
}
