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
 * Nest runs guards one after another; this one re-enters the context for what follows it only while
 * no guard before it awaited (Nest's first global guards are the `APP_GUARD`s in the order their
 * modules are scanned, then those of `app.useGlobalGuards`). A guard that runs earlier reads the
 * request's context with `requestContextOf(request)`.
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
