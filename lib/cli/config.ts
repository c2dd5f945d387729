import { existsSync } from 'node:fs';
import { resolve } from 'node:path';
import { createJiti } from 'jiti';
import { InstanceChecker } from 'typeorm';
import type { CellsOptions } from '../cells-options';
import { messageOf } from '../connection-errors';
import { InvalidArgumentError } from '../errors';
import { ConfigFileError } from './errors';

/**
 * The files looked for in the working directory when `--config` is not given, in this order:
 * TypeScript (CommonJS or ESM), then JavaScript (CommonJS or ESM).
 */
export const DEFAULT_CONFIG_FILES = [
  'cells.config.ts',
  'cells.config.mts',
  'cells.config.cts',
  'cells.config.js',
  'cells.config.mjs',
  'cells.config.cjs',
] as const;

/**
 * The config file to load: `explicit` resolved against `cwd`, else the first default file in `cwd`.
 * @throws InvalidArgumentError (a usage error) when the file does not exist.
 */
export function findConfigFile(explicit: string | undefined, cwd = process.cwd()): string {
  if (explicit !== undefined) {
    const file = resolve(cwd, explicit);
    if (!existsSync(file)) throw new InvalidArgumentError(`Config file ${file} does not exist.`);
    return file;
  }
  for (const name of DEFAULT_CONFIG_FILES) {
    const file = resolve(cwd, name);
    if (existsSync(file)) return file;
  }
  throw new InvalidArgumentError(
    `No config file: looked for ${DEFAULT_CONFIG_FILES.join(', ')} in ${cwd}. Pass --config <path>.`,
  );
}

/**
 * Loads the `CellsOptions` a config file exports: its default export or `module.exports`, either
 * the options themselves or a (possibly async) function returning them. Every form (`.ts`, `.mts`,
 * `.cts`, `.js`, `.mjs`, `.cjs`; CommonJS or ESM, ESM imports of `./x.js` siblings written in
 * TypeScript included) is loaded through jiti, which transpiles TypeScript on the fly with
 * decorators and their metadata (as TypeORM entities need) and needs no `typescript` package.
 * @throws ConfigFileError when the file fails to load, exports a TypeORM DataSource, or exports no
 * options with an `api` database.
 */
export async function loadConfig(file: string): Promise<CellsOptions> {
  let exported: unknown;
  try {
    exported = await configLoader(file).import(file);
  } catch (error) {
    throw new ConfigFileError(file, `loading it failed: ${messageOf(error, 'no message')}`, { cause: error });
  }
  let value = defaultExport(exported);
  if (typeof value === 'function' && !InstanceChecker.isDataSource(value)) {
    try {
      value = await (value as () => unknown)();
    } catch (error) {
      throw new ConfigFileError(file, `its exported function threw: ${messageOf(error, 'no message')}`, {
        cause: error,
      });
    }
  }
  if (InstanceChecker.isDataSource(value) || exportsDataSource(exported)) {
    throw new ConfigFileError(
      file,
      `it exports a TypeORM DataSource, which names one database; the typeorm-cells CLI needs the ` +
        `Cells options instead, which name the API database and the cells' entities and migrations: ` +
        `export default { api: 'postgres://user:password@host:5432/api', entities: [...], migrations: [...] }. ` +
        `Keep a DataSource file (pointing at one cell) for TypeORM's own CLI, e.g. typeorm migration:generate`,
    );
  }
  if (value !== null && typeof value === 'object' && 'api' in value && (value.api === undefined || value.api === '')) {
    throw new ConfigFileError(
      file,
      `its 'api' option is ${value.api === '' ? 'empty' : 'undefined'}: it names the API database (a postgres:// URL ` +
        `or TypeORM options). Is the environment variable it reads (e.g. process.env.CELLS_API_URL) unset?`,
    );
  }
  if (value === null || typeof value !== 'object' || !('api' in value) || value.api === undefined) {
    throw new ConfigFileError(
      file,
      `it must export the Cells options (export default or module.exports), at least { api, entities }`,
    );
  }
  return value as CellsOptions;
}

function defaultExport(exported: unknown): unknown {
  if (
    exported !== null &&
    typeof exported === 'object' &&
    'default' in exported &&
    exported.default !== undefined
  ) {
    return exported.default;
  }
  return exported;
}

/** Whether any export of the module is a TypeORM DataSource (`export const dataSource = ...`). */
function exportsDataSource(exported: unknown): boolean {
  if (exported === null || typeof exported !== 'object') return false;
  return Object.values(exported).some((value) => InstanceChecker.isDataSource(value));
}

/**
 * A jiti loader for one config file. Node's own type stripping (Node 22.6+) cannot load TypeORM
 * entities (no decorators, no decorator metadata), and the `typescript` package has no compiler
 * API from version 7 on, so neither can be the loader. No file cache: nothing is written to disk.
 */
function configLoader(file: string): ReturnType<typeof createJiti> {
  return createJiti(file, {
    fsCache: false,
    interopDefault: false,
    sourceMaps: true,
    transformOptions: { babel: { plugins: [decoratedFields] } },
  });
}

/** The parts of Babel's plugin API that `decoratedFields` uses. */
interface BabelApi {
  template: { statement: { ast(code: string): unknown } };
}
interface BabelPath<N> {
  node: N;
  traverse(visitor: Record<string, (path: BabelPath<never>) => void>): void;
}

/**
 * A Babel plugin that makes jiti's legacy-decorator output work for decorated class fields
 * (`@Column() name!: string`), as TypeORM entities declare them (jiti issue #367):
 * - before the other plugins run, it drops the `!` of decorated fields, which the decorator
 *   transform would give an initializer that Babel's TypeScript transform then refuses; the `!`
 *   only informs type checking;
 * - afterwards, it turns `_initializerWarningHelper` (which throws "Decorating class property
 *   failed" on every `new Entity()`, because jiti runs no class-properties transform) into what
 *   that transform does: the field gets its initializer's value, or `undefined`.
 */
function decoratedFields(api: BabelApi): object {
  return {
    visitor: {
      Program: {
        enter(program: BabelPath<unknown>) {
          program.traverse({
            ClassProperty(
              path: BabelPath<{ decorators?: unknown[] | null; definite?: boolean | null }>,
            ) {
              if (path.node.decorators?.length) path.node.definite = false;
            },
          });
        },
        exit(program: BabelPath<unknown>) {
          program.traverse({
            FunctionDeclaration(path: BabelPath<{ id?: { name: string } | null; body: unknown }>) {
              if (/^_initializerWarningHelper\d*$/.test(path.node.id?.name ?? '')) {
                path.node.body = api.template.statement.ast(
                  '{ return arguments[0].initializer ? arguments[0].initializer.call(arguments[1]) : void 0; }',
                );
              }
            },
          });
        },
      },
    },
  };
}
