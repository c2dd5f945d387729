import { Injectable, type CanActivate, type ExecutionContext } from '@nestjs/common';
import type { Context } from '@opentelemetry/api';
import { enterInternal, kLostTrace, type LostTrace } from '../context';
import { otelApi } from '../telemetry';
import { rememberedOf } from './request-contexts';
import { rawRequest } from './request-headers';

/**
 * Enters the RequestContext `CellsContextMiddleware` opened for the request before the guards that
 * follow it, the interceptors, the pipes and the handler run: a middleware after it that resumes
 * `next()` from another async context (a shared client created inside an earlier request, as session
 * stores and rate limiters are) would leave them in that other request's context. Always allows the
 * request. `CellsModule.forRoot` registers it as the first `APP_GUARD` of the module tree it is in.
 *
 * Nest runs the global guards first: the `APP_GUARD`s in the order their modules are scanned (the
 * root module's before those of the modules it imports), then those of `app.useGlobalGuards`. A
 * guard that runs before this one sees the context the middleware left; read the request's context
 * there with `requestContextOf(request)`. This guard re-enters the context for the interceptors
 * before `CellsContextInterceptor` only while no guard before it awaited; the later guards, the
 * pipes and the handler get it in any case.
 *
 * Nor can a guard enter the OpenTelemetry context of the request: where the one active in this
 * guard is another request's, the library's own spans of the guards that follow (a routed call of
 * an auth guard) still join the request's trace, but spans a guard starts itself join the trace
 * active there. `CellsContextInterceptor` restores the request's OpenTelemetry context for the
 * interceptors after it, the pipes and the handler.
 */
@Injectable()
export class CellsContextGuard implements CanActivate {
  canActivate(context: ExecutionContext): boolean {
    if (context.getType() !== 'http') return true;
    const remembered = rememberedOf(rawRequest(context.switchToHttp().getRequest()));
    if (remembered === undefined) return true;
    const { ctx, otel } = remembered;
    // A guard cannot enter an OpenTelemetry context as it enters the RequestContext: where the one
    // active here is not the request's (another request's, resumed by a shared client), the
    // library parents its spans to the request's own instead, until CellsContextInterceptor runs
    // the rest in it.
    ctx[kLostTrace] = otel === undefined ? undefined : lostTrace(otel);
    enterInternal(ctx);
    return true;
  }
}

/**
 * The OpenTelemetry context active here and the request's `own`, when the active one is in
 * another trace than `own` (or in one where `own` is in none, or the reverse); a span of the
 * request's own trace, an instrumentation's, is kept.
 */
function lostTrace(own: Context): LostTrace | undefined {
  const api = otelApi();
  const active = api?.context.active();
  if (api === undefined || active === undefined || active === own) return undefined;
  // Both in no trace, or in the same one: nothing was lost.
  if (api.trace.getSpanContext(active)?.traceId === api.trace.getSpanContext(own)?.traceId) return undefined;
  return { foreign: active, own };
}
