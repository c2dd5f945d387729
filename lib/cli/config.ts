import { existsSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { resolve } from 'node:path';
import type { CellsOptions } from '../cells';
import { ConfigFileError, InvalidArgumentError } from '../errors';

/** The files looked for in the working directory when `--config` is not given, in this order. */
export const DEFAULT_CONFIG_FILES = [
  'cells.config.ts',
  'cells.config.js',
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
 * the options themselves or a (possibly async) function returning them. A `.ts` file is
 * transpiled on the fly with the `typescript` package found from the file's folder.
 * @throws ConfigFileError when the file fails to load or exports no options with an `api` database.
 */
export async function loadConfig(file: string): Promise<CellsOptions> {
  if (file.endsWith('.ts')) registerTypeScript(file);
  let exported: unknown;
  try {
    exported = createRequire(file)(file) as unknown;
  } catch (error) {
    if (error instanceof ConfigFileError) throw error;
    throw new ConfigFileError(file, `loading it failed: ${messageOf(error)}`, { cause: error });
  }
  let value = defaultExport(exported);
  if (typeof value === 'function') {
    try {
      value = await (value as () => unknown)();
    } catch (error) {
      throw new ConfigFileError(file, `its exported function threw: ${messageOf(error)}`, {
        cause: error,
      });
    }
  }
  if (value === null || typeof value !== 'object' || !('api' in value) || value.api === undefined) {
    throw new ConfigFileError(
      file,
      `it must export the Cells options (module.exports or export default), at least { api, entities }`,
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

function messageOf(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

/** The part of the `typescript` package the require hook uses. */
interface TypeScriptTranspiler {
  transpileModule(
    source: string,
    options: { fileName: string; compilerOptions: Record<string, unknown> },
  ): { outputText: string };
  ModuleKind: { CommonJS: unknown };
  ScriptTarget: { ES2022: unknown };
}

/**
 * Lets `require` load `.ts` files (the config and what it imports) by transpiling each one alone,
 * without type checking, as TypeORM entities need: decorators and their metadata, CommonJS.
 * Leaves an existing hook (ts-node, tsx) in place.
 */
function registerTypeScript(configFile: string): void {
  const requireFromConfig = createRequire(configFile);
  // require.extensions is deprecated but is still the supported way to hook CommonJS loading.
  const extensions = requireFromConfig.extensions;
  if (extensions['.ts'] !== undefined) return;
  let typescriptPath: string;
  try {
    typescriptPath = requireFromConfig.resolve('typescript');
  } catch {
    throw new ConfigFileError(
      configFile,
      `it is TypeScript, and the 'typescript' package cannot be found from its folder. ` +
        `Compile the config to JavaScript and pass the .js file, or install typescript (npm install --save-dev typescript)`,
    );
  }
  const ts = requireFromConfig(typescriptPath) as TypeScriptTranspiler;
  const compilerOptions = {
    module: ts.ModuleKind.CommonJS,
    target: ts.ScriptTarget.ES2022,
    esModuleInterop: true,
    experimentalDecorators: true,
    emitDecoratorMetadata: true,
    // TypeORM decorators define columns on the prototype; own `undefined` fields would hide them.
    useDefineForClassFields: false,
    inlineSourceMap: true,
  };
  extensions['.ts'] = (module, filename) => {
    const { outputText } = ts.transpileModule(readFileSync(filename, 'utf8'), {
      fileName: filename,
      compilerOptions,
    });
    (module as unknown as { _compile(code: string, file: string): void })._compile(
      outputText,
      filename,
    );
  };
}
