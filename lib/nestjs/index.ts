/**
 * typeorm-cells for NestJS (`typeorm-cells/nestjs`): the module, routed repositories by injection,
 * the request-context middleware, the targeting decorators and the exception filter. Needs
 * `@nestjs/common` and `@nestjs/core` 11 (Node 20) or 12 (Node 22+); the main entry never loads them.
 */
import 'reflect-metadata';

export { CellsModule } from './cells-module';
export { CELLS_OPTIONS } from './cells-core-module';
export type { CellsModuleAsyncOptions } from './module-options';
export { InjectCellsRepository, getCellsRepositoryToken } from './repository-token';
export { CellsContextMiddleware } from './context-middleware';
export { CellsContextInterceptor } from './context-interceptor';
export { CellsContextGuard } from './context-guard';
export { requestContextOf } from './request-contexts';
export { CELLS_CONTEXT_HEADERS, ADMIN_ROLE } from './request-headers';
export { TargetCell, TargetInstanceCell } from './target-cell';
export { CELLS_ERROR_STATUS, CellsExceptionFilter } from './exception-filter';
export type { CellsErrorBody } from './exception-filter';
export { InvalidHeaderError, MissingRouteParameterError } from './errors';
