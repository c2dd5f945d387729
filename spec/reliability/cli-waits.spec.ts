import { Client } from 'pg';
import { MIGRATION_LOCK_KEY } from '../../lib/migration-lock';
import {
  assertCliBuilt,
  createCliWorld,
  createSentinelRole,
  runCli,
  type CliWorld,
  type SentinelRole,
} from '../support/cli';
import { rowsIn } from '../support/databases';
import { sleep } from '../../dev/wait';

// Issue 10: no CLI command may wait for ever. A migration runner waits for the migration lock of
// a database while another runner holds it; a session that never lets go (a runner stuck on a
// server that stopped answering, an operator's forgotten psql) made `db migrate` and
// `api-db migrate` wait with no limit.

let role: SentinelRole;
let world: CliWorld;
let holder: Client | undefined;

beforeAll(async () => {
  assertCliBuilt();
  role = await createSentinelRole();
  world = await createCliWorld('cli_wait', role, 2);
});

afterEach(async () => {
  await holder?.end().catch(() => undefined);
  holder = undefined;
});

afterAll(async () => {
  await world?.destroy();
  await role?.drop().catch(() => undefined);
});

/** Opens a session on `url` that takes the migration lock and keeps it until the test ends. */
async function holdMigrationLock(url: string): Promise<Client> {
  holder = new Client({ connectionString: url });
  holder.on('error', () => undefined);
  await holder.connect();
  await holder.query('SELECT pg_advisory_lock($1)', [MIGRATION_LOCK_KEY]);
  return holder;
}

async function hasWidgets(url: string): Promise<boolean> {
  const [row] = await rowsIn<{ t: string | null }>(url, `SELECT to_regclass('public.widgets')::text AS t`);
  return row?.t === 'widgets';
}

it('db migrate fails a cell whose migration lock another session holds past --lock-timeout, and migrates the others', async () => {
  const [locked, free] = world.cells as [CliWorld['cells'][0], CliWorld['cells'][0]];
  await holdMigrationLock(locked.db.url);
  const result = await runCli(
    ['db', 'migrate', '--all', '--continue-on-error', '--lock-timeout', '1000', '--json'],
    world.project.dir,
  );
  expect(result.code).toBe(1);
  const report = JSON.parse(result.stdout) as { cells: { name: string; result: string; error?: string }[] };
  const rows = Object.fromEntries(report.cells.map((c) => [c.name, c]));
  expect(rows[locked.name]).toMatchObject({
    result: 'failed',
    error: expect.stringMatching(/held the migration lock for the 1000 ms/),
  });
  expect(rows[free.name]).toMatchObject({ result: 'migrated' });
  expect(await hasWidgets(locked.db.url)).toBe(false);
  expect(await hasWidgets(free.db.url)).toBe(true);
  expect(result.stdout + result.stderr).not.toContain(role.password);
});

it('db migrate waits for a runner holding the lock and applies the migrations once it lets go', async () => {
  const cell = world.cells[0]!;
  const lock = await holdMigrationLock(cell.db.url);
  const run = runCli(['db', 'migrate', '--cell', cell.name, '--json'], world.project.dir);
  await sleep(1500);
  await lock.query('SELECT pg_advisory_unlock($1)', [MIGRATION_LOCK_KEY]);
  const result = await run;
  expect(result.code).toBe(0);
  expect(await hasWidgets(cell.db.url)).toBe(true);
});

it('db migrate gives up on a table lock an application session holds past --lock-timeout', async () => {
  // Migrated above: its migrations table exists, and the next run reads it first.
  const cell = world.cells[0]!;
  holder = new Client({ connectionString: cell.db.url });
  holder.on('error', () => undefined);
  await holder.connect();
  await holder.query('BEGIN');
  await holder.query('LOCK TABLE migrations IN ACCESS EXCLUSIVE MODE');
  const started = performance.now();
  const result = await runCli(['db', 'migrate', '--cell', cell.name, '--lock-timeout', '1000', '--json'], world.project.dir);
  const ms = performance.now() - started;
  expect(result.code).toBe(1);
  const report = JSON.parse(result.stdout) as { cells: { name: string; result: string; error?: string }[] };
  expect(report.cells[0]).toMatchObject({ name: cell.name, result: 'failed', error: expect.stringMatching(/lock timeout/) });
  // The CLI's start-up and connects included; without the bound it waited until killed.
  expect(ms).toBeLessThan(20_000);
});

it('api-db migrate gives up on a migration lock held past --lock-timeout with one error line', async () => {
  await holdMigrationLock(world.api.url);
  const result = await runCli(['api-db', 'migrate', '--lock-timeout', '500'], world.project.dir);
  expect({ code: result.code, stderr: result.stderr }).toEqual({
    code: 1,
    stderr: expect.stringMatching(/^error: The API database: another session held the migration lock for the 500 ms[^\n]*\n$/),
  });
});

it.each([['-1'], ['1.5'], ['soon'], ['2147483648']])('db migrate refuses --lock-timeout %s as a usage error', async (value) => {
  const result = await runCli(['db', 'migrate', '--all', '--lock-timeout', value], world.project.dir);
  expect(result.code).toBe(2);
  expect(result.stderr).toMatch(/--lock-timeout.*must be an integer from 0 to 2147483647/);
});
