import { Injectable, type CallHandler, type ExecutionContext, type NestInterceptor } from '@nestjs/common';
import type { Observable } from 'rxjs';
import { runInternal } from '../context';
import { contextOfRequest } from './request-contexts';
import { rawRequest } from './request-headers';

/**
 * Runs each HTTP handler in the RequestContext `CellsContextMiddleware` opened for its request, also
 * when something between them called back from another async context (a middleware that answers
 * through a shared client, as session stores and rate limiters do), which would leave the handler
 * outside any context. `CellsModule.forRoot` registers it as a global interceptor.
 */
@Injectable()
export class CellsContextInterceptor implements NestInterceptor {
  intercept(context: ExecutionContext, next: CallHandler): Observable<unknown> {
    if (context.getType() !== 'http') return next.handle();
    const ctx = contextOfRequest(rawRequest(context.switchToHttp().getRequest()));
    // Nest binds the handler to the async context in which handle() is called.
    return ctx === undefined ? next.handle() : runInternal(ctx, () => next.handle());
  }
}
