import { Module, type DynamicModule, type MiddlewareConsumer, type NestModule } from '@nestjs/common';
import { APP_FILTER } from '@nestjs/core';
import { Cells, type CellsOptions } from '../../lib';
import { CellsContextMiddleware, CellsExceptionFilter, CellsModule } from '../../lib/nestjs';
import { Server } from '../express/entities/Server';
import { Placement } from '../express/placement';
import { HttpErrorFilter } from './http-error.filter';
import { LIST_TIMEOUT_MS, ServersController } from './servers.controller';

/** Options of `AppModule.register`. */
export interface AppModuleOptions {
  /** Options of the app's `Cells`; their `entities` must include the example's `Server`. */
  cells: CellsOptions;
  /** How long `GET /servers` waits for each cell before listing it in `unreachable_cells`. Default: 3000. */
  listTimeoutMs?: number;
}

/** The example NestJS app: the servers API of the Express example, over the same cells. */
@Module({})
export class AppModule implements NestModule {
  static register(options: AppModuleOptions): DynamicModule {
    return {
      module: AppModule,
      imports: [CellsModule.forRoot(options.cells), CellsModule.forFeature([Server])],
      controllers: [ServersController],
      providers: [
        { provide: Placement, useFactory: (cells: Cells) => new Placement(cells), inject: [Cells] },
        { provide: LIST_TIMEOUT_MS, useValue: options.listTimeoutMs ?? 3000 },
        // Registered globally, so the 400 of the context middleware is answered by the filter too.
        { provide: APP_FILTER, useClass: CellsExceptionFilter },
        { provide: APP_FILTER, useClass: HttpErrorFilter },
      ],
    };
  }

  configure(consumer: MiddlewareConsumer): void {
    consumer.apply(CellsContextMiddleware).forRoutes('*');
  }
}
