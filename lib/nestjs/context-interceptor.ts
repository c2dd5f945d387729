import { Injectable, type CallHandler, type ExecutionContext, type NestInterceptor } from '@nestjs/common';
import type { Observable } from 'rxjs';
import { runInternal } from '../context';
import { otelApi } from '../telemetry';
import { rememberedOf } from './request-contexts';
import { rawRequest } from './request-headers';
import { subscribedIn } from './subscribed-in';

/**
 * Runs each HTTP handler in the RequestContext `CellsContextMiddleware` opened for its request, and
 * in the OpenTelemetry context that was active there (so the library's spans join the request's
 * trace), also when something between them called back from another async context (a middleware
 * that answers through a shared client, as session stores and rate limiters do), which would leave
 * the handler in no context or another request's. `CellsModule.forRoot` registers it as a global
 * interceptor.
 */
@Injectable()
export class CellsContextInterceptor implements NestInterceptor {
  intercept(context: ExecutionContext, next: CallHandler): Observable<unknown> {
    if (context.getType() !== 'http') return next.handle();
    const remembered = rememberedOf(rawRequest(context.switchToHttp().getRequest()));
    if (remembered === undefined) return next.handle();
    const { ctx, otel } = remembered;
    const api = otel === undefined ? undefined : otelApi();
    // Nest binds the handler to the async context in which handle() is called; its observable is
    // subscribed in that context too, so that what it starts on subscription keeps it.
    const enter = <R>(fn: () => R): R => runInternal(ctx, api === undefined ? fn : () => api.context.with(otel!, fn));
    return subscribedIn(enter, () => next.handle());
  }
}
