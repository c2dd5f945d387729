import { Module, type DynamicModule, type Provider } from '@nestjs/common';
import type { EntityTarget, ObjectLiteral } from 'typeorm';
import { Cells } from '../cells';
import type { CellsOptions } from '../cells-options';
import type { DatabaseSelector } from '../repository';
import { CellsCoreModule } from './cells-core-module';
import type { CellsModuleAsyncOptions } from './module-options';
import { getCellsRepositoryToken } from './repository-token';

/**
 * typeorm-cells for NestJS, as `TypeOrmModule` is for TypeORM: `forRoot` provides the application's
 * `Cells` (global), `forFeature` the routed repositories of a feature module.
 */
@Module({})
export class CellsModule {
  /**
   * Provides `Cells` to the whole application: created from `options`, initialised while the
   * application initialises (a failure there fails `NestFactory.create` / `compile()`), destroyed
   * on `app.close()` or, with `enableShutdownHooks()`, on a shutdown signal. Also registers
   * `CellsContextGuard` and `CellsContextInterceptor` globally.
   * @throws InvalidArgumentError for invalid options (when the application initialises).
   */
  static forRoot(options: CellsOptions): DynamicModule {
    return { module: CellsModule, imports: [CellsCoreModule.forRoot(options)] };
  }

  /** `forRoot` with options from a factory and its injected dependencies (a config service, say). */
  static forRootAsync(options: CellsModuleAsyncOptions): DynamicModule {
    return { module: CellsModule, imports: [CellsCoreModule.forRootAsync(options)] };
  }

  /**
   * Provides the routed repository of each of `entities` on `db` to the importing module, for
   * `@InjectCellsRepository(entity, db)`. The entities of `'main'` must be among the `entities`
   * option of `forRoot`; those of `'api'` are the API database's (CellMapping, InstanceMapping...).
   * @param db `'main'` (default: the cell of the current request context) or `'api'`.
   * @throws InvalidArgumentError when `db` is not `'api'` or `'main'`.
   */
  static forFeature(entities: ReadonlyArray<EntityTarget<ObjectLiteral>>, db: DatabaseSelector = 'main'): DynamicModule {
    const providers: Provider[] = entities.map((entity) => ({
      provide: getCellsRepositoryToken(entity, db),
      useFactory: (cells: Cells) => cells.getRepository(entity, db),
      inject: [Cells],
    }));
    return { module: CellsModule, providers, exports: providers };
  }
}
