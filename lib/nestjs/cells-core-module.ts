import { Global, Inject, Module, type DynamicModule, type OnApplicationShutdown, type Provider } from '@nestjs/common';
import { APP_GUARD, APP_INTERCEPTOR } from '@nestjs/core';
import { Cells } from '../cells';
import type { CellsOptions } from '../cells-options';
import { CellsContextGuard } from './context-guard';
import { CellsContextInterceptor } from './context-interceptor';
import type { CellsModuleAsyncOptions } from './module-options';

/** The injection token of the options `CellsModule.forRoot` / `forRootAsync` was given. */
export const CELLS_OPTIONS = Symbol('typeorm-cells.CellsOptions');

/**
 * The global module that owns the one `Cells` of the application: created and initialised while
 * the application initialises (before any provider that injects it), destroyed on shutdown.
 * @internal Imported through `CellsModule.forRoot` / `forRootAsync`.
 */
@Global()
@Module({})
export class CellsCoreModule implements OnApplicationShutdown {
  constructor(@Inject(Cells) private readonly cells: Cells) {}

  static forRoot(options: CellsOptions): DynamicModule {
    return CellsCoreModule.with([{ provide: CELLS_OPTIONS, useValue: options }]);
  }

  static forRootAsync(options: CellsModuleAsyncOptions): DynamicModule {
    return CellsCoreModule.with(
      [{ provide: CELLS_OPTIONS, useFactory: options.useFactory, inject: options.inject ?? [] }],
      options.imports,
    );
  }

  private static with(optionsProviders: Provider[], imports: DynamicModule['imports'] = []): DynamicModule {
    return {
      module: CellsCoreModule,
      global: true,
      imports,
      providers: [
        ...optionsProviders,
        {
          provide: Cells,
          // An async factory: Nest awaits it before it builds anything that injects Cells, so a
          // provider's onModuleInit can already route calls.
          useFactory: (options: CellsOptions) => new Cells(options).initialize(),
          inject: [CELLS_OPTIONS],
        },
        { provide: APP_GUARD, useClass: CellsContextGuard },
        { provide: APP_INTERCEPTOR, useClass: CellsContextInterceptor },
      ],
      exports: [Cells, CELLS_OPTIONS],
    };
  }

  /**
   * Destroys `Cells` on `app.close()` and, with `app.enableShutdownHooks()`, on SIGTERM/SIGINT:
   * running calls finish (up to `shutdownTimeoutMs`), then every connection closes.
   */
  async onApplicationShutdown(): Promise<void> {
    await this.cells.destroy();
  }
}
