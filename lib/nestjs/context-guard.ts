import { Injectable, type CanActivate, type ExecutionContext } from '@nestjs/common';
import { enterInternal } from '../context';
import { contextOfRequest } from './request-contexts';
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
 */
@Injectable()
export class CellsContextGuard implements CanActivate {
  canActivate(context: ExecutionContext): boolean {
    if (context.getType() !== 'http') return true;
    const ctx = contextOfRequest(rawRequest(context.switchToHttp().getRequest()));
    if (ctx !== undefined) enterInternal(ctx);
    return true;
  }
}
