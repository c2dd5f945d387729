import { AsyncResource } from 'node:async_hooks';
import {
  Inject,
  Injectable,
  SetMetadata,
  UseInterceptors,
  applyDecorators,
  type CallHandler,
  type ExecutionContext,
  type NestInterceptor,
} from '@nestjs/common';
import { Reflector } from '@nestjs/core';
import { from, mergeMap, type Observable } from 'rxjs';
import { Cells } from '../cells';
import { targetCell } from '../context';
import { InvalidArgumentError } from '../errors';
import { MissingRouteParameterError } from './errors';
import { subscribedIn } from './subscribed-in';

/** What a handler is targeted by: the cell of an instance, or a cell, named by a route parameter. */
interface CellTarget {
  by: 'instance' | 'cell';
  param: string;
}

const CELL_TARGET = Symbol('typeorm-cells.cellTarget');

/**
 * Runs the handler targeted at the cell that holds the instance whose uuid is route parameter
 * `param` (`@Get(':uuid') @TargetInstanceCell('uuid')`), looked up through the cached
 * InstanceMapping, as `cells.targetInstanceCell`. Under `CellsExceptionFilter`, an unknown or
 * unplaced instance answers 404 and a malformed uuid 400; a route without parameter `param` fails with
 * MissingRouteParameterError (500).
 */
export function TargetInstanceCell(param: string): MethodDecorator & ClassDecorator {
  return targetBy({ by: 'instance', param });
}

/**
 * Runs the handler targeted at the cell whose uuid or name is route parameter `param`
 * (`@Get('cells/:cell/servers') @TargetCell('cell')`), as `targetCell`. Under `CellsExceptionFilter`,
 * an unknown cell answers 404, a cell whose stored connection URL is malformed 503; a route without
 * parameter `param` fails with MissingRouteParameterError (500).
 */
export function TargetCell(param: string): MethodDecorator & ClassDecorator {
  return targetBy({ by: 'cell', param });
}

function targetBy(target: CellTarget): MethodDecorator & ClassDecorator {
  if (typeof target.param !== 'string' || target.param === '') {
    throw new InvalidArgumentError('The route parameter of @TargetInstanceCell / @TargetCell must be a non-empty string.');
  }
  return applyDecorators(SetMetadata(CELL_TARGET, target), UseInterceptors(CellTargetInterceptor));
}

/**
 * The interceptor behind `@TargetInstanceCell` and `@TargetCell`: resolves the cell, then runs the
 * handler in a copy of the request context pointed at it.
 * @internal
 */
@Injectable()
export class CellTargetInterceptor implements NestInterceptor {
  constructor(
    @Inject(Cells) private readonly cells: Cells,
    @Inject(Reflector) private readonly reflector: Reflector,
  ) {}

  intercept(context: ExecutionContext, next: CallHandler): Observable<unknown> {
    const target = this.reflector.getAllAndOverride<CellTarget | undefined>(CELL_TARGET, [context.getHandler(), context.getClass()]);
    if (target === undefined) return next.handle();
    const params = (context.switchToHttp().getRequest() as { params?: Record<string, unknown> }).params ?? {};
    const value = params[target.param];
    if (typeof value !== 'string') {
      throw new MissingRouteParameterError(target.param, `${context.getClass().name}.${context.getHandler().name}`);
    }
    const cell = target.by === 'instance' ? this.cells.mappings.instanceCell(value) : this.cells.mappings.cell(value);
    // Nest binds the handler to the async context in which handle() is called; the lookup resolves
    // where Nest subscribed, which may be another request's async context (its OpenTelemetry
    // context too): hand the cell over in this one, and subscribe to the handler's observable in
    // the targeted context, so that what it starts on subscription (an @Sse() interval) keeps it.
    return from(cell).pipe(
      // mergeMap subscribes after this callback returned: the copy is made in the bound context.
      mergeMap(AsyncResource.bind((found: Awaited<typeof cell>) => subscribedIn(AsyncResource.bind((fn) => targetCell(found, fn)), () => next.handle()))),
    );
  }
}
