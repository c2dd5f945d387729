import { resolve } from 'node:path';

/**
 * TypeORM's PostgresDriver looks for node-postgres' optional native bindings (`pg-native`) in every
 * DataSource it constructs, and uses them when they load (`pg.native`). Where they are not installed
 * (the usual case) each DataSource pays two failed `require`s, a walk over every node_modules folder
 * up to the root and two thrown errors: about 0.1 to 0.3 ms of CPU, for every cell opened. The answer
 * is the same for the whole process, so it is looked up once, the way TypeORM does (by name, then
 * under the working directory's node_modules), and handed to every DataSource as its `nativeDriver`:
 * the module when it loads (TypeORM then uses `pg.native`, as before), `false` when it does not
 * (TypeORM then skips the look-up). @internal
 */
let found: { module: unknown } | undefined;

/** The `nativeDriver` option for TypeORM: pg-native when it can be loaded, else `false`. @internal */
export function pgNativeDriver(): unknown {
  found ??= { module: loadPgNative() };
  return found.module;
}

function loadPgNative(): unknown {
  for (const id of ['pg-native', resolve(`${process.cwd()}/node_modules/pg-native`)]) {
    try {
      // eslint-disable-next-line @typescript-eslint/no-require-imports
      return require(id) as unknown;
    } catch {
      // Not installed there: try the next place, as TypeORM's PlatformTools.load does.
    }
  }
  return false;
}
