import { randomBytes } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { createConnection, type Connection } from 'mysql2/promise';
import type { QueryRunner } from 'typeorm';
import type { CellMapping, CellsOptions } from '../lib';
import { cellDataSource, withDataSource } from '../lib/cli/migration-runner';
import { migrateLocked, mysqlMigrationLockName } from '../lib/migration-lock';
import { REPO_ROOT } from '../dev/repo-root';
import { API_MIGRATIONS } from '../migrations';
import {
  assertCliBuilt,
  cliTranscript,
  createCliWorld,
  createProject,
  createSentinelRole,
  runCli,
  type CliResult,
  type CliWorld,
  type SentinelRole,
} from './support/cli';
import { rowsIn } from './support/databases';
import { createMysqlTestDatabase, describeMysql, mysqlQuery, mysqlServerUrl, type MysqlTestDatabase } from './support/mysql';

// Issue 14: the CLI does for MySQL/MariaDB cells what it does for PostgreSQL cells: `db migrate`
// under a migration lock (GET_LOCK), `db status`, `cell create` verification, and no password in
// any output.

const MIGRATIONS = ['CreateGadgets1764072500000', 'AddGadgetColor1764072600000'];

/** A MariaDB user whose password is a sentinel that must never be printed. */
interface MysqlSentinel {
  user: string;
  password: string;
  urlFor(database: string, password?: string): string;
  drop(): Promise<void>;
}

async function createMysqlSentinel(): Promise<MysqlSentinel> {
  const suffix = randomBytes(5).toString('hex');
  const user = `cells_sentinel_${suffix}`;
  const password = `S3ntinel-my-${suffix}`;
  await mysqlQuery(`CREATE USER '${user}'@'%' IDENTIFIED BY '${password}'`);
  return {
    user,
    password,
    urlFor(database, given = password) {
      const url = new URL(mysqlServerUrl()!);
      return `mariadb://${user}:${encodeURIComponent(given)}@${url.host}/${database}`;
    },
    async drop() {
      await mysqlQuery(`DROP USER IF EXISTS '${user}'@'%'`);
    },
  };
}

/**
 * A config (JavaScript) whose two cell migrations run on both engines; the second sleeps
 * CELLS_SPEC_SLEEP_S seconds (default 0.3) so concurrent runners overlap, and the first fails on
 * the database named by CELLS_SPEC_FAIL_DB after creating its table.
 */
async function writeMixedConfig(dir: string, apiUrl: string): Promise<string> {
  const file = join(dir, 'mixed.config.js');
  await writeFile(
    file,
    `
const sleep = (q) => {
  const s = Number(process.env.CELLS_SPEC_SLEEP_S ?? '0.3');
  return q.query(q.connection.options.type === 'postgres' ? 'SELECT pg_sleep(' + s + ')' : 'SELECT SLEEP(' + s + ')');
};
class CreateGadgets1764072500000 {
  name = 'CreateGadgets1764072500000';
  async up(q) {
    await q.query('CREATE TABLE gadgets (id varchar(36) PRIMARY KEY)');
    if (q.connection.options.type !== 'postgres') {
      const { mysqlMigrationLockName } = require(${JSON.stringify(join(REPO_ROOT, 'dist', 'lib', 'migration-lock.js'))});
      const [row] = await q.query('SELECT IS_USED_LOCK(?) = CONNECTION_ID() AS holds', [mysqlMigrationLockName(await q.getCurrentDatabase())]);
      await q.query('CREATE TABLE lock_probe (holds int)');
      await q.query('INSERT INTO lock_probe (holds) VALUES (?)', [Number(row.holds)]);
    }
    if (await q.getCurrentDatabase() === process.env.CELLS_SPEC_FAIL_DB) throw new Error('migration failed on purpose');
  }
  async down(q) { await q.query('DROP TABLE gadgets'); }
}
class AddGadgetColor1764072600000 {
  name = 'AddGadgetColor1764072600000';
  async up(q) {
    await sleep(q);
    await q.query('ALTER TABLE gadgets ADD color varchar(20)');
  }
  async down(q) { await q.query('ALTER TABLE gadgets DROP COLUMN color'); }
}
module.exports = {
  api: ${JSON.stringify(apiUrl)},
  entities: [],
  migrations: [CreateGadgets1764072500000, AddGadgetColor1764072600000],
  connectTimeoutMs: 3000,
};
`,
  );
  return file;
}

async function mysqlApplied(database: string): Promise<string[]> {
  const tables = await mysqlQuery('SELECT 1 FROM information_schema.TABLES WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ?', [database, 'migrations']);
  if (tables.length === 0) return [];
  return (await mysqlQuery(`SELECT name FROM \`${database}\`.migrations ORDER BY id`)).map((r) => String(r.name));
}

async function pgApplied(url: string): Promise<string[]> {
  const [exists] = await rowsIn<{ t: string | null }>(url, `SELECT to_regclass('public.migrations')::text AS t`);
  if (exists?.t == null) return [];
  return (await rowsIn<{ name: string }>(url, 'SELECT name FROM migrations ORDER BY id')).map((r) => r.name);
}

interface Report {
  cells: { name: string; uuid: string; result: string; applied: string[]; pending?: string[]; error?: string }[];
}

function report(result: CliResult): Report {
  expect(result.stderr).toBe('');
  return JSON.parse(result.stdout) as Report;
}

describeMysql('the CLI with MySQL/MariaDB cells', () => {
  let role: SentinelRole;
  let sentinel: MysqlSentinel;
  let world: CliWorld;
  let config: string;
  const mysqlDbs: MysqlTestDatabase[] = [];
  let holder: Connection | undefined;

  /** A new MariaDB database the sentinel user may use, mapped as cell `name` unless `map` is false. */
  async function mysqlCell(name: string, map = true): Promise<{ db: MysqlTestDatabase; url: string; uuid?: string }> {
    const db = await createMysqlTestDatabase(`cli_${name}`, 'mariadb');
    mysqlDbs.push(db);
    await mysqlQuery(`GRANT ALL ON \`${db.name}\`.* TO '${sentinel.user}'@'%'`);
    const url = sentinel.urlFor(db.name);
    return map ? { db, url, uuid: await world.mapCell(name, url) } : { db, url };
  }

  const run = (args: string[], env: NodeJS.ProcessEnv = {}) =>
    runCli(['--config', config, ...args], world.project.dir, { env });

  beforeAll(async () => {
    assertCliBuilt();
    role = await createSentinelRole();
    sentinel = await createMysqlSentinel();
    world = await createCliWorld('cli_my', role, 2);
    config = await writeMixedConfig(world.project.dir, role.urlFor(world.api.name));
  });

  afterEach(async () => {
    await holder?.end().catch(() => undefined);
    holder = undefined;
  });

  afterAll(async () => {
    await world?.destroy();
    await Promise.all(mysqlDbs.map((db) => db.drop()));
    await sentinel?.drop();
    await role?.drop().catch(() => undefined);
  });

  it('cell create verifies a mariadb:// URL and maps the cell, warning of its literal password', async () => {
    const { url } = await mysqlCell('verified', false);
    const result = await run(['cell', 'create', '--name', 'verified', '--database-connection', url]);
    expect(result.code).toBe(0);
    expect(result.stderr).toMatch(/^warning: the URL mariadb:\/\/[^:]+:\*\*\*@[^\n]+ carries its password in plain text[^\n]*\n$/);
    expect(result.stdout).toMatch(/^Created cell 'verified' \([0-9a-f-]{36}\)\.\n$/);
    const listed = JSON.parse((await run(['cell', 'list', '--verbose', '--json'])).stdout) as { name: string; databaseConnection: string }[];
    expect(listed.find((c) => c.name === 'verified')?.databaseConnection).toContain(`mariadb://${sentinel.user}:***@`);
  });

  it('cell create verifies a mariadb:// URL whose password is a secret reference, resolved in its environment', async () => {
    const { db } = await mysqlCell('referenced', false);
    const url = new URL(sentinel.urlFor(db.name));
    url.password = '';
    const variable = `CELLS_CLI_MY_PW_${process.pid}`;
    const reference = `${url.toString()}?password=env:${variable}`;
    const wrong = await run(['cell', 'create', '--name', 'referenced', '--database-connection', reference], { [variable]: `${sentinel.password}-wrong` });
    expect(wrong.code).toBe(1);
    expect(wrong.stderr).toMatch(/^error: Cell 'referenced' is unreachable: .*Access denied[^\n]*\n$/);
    const result = await run(['cell', 'create', '--name', 'referenced', '--database-connection', reference], { [variable]: sentinel.password });
    expect(result).toMatchObject({ code: 0, stderr: '' });
    const listed = JSON.parse((await run(['cell', 'list', '--verbose', '--json'])).stdout) as { name: string; databaseConnection: string }[];
    expect(listed.find((c) => c.name === 'referenced')?.databaseConnection).toBe(reference);
    // Unmapped again: the fleet migrations below run without its variable.
    expect((await run(['cell', 'delete', 'referenced'])).code).toBe(0);
  });

  it('cell create refuses a MariaDB cell whose password is wrong, with a masked reason', async () => {
    const { db } = await mysqlCell('wrong-pw', false);
    const result = await run([
      'cell', 'create', '--name', 'wrong-pw', '--database-connection', sentinel.urlFor(db.name, `${sentinel.password}-wrong`),
    ]);
    expect(result.code).toBe(1);
    // Refused: one error line, no warning of the literal password (that comes after a write).
    expect(result.stderr).toMatch(/^error: Cell 'wrong-pw' is unreachable: .*Access denied.*--no-verify[^\n]*\n$/);
    // With its stack trace and causes too (checked by the transcript test below).
    const debug = await run([
      'cell', 'create', '--debug', '--json', '--name', 'wrong-pw', '--database-connection', sentinel.urlFor(db.name, `${sentinel.password}-wrong`),
    ]);
    expect(debug.code).toBe(1);
    expect(debug.stderr).toMatch(/CellVerificationError/);
  });

  it('cell create refuses a MariaDB cell on a closed port', async () => {
    const result = await run([
      'cell', 'create', '--name', 'closed', '--database-connection', `mariadb://${sentinel.user}:${sentinel.password}@127.0.0.1:1/nothing`,
    ]);
    expect(result.code).toBe(1);
    expect(result.stderr).toMatch(/^error: Cell 'closed' is unreachable: .*ECONNREFUSED.*--no-verify[^\n]*\n$/);
  });

  it('db migrate --all applies each migration exactly once to each cell of a mixed fleet, on the connection holding GET_LOCK', async () => {
    const mysqlCells = [await mysqlCell('fleet-my0'), await mysqlCell('fleet-my1')];
    const first = report(await run(['db', 'migrate', '--all', '--json']));
    const names = [...world.cells.map((c) => c.name), 'verified', 'fleet-my0', 'fleet-my1'];
    for (const name of names) expect(first.cells.find((c) => c.name === name)).toMatchObject({ result: 'migrated', applied: MIGRATIONS });
    for (const cell of world.cells) expect(await pgApplied(cell.db.url)).toEqual(MIGRATIONS);
    for (const { db } of mysqlCells) {
      expect(await mysqlApplied(db.name)).toEqual(MIGRATIONS);
      expect(await mysqlQuery(`SELECT holds FROM \`${db.name}\`.lock_probe`)).toEqual([{ holds: 1 }]);
    }
    const second = report(await run(['db', 'migrate', '--all', '--json']));
    expect(second.cells.every((c) => c.result === 'migrated' && c.applied.length === 0)).toBe(true);
    const status = await run(['db', 'fleet-status', '--json']);
    expect({ code: status.code, stderr: status.stderr }).toEqual({ code: 0, stderr: '' });
    const fleet = JSON.parse(status.stdout) as { newest: string; cells: { name: string; version: string | null; pending: number; lastRun: { state: string } | null }[] };
    expect(fleet.newest).toBe(MIGRATIONS.at(-1));
    for (const name of ['fleet-my0', 'fleet-my1', world.cells[0]!.name])
      expect(fleet.cells.find((c) => c.name === name)).toMatchObject({ version: MIGRATIONS.at(-1), pending: 0, lastRun: { state: 'succeeded' } });
  });

  it('two concurrent db migrate runs on one MariaDB cell serialize on GET_LOCK: both succeed, each migration applied once', async () => {
    const { db } = await mysqlCell('race');
    const env = { CELLS_SPEC_SLEEP_S: '1' };
    const runs = await Promise.all([
      run(['db', 'migrate', '--cell', 'race', '--json'], env),
      run(['db', 'migrate', '--cell', 'race', '--json'], env),
    ]);
    const rows = runs.map((r) => report(r).cells[0]! as Report['cells'][0] & { ms: number });
    expect(rows.map((r) => r.result)).toEqual(['migrated', 'migrated']);
    expect(rows.flatMap((r) => r.applied).sort()).toEqual([...MIGRATIONS].sort());
    // One applied both; the other waited for it (the 1 s migration included), then found nothing to apply.
    const [waiter, applier] = [...rows].sort((a, b) => a.applied.length - b.applied.length);
    expect([waiter!.applied.length, applier!.applied.length]).toEqual([0, 2]);
    expect(waiter!.ms).toBeGreaterThanOrEqual(900);
    expect(await mysqlApplied(db.name)).toEqual(MIGRATIONS);
  });

  it('db migrate fails a MariaDB cell whose migration lock another session holds past --lock-timeout', async () => {
    const { db } = await mysqlCell('locked');
    holder = await createConnection({ uri: mysqlServerUrl()!.replace(/^mariadb:/, 'mysql:') });
    const [[held]] = (await holder.query('SELECT GET_LOCK(?, 0) AS ok', [mysqlMigrationLockName(db.name)])) as unknown as [{ ok: number }[]];
    expect(held?.ok).toBe(1);
    const started = performance.now();
    const result = await run(['db', 'migrate', '--cell', 'locked', '--lock-timeout', '1000', '--json']);
    const ms = performance.now() - started;
    expect(result.code).toBe(1);
    const row = (JSON.parse(result.stdout) as Report).cells[0]!;
    expect(row).toMatchObject({ result: 'failed', error: expect.stringMatching(/held the migration lock for the 1000 ms/) });
    expect(result.stderr).toMatch(/^error: 1 of 1 cell\(s\) failed to migrate/);
    expect(await mysqlApplied(db.name)).toEqual([]);
    expect(ms).toBeGreaterThanOrEqual(1000);
    expect(ms).toBeLessThan(20_000);
  });

  it('db migrate reports a MariaDB migration that fails half-way in its row and migrates the next run', async () => {
    const { db } = await mysqlCell('half');
    const failed = await run(['db', 'migrate', '--cell', 'half', '--json'], { CELLS_SPEC_FAIL_DB: db.name });
    expect(failed.code).toBe(1);
    expect((JSON.parse(failed.stdout) as Report).cells[0]).toMatchObject({
      result: 'failed',
      error: expect.stringMatching(/migration failed on purpose/),
    });
    // MySQL DDL commits at once: the table is left behind, the migration is not recorded.
    expect(await mysqlApplied(db.name)).toEqual([]);
    await mysqlQuery(`DROP TABLE \`${db.name}\`.gadgets`);
    await mysqlQuery(`DROP TABLE \`${db.name}\`.lock_probe`);
    const again = report(await run(['db', 'migrate', '--cell', 'half', '--lock-timeout', '1000', '--json']));
    expect(again.cells[0]).toMatchObject({ result: 'migrated', applied: MIGRATIONS });
  });

  it('leaves the GET_LOCK released when a migration fails half-way, its DataSource still open', async () => {
    const { db, url } = await mysqlCell('released', false);
    class FailingHalfWay1764072700000 {
      name = 'FailingHalfWay1764072700000';
      async up(q: QueryRunner): Promise<void> {
        await q.query('CREATE TABLE half (id int)');
        throw new Error('failed half-way');
      }
      async down(): Promise<void> {}
    }
    const options: CellsOptions = { api: role.urlFor(world.api.name), entities: [], migrations: [FailingHalfWay1764072700000] };
    const cell = { uuid: '00000000-0000-4000-8000-000000000014', name: 'released', databaseConnection: url } as CellMapping;
    const label = "cell 'released'";
    const name = mysqlMigrationLockName(db.name);
    const freeNow = async () => Number((await mysqlQuery('SELECT IS_FREE_LOCK(?) AS free', [name]))[0]!.free);
    await withDataSource(cellDataSource(options, cell, 5000), label, async (ds) => {
      await expect(migrateLocked(ds, label, 5000)).rejects.toThrow('failed half-way');
      expect(await freeNow()).toBe(1);
      // The pool's connections are still open: the lock was given back, not dropped with its session.
      expect(ds.isInitialized).toBe(true);
    });
  });

  it('db migrate gives up on a table lock an application session holds on a MariaDB cell past --lock-timeout', async () => {
    const { db } = await mysqlCell('table-locked');
    expect((await run(['db', 'migrate', '--cell', 'table-locked'])).code).toBe(0);
    holder = await createConnection({ uri: mysqlServerUrl()!.replace(/^mariadb:/, 'mysql:') });
    await holder.query(`LOCK TABLES \`${db.name}\`.migrations WRITE`);
    const started = performance.now();
    const result = await runCli(['--config', config, 'db', 'migrate', '--cell', 'table-locked', '--lock-timeout', '1000', '--json'], world.project.dir, {
      timeoutMs: 30_000,
    });
    const ms = performance.now() - started;
    expect(result.code).toBe(1);
    expect((JSON.parse(result.stdout) as Report).cells[0]).toMatchObject({ result: 'failed', error: expect.stringMatching(/Lock wait timeout exceeded/) });
    expect(ms).toBeLessThan(20_000);
  });

  it('db status lists the applied and pending migrations of a MariaDB cell', async () => {
    const { db } = await mysqlCell('status');
    const before = report(await run(['db', 'status', '--cell', 'status', '--json']));
    expect(before.cells[0]).toMatchObject({ applied: [], pending: MIGRATIONS });
    expect((await run(['db', 'migrate', '--cell', 'status'])).code).toBe(0);
    const after = report(await run(['db', 'status', '--cell', 'status', '--json']));
    expect(after.cells[0]).toMatchObject({ applied: MIGRATIONS, pending: [] });
    expect(await mysqlApplied(db.name)).toEqual(MIGRATIONS);
  });

  it('db migrate and db status report a MariaDB cell with a wrong password or a closed port in its row, masked', async () => {
    const { db } = await mysqlCell('bad-pw-db', false);
    await world.mapCell('bad-pw', sentinel.urlFor(db.name, `${sentinel.password}-wrong`));
    await world.mapCell('bad-port', `mariadb://${sentinel.user}:${sentinel.password}@127.0.0.1:1/nothing`);
    for (const command of ['migrate', 'status']) {
      const result = await run(['db', command, '--all', '--continue-on-error', '--json'].filter((a) => command === 'migrate' || (a !== '--all' && a !== '--continue-on-error')));
      expect(result.code).toBe(1);
      const rows = Object.fromEntries((JSON.parse(result.stdout) as Report).cells.map((c) => [c.name, c]));
      expect(rows['bad-pw']?.error).toMatch(/^unreachable: .*Access denied/);
      expect(rows['bad-port']?.error).toMatch(/^unreachable: .*ECONNREFUSED/);
    }
  });

  it('api-db migrate and api-db status run on a MariaDB API database, and cells are mapped in it', async () => {
    const { db, url } = await mysqlCell('api', false);
    const project = await createProject({ 'cells.config.js': `module.exports = { api: ${JSON.stringify(url)}, entities: [] };\n` });
    try {
      const runApi = (args: string[]) => runCli(args, project.dir);
      const unmigrated = await runApi(['db', 'fleet-status']);
      expect(unmigrated).toMatchObject({ code: 1, stderr: expect.stringMatching(/^error: .* Is the API database migrated\? Run 'typeorm-cells api-db migrate'\.\n$/) });
      const migrated = await runApi(['api-db', 'migrate', '--lock-timeout', '5000', '--json']);
      expect({ code: migrated.code, stderr: migrated.stderr }).toEqual({ code: 0, stderr: '' });
      expect((JSON.parse(migrated.stdout) as { applied: string[] }).applied).toEqual(API_MIGRATIONS.map((m) => m.name));
      const status = await runApi(['api-db', 'status', '--json']);
      expect(JSON.parse(status.stdout)).toMatchObject({ pending: [] });
      const created = await runApi(['cell', 'create', '--name', 'pg-on-maria-api', '--database-connection', role.urlFor(world.api.name), '--json']);
      expect(created.code).toBe(0);
      const stored = await mysqlQuery(`SELECT name, database_connection FROM \`${db.name}\`.cell_mappings`);
      expect(stored.map((row) => row.name)).toEqual(['pg-on-maria-api']);
      const listed = await runApi(['cell', 'list', '--json']);
      expect({ code: listed.code, stderr: listed.stderr }).toEqual({ code: 0, stderr: '' });
      expect(listed.stdout).toContain('pg-on-maria-api');
      // The fleet migration journal lives in the MariaDB API database too.
      const fleet = await runApi(['db', 'migrate', '--all', '--canary', '1', '--json']);
      expect({ code: fleet.code, stderr: fleet.stderr }).toEqual({ code: 0, stderr: '' });
      expect(JSON.parse(fleet.stdout)).toMatchObject({ run: { state: 'succeeded' } });
      expect(await mysqlQuery(`SELECT state, ended_at IS NOT NULL AS ended FROM \`${db.name}\`.cell_migration_runs`)).toEqual([{ state: 'succeeded', ended: 1 }]);
      expect(await mysqlQuery(`SELECT cell_name, wave, state, attempts, applied, error FROM \`${db.name}\`.cell_migration_run_cells`)).toEqual([
        { cell_name: 'pg-on-maria-api', wave: 0, state: 'succeeded', attempts: 1, applied: '[]', error: null },
      ]);
      const fleetStatus = await runApi(['db', 'fleet-status', '--json']);
      expect({ code: fleetStatus.code, stderr: fleetStatus.stderr }).toEqual({ code: 0, stderr: '' });
      expect(JSON.parse(fleetStatus.stdout)).toMatchObject({ newest: null, cells: [{ name: 'pg-on-maria-api', version: null, pending: 0, lastRun: { state: 'succeeded', attempts: 1 } }] });
      expect(JSON.parse((await runApi(['db', 'migrate', '--resume', '--json'])).stdout)).toEqual({ run: null, cells: [] });
    } finally {
      await project.remove();
    }
  });

  it('db status reports entities a MariaDB cell cannot hold as such, not as an unreachable cell', async () => {
    const { url } = await mysqlCell('tz-entity', false);
    const project = await createProject({
      'cells.config.js': `const { EntitySchema } = require(${JSON.stringify(require.resolve('typeorm'))});
module.exports = {
  api: ${JSON.stringify(role.urlFor(world.api.name))},
  entities: [new EntitySchema({ name: 'Event', tableName: 'events', columns: { id: { type: 'integer', primary: true }, at: { type: 'timestamptz' } } })],
};
`,
    });
    try {
      await world.mapCell('tz-entity', url);
      const result = await runCli(['db', 'status', '--cell', 'tz-entity', '--json'], project.dir);
      expect(result.code).toBe(1);
      const row = (JSON.parse(result.stdout) as Report).cells[0];
      expect(row?.error).toMatch(/is a mariadb database, but the cell entities cannot run on it: .*timestamptz/);
      expect(row?.error).not.toMatch(/unreachable/);
    } finally {
      await project.remove();
    }
  });

  it('never printed a sentinel password, in any output of this file', () => {
    const transcript = cliTranscript();
    expect(transcript).toContain(`${sentinel.user}:***@`);
    expect(transcript).not.toContain(sentinel.password);
    expect(transcript).not.toContain(role.password);
  });
});
