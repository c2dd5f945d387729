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
 * How long a config file may take to give its options, in ms, unless `--config-timeout` says
 * otherwise: its top-level code, top-level `await`, and the promise its exported function returns.
 * @default 60000
 */
export const DEFAULT_CONFIG_TIMEOUT_MS = 60_000;

/**
 * Loads the `CellsOptions` a config file exports: its default export or `module.exports`, either
 * the options themselves or a (possibly async) function returning them. Every form (`.ts`, `.mts`,
 * `.cts`, `.js`, `.mjs`, `.cjs`; CommonJS or ESM, ESM imports of `./x.js` siblings written in
 * TypeScript included) is loaded through jiti, which transpiles TypeScript on the fly with
 * decorators and their metadata (as TypeORM entities need) and needs no `typescript` package.
 *
 * The promise (or thenable) an exported function returns is awaited; options that are themselves
 * a thenable (a `then` method) are refused, as awaiting them would wait on that method rather
 * than load them. The options' own enumerable properties are read once, here; a getter or Proxy
 * trap that throws fails the load.
 *
 * @param timeoutMs - longest wait for the file to give its options, in ms; 0: no limit.
 * Default: `DEFAULT_CONFIG_TIMEOUT_MS`.
 * @throws ConfigFileError when the file fails to load, throws while its exports are read, never
 * settles (nothing is left to settle it) or not within `timeoutMs`, exports a TypeORM DataSource,
 * or exports no options with an `api` database. Its messages have passwords masked.
 */
export async function loadConfig(
  file: string,
  timeoutMs = DEFAULT_CONFIG_TIMEOUT_MS,
): Promise<CellsOptions> {
  const exported = await settled(
    file,
    timeoutMs,
    Promise.resolve().then(() => configLoader(file).import(file)),
    () =>
      'its top-level code never finished (a top-level await of a promise that never settles?), or ' +
      'it exports a then() function, which makes the module a thenable that import() awaits, and ' +
      'that then() never called back',
  ).catch((error: unknown) => {
    if (error instanceof ConfigFileError) throw error;
    throw new ConfigFileError(file, `loading it failed: ${messageOf(error, 'no message')}`, { cause: error });
  });
  const value = read(file, 'reading its exports', () => defaultExport(exported));
  let options = value;
  const isFunction = read(
    file,
    'reading its exports',
    () => typeof value === 'function' && !InstanceChecker.isDataSource(value),
  );
  if (isFunction) {
    let returned: unknown;
    options = await settled(
      file,
      timeoutMs,
      Promise.resolve().then(() => {
        returned = (value as () => unknown)();
        return returned;
      }),
      () =>
        isThenable(returned) && !(returned instanceof Promise)
          ? `its exported function returned an object with a then() method, which is awaited as a promise, and that then() never called back`
          : `the promise its exported function returned never settled`,
    ).catch((error: unknown) => {
      if (error instanceof ConfigFileError) throw error;
      throw new ConfigFileError(file, `its exported function threw: ${messageOf(error, 'no message')}`, {
        cause: error,
      });
    });
  }
  return read(file, 'reading its options', () => checkOptions(file, exported, options));
}

/** The Cells options in `value` (the settled export), copied, or why there are none. */
function checkOptions(file: string, exported: unknown, value: unknown): CellsOptions {
  if (InstanceChecker.isDataSource(value) || exportsDataSource(exported)) {
    throw new ConfigFileError(
      file,
      `it exports a TypeORM DataSource, which names one database; the typeorm-cells CLI needs the ` +
        `Cells options instead, which name the API database and the cells' entities and migrations: ` +
        `export default { api: 'postgres://user:password@host:5432/api', entities: [...], migrations: [...] }. ` +
        `Keep a DataSource file (pointing at one cell) for TypeORM's own CLI, e.g. typeorm migration:generate`,
    );
  }
  if (value === null || typeof value !== 'object') {
    throw new ConfigFileError(
      file,
      `it must export the Cells options (export default or module.exports), at least { api, entities }`,
    );
  }
  // Read once: what the getters and traps of the export give now is what every command uses, and
  // returning a plain copy from the async loadConfig reads no getter or trap later.
  const options: Record<string, unknown> = { ...value };
  if ('api' in options && (options.api === undefined || options.api === '')) {
    throw new ConfigFileError(
      file,
      `its 'api' option is ${options.api === '' ? 'empty' : 'undefined'}: it names the API database (a postgres:// URL ` +
        `or TypeORM options). Is the environment variable it reads (e.g. process.env.CELLS_API_URL) unset?`,
    );
  }
  if (typeof options.then === 'function') {
    throw new ConfigFileError(
      file,
      `its options have a then() method, which makes them a thenable that await treats as a ` +
        `promise of other options; remove it (for options known only later, export an async ` +
        `function returning them)`,
    );
  }
  if (!('api' in options)) {
    throw new ConfigFileError(
      file,
      `it must export the Cells options (export default or module.exports), at least { api, entities }`,
    );
  }
  return options as unknown as CellsOptions;
}

/**
 * Runs `fn`, which reads the config's exports: a getter or Proxy trap there runs the config's own
 * code, whose errors become a ConfigFileError naming the file. Synchronous: an async function
 * returning the export would read its `then` outside the try.
 */
function read<T>(file: string, doing: string, fn: () => T): T {
  try {
    return fn();
  } catch (error) {
    if (error instanceof ConfigFileError) throw error;
    throw new ConfigFileError(file, `${doing} threw: ${messageOf(error, 'no message')}`, { cause: error });
  }
}

/**
 * `promise`, or a ConfigFileError saying `stall()` when it has not settled within `timeoutMs` (0:
 * no limit) or when the event loop empties first: nothing is left that could settle it, and
 * without this the process would exit 0 having done nothing. The timer is unref'd so that the
 * second case is seen at once.
 */
function settled<T>(
  file: string,
  timeoutMs: number,
  promise: Promise<T>,
  stall: () => string,
): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const fail = (reason: string): void => {
      done();
      reject(new ConfigFileError(file, reason));
    };
    const why = (): string => {
      try {
        return stall();
      } catch {
        return 'a promise it awaits never settled';
      }
    };
    const onEmptyLoop = (): void => fail(`it never settled, so the command did nothing: ${why()}`);
    const timer =
      timeoutMs > 0
        ? setTimeout(
            () => fail(`it did not settle within ${timeoutMs} ms (--config-timeout): ${why()}`),
            timeoutMs,
          ).unref()
        : undefined;
    const done = (): void => {
      clearTimeout(timer);
      process.off('beforeExit', onEmptyLoop);
    };
    process.on('beforeExit', onEmptyLoop);
    promise.then(
      (value) => {
        done();
        resolve(value);
      },
      (error: unknown) => {
        done();
        reject(error);
      },
    );
  });
}

function isThenable(value: unknown): boolean {
  return (
    value !== null &&
    (typeof value === 'object' || typeof value === 'function') &&
    typeof (value as { then?: unknown }).then === 'function'
  );
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
