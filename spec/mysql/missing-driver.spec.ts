import { execFile } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { REPO_ROOT } from '../../dev/repo-root';
import { BUILD_ERROR_VARIABLE } from '../support/build';
import { runCli } from '../support/cli';
import { createMixedFleet, type MixedFleet } from '../support/mixed-fleet';
import { describeMysql } from '../support/mysql';

/** Preloaded with `-r`: `require('mysql2')` fails as it does where the package is not installed. */
const NO_MYSQL2_HOOK = `
const Module = require('node:module');
const resolve = Module._resolveFilename;
Module._resolveFilename = function (request, ...rest) {
  if (request === 'mysql2' || request.startsWith('mysql2/')) {
    const error = new Error("Cannot find module '" + request + "'");
    error.code = 'MODULE_NOT_FOUND';
    throw error;
  }
  return resolve.call(this, request, ...rest);
};
`;

/** Calls a PostgreSQL and a MariaDB cell in one process (the built library) and prints what each did. */
const CHILD = `
const { EntitySchema } = require(${JSON.stringify(require.resolve('typeorm', { paths: [REPO_ROOT] }))});
const { Cells, targetCell } = require(${JSON.stringify(join(REPO_ROOT, 'dist', 'lib'))});
const Gadget = new EntitySchema({ name: 'Gadget', tableName: 'gadgets', columns: { uuid: { type: 'varchar', length: 36, primary: true } } });
(async () => {
  const [api, pgCell, myCell] = process.argv.slice(2);
  const cells = new Cells({ api, entities: [Gadget] });
  await cells.initialize();
  const repo = cells.getRepository(Gadget);
  const outcome = async (uuid) => {
    try {
      return { count: await targetCell(uuid, () => repo.count()) };
    } catch (error) {
      return { name: error.name, code: error.code, driverPackage: error.driverPackage, message: error.message };
    }
  };
  const result = { mariadb: await outcome(myCell), pg: await outcome(pgCell), mysql2Loaded: Object.keys(require.cache).some((k) => k.includes('/mysql2/')) };
  await cells.destroy();
  console.log(JSON.stringify(result));
})().catch((error) => { console.error(error); process.exit(1); });
`;

describeMysql('a MariaDB cell where mysql2 is not installed', () => {
  let fleet: MixedFleet;
  let dir: string;

  beforeAll(async () => {
    fleet = await createMixedFleet('my_nodriver', { pgCells: 1, mariadbCells: 1 });
    dir = await mkdtemp(join(tmpdir(), 'cells-no-mysql2-'));
    await writeFile(join(dir, 'no-mysql2.js'), NO_MYSQL2_HOOK);
    await writeFile(join(dir, 'child.js'), CHILD);
  }, 60_000);
  afterAll(async () => {
    await fleet?.destroy();
    if (dir !== undefined) await rm(dir, { recursive: true, force: true });
  }, 60_000);

  it('fails the MariaDB cell with CELLS_MISSING_DRIVER naming mysql2 while a PostgreSQL cell in the same process works', async () => {
    expect(process.env[BUILD_ERROR_VARIABLE]).toBeUndefined();
    const { stdout } = await promisify(execFile)(
      process.execPath,
      ['-r', join(dir, 'no-mysql2.js'), join(dir, 'child.js'), fleet.apiUrl, fleet.pg[0]!.mapping.uuid, fleet.mariadb[0]!.mapping.uuid],
      { cwd: REPO_ROOT, timeout: 30_000 },
    );
    const result = JSON.parse(stdout.trim().split('\n').pop()!) as {
      mariadb: { name?: string; code?: string; driverPackage?: string; message?: string };
      pg: { count?: number };
      mysql2Loaded: boolean;
    };
    expect(result.mariadb).toMatchObject({ name: 'MissingDriverError', code: 'CELLS_MISSING_DRIVER', driverPackage: 'mysql2' });
    expect(result.mariadb.message).toContain("'mysql2'");
    // It names the cell that needs the driver (its route label: name and uuid).
    expect(result.mariadb.message).toContain(fleet.mariadb[0]!.mapping.uuid);
    expect(result.pg).toEqual({ count: 0 });
    expect(result.mysql2Loaded).toBe(false);
  }, 60_000);

  it('the CLI on a MariaDB API database names the missing package, not its config file or TypeORM', async () => {
    // A MariaDB database (the cell's; nothing is written: the CLI fails before it connects).
    const apiUrl = fleet.mariadb[0]!.db.url;
    await writeFile(join(dir, 'cells.config.js'), `module.exports = { api: ${JSON.stringify(apiUrl)}, entities: [] };\n`);
    const env = { NODE_OPTIONS: `--require ${join(dir, 'no-mysql2.js')}` };
    for (const args of [['api-db', 'status'], ['cell', 'list']]) {
      const result = await runCli(args, dir, { env });
      expect(result.code).toBe(1);
      expect(result.stderr).toMatch(/^error: The API database needs the 'mysql2' package, which is not installed\. Install it next to typeorm-cells: npm install mysql2\n$/);
    }
  }, 60_000);
});
