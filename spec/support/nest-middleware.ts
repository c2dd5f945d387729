import { Injectable, type NestMiddleware, type Type } from '@nestjs/common';
import { context as otelContext, trace, type TracerProvider } from '@opentelemetry/api';

/**
 * A middleware standing in for a shared client created lazily inside the first request (a session
 * store, a rate limiter): it resumes every later request's next() from a timer of that first
 * request, every 5 ms, so the rest of each request runs in another request's async context.
 * `stop()` ends the timer (the next request starts it again).
 */
export function sharedClientResume(): { Middleware: Type<NestMiddleware>; stop(): void } {
  let ticker: NodeJS.Timeout | undefined;
  const queued: Array<() => void> = [];
  @Injectable()
  class LazySharedClientMiddleware implements NestMiddleware {
    use(_request: unknown, _response: unknown, next: () => void): void {
      ticker ??= setInterval(() => queued.splice(0).forEach((resume) => resume()), 5);
      queued.push(next);
    }
  }
  return {
    Middleware: LazySharedClientMiddleware,
    stop() {
      clearInterval(ticker);
      ticker = undefined;
    },
  };
}

/**
 * A middleware standing in for the HTTP instrumentation: a SERVER span of `tracerProvider()` named
 * `GET <x-request-id>`, active for the rest of the request and ended when its response finishes or
 * closes. A request with an `x-untraced` header is not traced (a path the instrumentation ignores).
 */
export function serverSpanMiddleware(tracerProvider: () => TracerProvider): Type<NestMiddleware> {
  @Injectable()
  class ServerSpanMiddleware implements NestMiddleware {
    use(req: { headers: Record<string, string> }, res: { on(event: string, fn: () => void): void }, next: () => void): void {
      if (req.headers['x-untraced'] !== undefined) return next();
      const span = tracerProvider().getTracer('http').startSpan(`GET ${req.headers['x-request-id']}`);
      res.on('finish', () => span.end());
      res.on('close', () => span.end());
      otelContext.with(trace.setSpan(otelContext.active(), span), next);
    }
  }
  return ServerSpanMiddleware;
}
