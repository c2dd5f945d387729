import type { InjectionToken, ModuleMetadata, OptionalFactoryDependency } from '@nestjs/common';
import type { CellsOptions } from '../cells-options';

/** Options of `CellsModule.forRootAsync`: the `CellsOptions` come from a factory with injected dependencies. */
export interface CellsModuleAsyncOptions {
  /** Modules whose exported providers `inject` names (a ConfigModule, say). Default: none. */
  imports?: ModuleMetadata['imports'];
  /** Returns the options of `new Cells()`; may be async. Called once, while the application initialises. */
  useFactory: (...args: never[]) => CellsOptions | Promise<CellsOptions>;
  /** The providers passed to `useFactory`, in order. Default: none. */
  inject?: Array<InjectionToken | OptionalFactoryDependency>;
}
