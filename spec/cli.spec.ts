import { randomUUID } from 'node:crypto';
import { Cells } from '../lib';
import { LIVE_PROGRESS_MAX_CELLS } from '../lib/cli/cell-migration';
import {
  assertCliBuilt,
  cliTranscript,
  createCliProject,
  createCliWorld,
  createSentinelRole,
  runCli,
  runCliOnTerminal,
  writeJsConfig,
  writeOneMigrationConfig,
  type CliResult,
  type CliWorld,
  type SentinelRole,
} from './support/cli';
import { createTestDatabase, rowsIn } from './support/databases';

const CELL_MIGRATIONS = ['CreateWidgets1764072100000', 'AddWidgetColor1764072200000'];

let role: SentinelRole;

beforeAll(async () => {
  assertCliBuilt();
  role = await createSentinelRole();
});

afterAll(async () => {
  await role?.drop().catch(() => undefined);
});

/** The run failed with exactly one `error:` line on stderr and no stack trace. */
function expectOneErrorLine(result: CliResult, code: number, pattern?: RegExp): void {
  expect({ code: result.code, stderr: result.stderr }).toEqual({
    code,
    stderr: expect.stringMatching(/^error: [^\n]+\n$/),
  });
  expect(result.stderr).not.toMatch(/\n\s+at /);
  if (pattern) expect(result.stderr).toMatch(pattern);
}

function json<T>(result: CliResult): T {
  expect(result.stderr).toBe('');
  return JSON.parse(result.stdout) as T;
}

async function hasWidgets(url: string): Promise<boolean> {
  const [row] = await rowsIn<{ t: string | null }>(
    url,
    `SELECT to_regclass('public.widgets')::text AS t`,
  );
  return row?.t === 'widgets';
}

async function appliedMigrations(url: string): Promise<string[]> {
  const [exists] = await rowsIn<{ t: string | null }>(
    url,
    `SELECT to_regclass('public.migrations')::text AS t`,
  );
  if (exists?.t == null) return [];
  const rows = await rowsIn<{ name: string }>(url, 'SELECT name FROM migrations ORDER BY id');
  return rows.map((r) => r.name);
}

interface CellRow {
  uuid: string;
  name: string;
  state: string;
  disabled: boolean;
  instances?: number;
  databaseConnection?: string;
}

/**
 * `result` without the warnings `cell create` and `cell update` print for a URL with a literal
 * password (the sentinel role's, in most tests here), after checking each is one masked line.
 */
function afterPasswordWarnings(result: CliResult): CliResult {
  const lines = result.stderr.split(/(?<=\n)/);
  const warnings = lines.filter((line) => line.startsWith('warning: '));
  for (const line of warnings) {
    expect(line).toMatch(/^warning: the URL \S+:\*\*\*@\S+ of cell '[^']+' carries its password in plain text.*\?password=env:NAME.*\n$/);
    expect(line).not.toContain(role.password);
  }
  return { ...result, stderr: lines.filter((line) => !line.startsWith('warning: ')).join('') };
}

describe('cell commands', () => {
  let world: CliWorld;
  const run = async (...args: string[]) => afterPasswordWarnings(await runCli(args, world.project.dir));

  beforeAll(async () => {
    world = await createCliWorld('cli_cell', role, 2);
  });
  afterAll(async () => {
    await world?.destroy();
  });

  it('creates a cell after checking that its database answers', async () => {
    const db = await createTestDatabase('cli_cell_new');
    try {
      const created = await run(
        'cell',
        'create',
        '--name',
        'fresh',
        '--database-connection',
        role.urlFor(db.name),
      );
      expect(created).toMatchObject({ code: 0, stderr: '' });
      expect(created.stdout).toMatch(/^Created cell 'fresh' \([0-9a-f-]{36}\)\.\n$/);
      const listed = json<CellRow[]>(await run('cell', 'list', '--json'));
      expect(listed.map((c) => c.name)).toContain('fresh');
    } finally {
      await db.drop();
    }
  });

  it('warns on stderr, in one masked line, when cell create or update gets a literal password', async () => {
    const db = await createTestDatabase('cli_cell_literal');
    try {
      const created = await runCli(['cell', 'create', '--name', 'literal', '--database-connection', role.urlFor(db.name)], world.project.dir);
      expect(created.code).toBe(0);
      expect(created.stderr).toMatch(/^warning: [^\n]*literal'[^\n]* carries its password in plain text[^\n]*\?password=env:NAME or \?password=file:\/path[^\n]*\n$/);
      const updated = await runCli(['cell', 'update', 'literal', '--database-connection', role.urlFor(db.name)], world.project.dir);
      expect(updated.code).toBe(0);
      expect(updated.stderr).toMatch(/^warning: [^\n]* carries its password in plain text[^\n]*\n$/);
      for (const result of [created, updated]) expect(`${result.stdout}${result.stderr}`).not.toContain(role.password);
    } finally {
      await db.drop();
    }
  });

  it('creates a cell from a secret reference resolved in its environment, without a warning, and shows the reference', async () => {
    const db = await createTestDatabase('cli_cell_ref');
    const variable = `CELLS_CLI_SPEC_PW_${process.pid}`;
    const url = new URL(role.urlFor(db.name));
    url.password = '';
    const reference = `${url.toString()}?password=env:${variable}`;
    try {
      const unresolved = await runCli(['cell', 'create', '--name', 'unresolved', '--database-connection', reference], world.project.dir);
      expectOneErrorLine(
        unresolved,
        1,
        new RegExp(`^error: The password of cell 'unresolved' could not be resolved from its 'env' secret reference \\(env:${variable}\\): its environment variable is not set.* Nothing was created; .*pass --no-verify to map the cell anyway`),
      );
      const created = await runCli(['cell', 'create', '--name', 'referenced', '--database-connection', reference], world.project.dir, {
        env: { [variable]: role.password },
      });
      expect(created).toMatchObject({ code: 0, stderr: '' });
      const listed = json<CellRow[]>(await run('cell', 'list', '--verbose', '--json'));
      expect(listed.find((c) => c.name === 'referenced')?.databaseConnection).toBe(reference);
      expect(listed.map((c) => c.name)).not.toContain('unresolved');
      for (const result of [unresolved, created]) expect(`${result.stdout}${result.stderr}`).not.toContain(role.password);
    } finally {
      await db.drop();
    }
  });

  it('prints the created cell as JSON with its password masked', async () => {
    const uuid = randomUUID();
    const result = await run(
      'cell',
      'create',
      '--json',
      '--name',
      'as-json',
      '--uuid',
      uuid,
      '--disabled',
      '--database-connection',
      world.cells[0]!.url,
      '--transport-url',
      `amqp://guest:${role.password}@mq:5672/`,
    );
    const cell = json<CellRow & { transportUrl: string }>(result);
    expect(cell).toMatchObject({ uuid, name: 'as-json', disabled: true });
    expect(cell.databaseConnection).toContain(`${role.name}:***@`);
    expect(cell.transportUrl).toBe('amqp://guest:***@mq:5672/');
  });

  it('refuses, in one line, to create a cell whose database is unreachable', async () => {
    const result = await run(
      'cell',
      'create',
      '--name',
      'nowhere',
      '--database-connection',
      `postgres://${role.name}:${role.password}@127.0.0.1:1/nowhere`,
    );
    expectOneErrorLine(
      result,
      1,
      /^error: Cell 'nowhere' is unreachable: .*ECONNREFUSED.*--no-verify/,
    );
    const listed = json<CellRow[]>(await run('cell', 'list', '--json'));
    expect(listed.map((c) => c.name)).not.toContain('nowhere');
  });

  it('creates a cell without checking its database when given --no-verify', async () => {
    const result = await run(
      'cell',
      'create',
      '--no-verify',
      '--name',
      'unchecked',
      '--database-connection',
      `postgres://${role.name}:${role.password}@127.0.0.1:1/nowhere`,
    );
    expect(result).toMatchObject({ code: 0, stderr: '' });
  });

  it('lists cells in a table with their instance counts and no URLs', async () => {
    const mapped = await run(
      'instance',
      'map',
      '--uuid',
      randomUUID(),
      '--cell',
      world.cells[1]!.name,
      '--project',
      'p1',
    );
    expect(mapped.code).toBe(0);
    const result = await run('cell', 'list');
    expect(result).toMatchObject({ code: 0, stderr: '' });
    expect(result.stdout).toMatch(/UUID .*Name .*State .*Instances/);
    expect(result.stdout).toMatch(
      new RegExp(`${world.cells[1]!.uuid} │ ${world.cells[1]!.name} *│ active *│ 1 `),
    );
    expect(result.stdout).not.toContain('postgres://');
  });

  it('shows connection URLs with the password masked under --verbose', async () => {
    const table = await run('cell', 'list', '--verbose');
    expect(table.code).toBe(0);
    expect(table.stdout).toContain(`postgres://${role.name}:***@`);
    const rows = json<CellRow[]>(await run('cell', 'list', '--verbose', '--json'));
    const row = rows.find((c) => c.name === world.cells[0]!.name);
    expect(row?.databaseConnection).toContain(`${role.name}:***@`);
  });

  it('maps read connections given with a repeated --read-connection, masked in every output, and clears them', async () => {
    const readers = [world.cells[1]!.url, world.cells[1]!.url];
    const created = await run(
      'cell', 'create', '--json', '--name', 'with-readers',
      '--database-connection', world.cells[0]!.url,
      '--read-connection', readers[0]!, '--read-connection', readers[1]!,
    );
    const cell = json<CellRow & { readConnections: string[] }>(created);
    expect(cell.readConnections).toHaveLength(2);
    for (const url of cell.readConnections) expect(url).toContain(`${role.name}:***@`);
    const table = await run('cell', 'list', '--verbose');
    expect(table.stdout).toMatch(/Read connections/);
    const listed = json<Array<CellRow & { readConnections: string[] | null }>>(await run('cell', 'list', '--verbose', '--json'));
    expect(listed.find((c) => c.name === 'with-readers')?.readConnections).toHaveLength(2);
    const refused = await run('cell', 'update', 'with-readers', '--read-connection', 'mssql://x@h/db');
    expectOneErrorLine(refused, 2, /reader 1/);
    const cleared = json<{ readConnections: unknown }>(await run('cell', 'update', 'with-readers', '--clear-read-connections', '--json'));
    expect(cleared.readConnections).toBeNull();
    for (const result of [created, table, refused]) expect(`${result.stdout}${result.stderr}`).not.toContain(role.password);
  });

  it('renames and disables a cell found by uuid', async () => {
    const target = await createCliWorldCell(world, 'to-update');
    const result = await run('cell', 'update', target, '--name', 'updated', '--disable', '--json');
    expect(json<CellRow>(result)).toMatchObject({ uuid: target, name: 'updated', disabled: true });
    const enabled = await run('cell', 'update', 'updated', '--enable', '--json');
    expect(json<CellRow>(enabled)).toMatchObject({ disabled: false });
  });

  it('sets a cell state by name and shows it in cell list, as a table and as JSON', async () => {
    const target = await createCliWorldCell(world, 'to-drain');
    const drained = await run('cell', 'set-state', 'to-drain', 'draining');
    expect(drained).toMatchObject({ code: 0, stderr: '' });
    expect(drained.stdout).toBe(`Cell 'to-drain' (${target}) is now draining.\n`);
    const table = await run('cell', 'list');
    expect(table.stdout).toMatch(/\bState\b/);
    expect(table.stdout).toMatch(new RegExp(`${target} │ to-drain +│ draining`));
    const readOnly = json<CellRow>(await run('cell', 'set-state', target, 'read-only', '--json'));
    expect(readOnly).toMatchObject({ uuid: target, state: 'read-only', disabled: false });
    const listed = json<CellRow[]>(await run('cell', 'list', '--json'));
    expect(listed.find((c) => c.uuid === target)).toMatchObject({ state: 'read-only' });
    const enabled = await runCli(['cell', 'update', target, '--enable'], world.project.dir);
    expect(enabled).toMatchObject({ code: 0, stdout: `Updated cell 'to-drain' (${target}).\n` });
    expect(enabled.stderr).toBe(
      `warning: Cell 'to-drain' (${target}) is read-only, not disabled: --enable left its state unchanged (read-only). Use 'cell set-state <cell> active' to make it active.\n`,
    );
    expect(json<CellRow>(await run('cell', 'update', target, '--disable', '--json'))).toMatchObject({ state: 'disabled', disabled: true });
    expect(json<CellRow>(await run('cell', 'set-state', target, 'active', '--json'))).toMatchObject({ state: 'active', disabled: false });
    const created = await run('cell', 'create', '--json', '--no-verify', '--name', 'born-draining', '--state', 'draining', '--database-connection', world.cells[0]!.url);
    expect(json<CellRow>(created)).toMatchObject({ name: 'born-draining', state: 'draining', disabled: false });
  });

  it('refuses an unknown state in one line that lists the valid states, changing nothing', async () => {
    const target = await createCliWorldCell(world, 'to-keep');
    const refused = await run('cell', 'set-state', target, 'paused');
    expectOneErrorLine(refused, 2, /'active', 'read-only', 'draining', 'disabled'.*'paused'/);
    const notCreated = await run('cell', 'create', '--no-verify', '--name', 'born-paused', '--state', 'paused', '--database-connection', world.cells[0]!.url);
    expectOneErrorLine(notCreated, 2, /'active', 'read-only', 'draining', 'disabled'.*'paused'/);
    const listed = json<CellRow[]>(await run('cell', 'list', '--json'));
    expect(listed.find((c) => c.uuid === target)).toMatchObject({ state: 'active' });
    expect(listed.map((c) => c.name)).not.toContain('born-paused');
  });

  it('refuses to delete a cell with mapped instances unless --force', async () => {
    const target = await createCliWorldCell(world, 'to-delete');
    const instance = randomUUID();
    expect(
      (await run('instance', 'map', '--uuid', instance, '--cell', target, '--project', 'p1')).code,
    ).toBe(0);
    const refused = await run('cell', 'delete', 'to-delete');
    expectOneErrorLine(refused, 1, /1 instance mapping.*--force/);
    const forced = await run('cell', 'delete', 'to-delete', '--force');
    expect(forced).toMatchObject({ code: 0, stdout: `Deleted cell 'to-delete' (${target}).\n` });
    expectOneErrorLine(await run('instance', 'verify', instance), 1, /Unknown instance/);
  });

  it('reports an unknown cell in one line, pointing at typeorm-cells cell list', async () => {
    expectOneErrorLine(
      await run('cell', 'delete', 'no-such-cell'),
      1,
      /^error: Unknown cell 'no-such-cell': .*List cells with 'typeorm-cells cell list'\.$/m,
    );
  });

  it('names the existing cell when cell create repeats a name', async () => {
    const existing = world.cells[0]!;
    expectOneErrorLine(
      await run(
        'cell',
        'create',
        '--no-verify',
        '--name',
        existing.name,
        '--database-connection',
        existing.url,
      ),
      1,
      new RegExp(
        `Cell '${existing.name}' \\(${existing.uuid}\\) already has the name '${existing.name}'`,
      ),
    );
  });

  it('names the existing cell when cell create repeats a uuid', async () => {
    const existing = world.cells[1]!;
    expectOneErrorLine(
      await run(
        'cell',
        'create',
        '--no-verify',
        '--name',
        'new-name',
        '--uuid',
        existing.uuid,
        '--database-connection',
        existing.url,
      ),
      1,
      new RegExp(
        `Cell '${existing.name}' \\(${existing.uuid}\\) already has the uuid ${existing.uuid}`,
      ),
    );
  });

  it('refuses to map cell0 to a database that does not exist, and maps nothing', async () => {
    const missing = new URL(world.cells[0]!.url);
    missing.pathname = `/cells_no_such_cell0_${process.pid}`;
    const refused = await run('cell0', 'map', '--database-connection', missing.toString());
    expect(refused.code).toBe(1);
    expect(refused.stderr).toMatch(/Cell 'cell0' is unreachable: database .*does not exist/s);
    const list = json<CellRow[]>(await run('cell', 'list', '--json'));
    expect(list.some((c) => c.name === 'cell0')).toBe(false);
  });

  it('maps cell0 once and leaves it alone afterwards', async () => {
    const url = world.cells[0]!.url;
    const first = json<{ created: boolean; cell: CellRow }>(
      await run('cell0', 'map', '--database-connection', url, '--json'),
    );
    expect(first).toMatchObject({
      created: true,
      cell: { uuid: '00000000-0000-0000-0000-000000000000', name: 'cell0' },
    });
    const again = await run('cell0', 'map');
    expect(again).toMatchObject({ code: 0, stderr: '' });
    expect(again.stdout).toContain('cell0 is already mapped');
  });
});

/** Maps a cell named `name` to the world's first cell database; returns its uuid. */
function createCliWorldCell(world: CliWorld, name: string): Promise<string> {
  return world.mapCell(name, world.cells[0]!.url);
}

describe('instance commands', () => {
  let world: CliWorld;
  const run = (...args: string[]) => runCli(args, world.project.dir);

  beforeAll(async () => {
    world = await createCliWorld('cli_inst', role, 2);
  });
  afterAll(async () => {
    await world?.destroy();
  });

  it('maps an instance to a cell and verifies where it is', async () => {
    const instance = randomUUID();
    const cell = world.cells[1]!;
    const mapped = await run(
      'instance',
      'map',
      '--uuid',
      instance,
      '--cell',
      cell.uuid,
      '--project',
      'p1',
      '--user',
      'u1',
      '--json',
    );
    expect(json(mapped)).toEqual({
      instanceUuid: instance,
      projectId: 'p1',
      userId: 'u1',
      cell: { uuid: cell.uuid, name: cell.name },
    });
    const verified = await run('instance', 'verify', instance);
    expect(verified).toMatchObject({
      code: 0,
      stdout: `Instance ${instance} is in cell '${cell.name}' (${cell.uuid}).\n`,
    });
  });

  it('moves a mapped instance to another cell', async () => {
    const instance = randomUUID();
    await run(
      'instance',
      'map',
      '--uuid',
      instance,
      '--cell',
      world.cells[0]!.name,
      '--project',
      'p1',
    );
    await run(
      'instance',
      'map',
      '--uuid',
      instance,
      '--cell',
      world.cells[1]!.name,
      '--project',
      'p1',
    );
    const verified = json<{ cell: { name: string } }>(
      await run('instance', 'verify', instance, '--json'),
    );
    expect(verified.cell.name).toBe(world.cells[1]!.name);
  });

  it('exits 1 with one line when verifying an unmapped instance', async () => {
    const instance = randomUUID();
    expectOneErrorLine(
      await run('instance', 'verify', instance),
      1,
      new RegExp(`Unknown instance '${instance}'`),
    );
  });
});

describe('db migrate', () => {
  let world: CliWorld;
  const run = (...args: string[]) => runCli(args, world.project.dir);

  afterEach(async () => {
    await world?.destroy();
  });

  it('migrates every cell, and a second run applies nothing', async () => {
    world = await createCliWorld('cli_mig', role, 3);
    const first = await run('db', 'migrate', '--all');
    expect(first.code).toBe(0);
    for (const cell of world.cells) {
      expect(first.stdout).toMatch(
        new RegExp(`│ ${cell.name} *│ ${cell.uuid} │ 2 *│ [0-9.]+ m?s *│ migrated`),
      );
      expect(await hasWidgets(cell.db.url)).toBe(true);
      expect(await appliedMigrations(cell.db.url)).toEqual(CELL_MIGRATIONS);
    }
    const second = json<{ cells: { name: string; result: string; applied: string[] }[] }>(
      await run('db', 'migrate', '--all', '--json'),
    );
    expect(second.cells).toHaveLength(3);
    expect(second.cells.every((c) => c.result === 'migrated' && c.applied.length === 0)).toBe(true);
  });

  it('applies each migration exactly once when two runners race', async () => {
    world = await createCliWorld('cli_race', role, 3);
    const runs = await Promise.all([
      run('db', 'migrate', '--all', '--json'),
      run('db', 'migrate', '--all', '--json'),
    ]);
    const reports = runs.map((r) => json<{ cells: { uuid: string; applied: string[] }[] }>(r));
    for (const cell of world.cells) {
      expect(await appliedMigrations(cell.db.url)).toEqual(CELL_MIGRATIONS);
      const appliedByBoth = reports.flatMap(
        (r) => r.cells.find((c) => c.uuid === cell.uuid)?.applied ?? [],
      );
      expect(appliedByBoth.sort()).toEqual([...CELL_MIGRATIONS].sort());
    }
  });

  it('runs the migrations of each cell on the session holding its migration lock: one connection per cell', async () => {
    world = await createCliWorld('cli_sess', role, 6);
    // Each cell's migration records whether its own session holds the migration lock and how many
    // client sessions its cell database has; the sleep keeps 3 cells migrating at once.
    const apiUrl = role.urlFor(world.api.name);
    const config = await writeOneMigrationConfig(world.project.dir, apiUrl, 'ProbeSession1764072300000', {
      up: `await q.query('CREATE TABLE "session_probe" ("holds_lock" boolean NOT NULL, "client_backends" integer NOT NULL)');
    await q.query(\`INSERT INTO "session_probe" SELECT
      EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid() AND granted),
      (SELECT count(*)::int FROM pg_stat_activity WHERE datname = current_database() AND backend_type = 'client backend')\`);
    await q.query('SELECT pg_sleep(0.2)');`,
      down: `await q.query('DROP TABLE "session_probe"');`,
    });
    const report = json<{ cells: { name: string; result: string; applied: string[] }[] }>(
      await run('--config', config, 'db', 'migrate', '--all', '--concurrency', '3', '--json'),
    );
    expect(report.cells.map((c) => [c.result, c.applied])).toEqual(
      world.cells.map(() => ['migrated', ['ProbeSession1764072300000']]),
    );
    for (const cell of world.cells) {
      expect(
        await rowsIn(cell.db.url, 'SELECT holds_lock, client_backends FROM session_probe'),
      ).toEqual([{ holds_lock: true, client_backends: 1 }]);
    }
  });

  it("reports a migration's own error when it ends its session, and migrates the other cells", async () => {
    world = await createCliWorld('cli_kill', role, 4);
    // The migration of cell 1 ends the session it runs on (the one holding the migration lock).
    const apiUrl = role.urlFor(world.api.name);
    const config = await writeOneMigrationConfig(world.project.dir, apiUrl, 'EndSession1764072400000', {
      up: `await q.query('CREATE TABLE "gadgets" ("id" serial PRIMARY KEY)');
    if (await q.getCurrentDatabase() === ${JSON.stringify(world.cells[1]!.db.name)})
      await q.query('SELECT pg_terminate_backend(pg_backend_pid())');`,
      down: `await q.query('DROP TABLE "gadgets"');`,
    });
    const result = await run(
      '--config',
      config,
      'db',
      'migrate',
      '--all',
      '--continue-on-error',
      '--concurrency',
      '2',
      '--json',
    );
    expect(result.code).toBe(1);
    const report = JSON.parse(result.stdout) as {
      cells: { name: string; result: string; error?: string }[];
    };
    expect(report.cells.map((c) => [c.name, c.result])).toEqual(
      world.cells.map((c, i) => [c.name, i === 1 ? 'failed' : 'migrated']),
    );
    expect(report.cells[1]!.error).toMatch(/terminating connection due to administrator command/);
    const gadgets = await Promise.all(
      world.cells.map(
        async (c) =>
          (await rowsIn(c.db.url, `SELECT to_regclass('public.gadgets')::text AS t`))[0]?.t,
      ),
    );
    expect(gadgets).toEqual(world.cells.map((_, i) => (i === 1 ? null : 'gadgets')));
  });

  it('migrates the other cells and exits 1 when one fails under --continue-on-error', async () => {
    world = await createCliWorld('cli_brk', role, 3);
    await world.mapCell('a-missing-db', role.urlFor(`cells_missing_${randomUUID().slice(0, 8)}`));
    await world.mapCell(
      'b-closed-port',
      `postgres://${role.name}:${role.password}@127.0.0.1:1/nothing`,
    );
    const result = await run('db', 'migrate', '--all', '--continue-on-error', '--concurrency', '2');
    expect(result.code).toBe(1);
    expect(result.stdout).toMatch(/│ a-missing-db .*│ failed: unreachable: .*does not exist/);
    expect(result.stdout).toMatch(/│ b-closed-port .*│ failed: unreachable: .*ECONNREFUSED/);
    expect(result.stderr).toMatch(/^error: 2 of 5 cell\(s\) failed to migrate;/m);
    for (const cell of world.cells)
      expect(await appliedMigrations(cell.db.url)).toEqual(CELL_MIGRATIONS);
  });

  it("keeps each failed cell's name and fits a 100-column terminal", async () => {
    world = await createCliWorld('cli_tty', role, 1);
    const names = ['a-long-cell-name-for-the-eu-west-1-region-primary', 'b-missing-db'];
    await world.mapCell(names[0]!, `postgres://${role.name}:${role.password}@127.0.0.1:1/nothing`);
    await world.mapCell(
      names[1]!,
      role.urlFor(`cells_missing_database_with_a_long_name_${randomUUID().slice(0, 8)}`),
    );
    const result = await runCliOnTerminal(
      ['db', 'migrate', '--all', '--continue-on-error'],
      world.project.dir,
      100,
    );
    expect(result.code).toBe(1);
    const lines = result.stdout.split('\n');
    expect(lines.filter((line) => line.length > 100 && !line.startsWith('error: '))).toEqual([]);
    for (const name of names) {
      // In the live progress, and in the report's rows.
      expect(result.stdout).toContain(`✖ ${name}: unreachable: `);
      expect(result.stdout).toMatch(new RegExp(`│ ${name} +│ 0 +│ failed: unreachable`));
    }
    expect(result.stdout).toMatch(new RegExp(`│ ${world.cells[0]!.name} +│ 2 +│ migrated`));
  });

  it('prints one line per event on a terminal above LIVE_PROGRESS_MAX_CELLS cells, no live redraw', async () => {
    world = await createCliWorld('cli_many', role, 1);
    // 21 cells on one database: after the first, each finds the migrations applied.
    const extra = Array.from({ length: LIVE_PROGRESS_MAX_CELLS }, (_, i) => `many-${String(i).padStart(2, '0')}`);
    for (const name of extra) await createCliWorldCell(world, name);
    const result = await runCliOnTerminal(['db', 'migrate', '--all', '--concurrency', '4'], world.project.dir, 120);
    expect(result.code).toBe(0);
    const lines = result.stdout.split('\n');
    for (const name of [world.cells[0]!.name, ...extra]) {
      // A line as the cell starts and one as it finishes, in that order; a live view leaves only
      // its last frame (the finished cells) once its redraws are taken out.
      const started = lines.indexOf(`❯ ${name}`);
      const finished = lines.findIndex((line) => line.startsWith(`✔ ${name}: `) && /migration\(s\) applied/.test(line));
      expect(started).toBeGreaterThanOrEqual(0);
      expect(finished).toBeGreaterThan(started);
    }
  });

  it('starts no further cell after the first failure without --continue-on-error', async () => {
    world = await createCliWorld('cli_stop', role, 3);
    await world.mapCell(
      'a-closed-port',
      `postgres://${role.name}:${role.password}@127.0.0.1:1/nothing`,
    );
    const result = await run('db', 'migrate', '--all', '--concurrency', '1', '--json');
    expect(result.code).toBe(1);
    const report = JSON.parse(result.stdout) as { cells: { name: string; result: string }[] };
    expect(report.cells.map((c) => c.result)).toEqual(['failed', 'skipped', 'skipped', 'skipped']);
    expectOneErrorLine(result, 1, /3 were skipped/);
    for (const cell of world.cells) expect(await hasWidgets(cell.db.url)).toBe(false);
  });

  it('migrates only the cell named by --cell, and db status shows what is pending', async () => {
    world = await createCliWorld('cli_one', role, 2);
    const [target, other] = world.cells as [CliWorld['cells'][0], CliWorld['cells'][0]];
    const before = await run('db', 'status');
    expect(before.code).toBe(0);
    expect(before.stdout).toMatch(
      new RegExp(`│ ${target.name} *│ ${target.uuid} │ 0 *│ 2 *│ CreateWidgets1764072100000`),
    );
    expect((await run('db', 'migrate', '--cell', target.name)).code).toBe(0);
    const after = json<{ cells: { name: string; applied: string[]; pending: string[] }[] }>(
      await run('db', 'status', '--json'),
    );
    expect(after.cells.find((c) => c.name === target.name)).toMatchObject({
      applied: CELL_MIGRATIONS,
      pending: [],
    });
    expect(after.cells.find((c) => c.name === other.name)).toMatchObject({
      applied: [],
      pending: CELL_MIGRATIONS,
    });
    expect(await hasWidgets(other.db.url)).toBe(false);
  });

  it('db status exits 1 and reports an unreachable cell in its row', async () => {
    world = await createCliWorld('cli_stat', role, 1);
    await world.mapCell('closed', `postgres://${role.name}:${role.password}@127.0.0.1:1/nothing`);
    const result = await run('db', 'status');
    expect(result.stdout).toMatch(/│ closed .*│ failed: unreachable: .*ECONNREFUSED/);
    expectOneErrorLine(result, 1, /1 of 2 cell\(s\) failed to report their status/);
  });
});

/** The API migrations, oldest first. */
const API_MIGRATION_NAMES = ['ApiSchema1764072000000', 'CellReadConnections1766000000000', 'MappingChangeLog1767000000000', 'CellStates1768000000000', 'MigrationJournal1768200000000'];

describe('api-db', () => {
  it('migrates the API database once, into the history Cells reads', async () => {
    const api = await createTestDatabase('cli_apidb');
    const project = await createCliProject(role.urlFor(api.name));
    const run = (...args: string[]) => runCli(args, project.dir);
    try {
      expect(json(await run('api-db', 'status', '--json'))).toEqual({
        applied: [],
        pending: API_MIGRATION_NAMES,
      });
      expect(json(await run('api-db', 'migrate', '--json'))).toEqual({
        applied: API_MIGRATION_NAMES,
      });
      const again = await run('api-db', 'migrate');
      expect(again).toMatchObject({
        code: 0,
        stdout: 'API database is up to date (0 migrations applied).\n',
      });
      expect(json(await run('api-db', 'status', '--json'))).toEqual({
        applied: API_MIGRATION_NAMES,
        pending: [],
      });
      // Had the CLI used another history table, this would re-create the tables and fail.
      const lib = new Cells({ api: role.urlFor(api.name), entities: [], migrateApi: true });
      await lib.initialize();
      await lib.destroy();
    } finally {
      await project.remove();
      await api.drop();
    }
  });

  it('points at api-db migrate when the API database has no schema', async () => {
    const api = await createTestDatabase('cli_apinew');
    const project = await createCliProject(role.urlFor(api.name));
    try {
      expectOneErrorLine(await runCli(['cell', 'list'], project.dir), 1, /api-db migrate/);
    } finally {
      await project.remove();
      await api.drop();
    }
  });
});

describe('config and usage errors', () => {
  let world: CliWorld;
  const run = (...args: string[]) => runCli(args, world.project.dir);

  beforeAll(async () => {
    world = await createCliWorld('cli_cfg', role, 1);
  });
  afterAll(async () => {
    await world?.destroy();
  });

  it('loads a CommonJS config given by --config', async () => {
    const file = await writeJsConfig(world.project.dir, role.urlFor(world.api.name));
    const rows = json<CellRow[]>(await run('--config', file, 'cell', 'list', '--json'));
    expect(rows.map((r) => r.name)).toEqual([world.cells[0]!.name]);
  });

  it('exits 2 when no config file exists', async () => {
    expectOneErrorLine(
      await run('--config', 'missing.config.ts', 'cell', 'list'),
      2,
      /missing\.config\.ts does not exist/,
    );
  });

  it('reports an unreachable API database in one line', async () => {
    const project = await createCliProject(
      `postgres://${role.name}:${role.password}@127.0.0.1:1/api`,
    );
    try {
      expectOneErrorLine(
        await runCli(['cell', 'list'], project.dir),
        1,
        /unreachable: .*ECONNREFUSED/,
      );
    } finally {
      await project.remove();
    }
  });

  it.each([
    ['an unknown option', ['cell', 'list', '--colour'], /unknown option '--colour'/],
    ['an unknown command', ['cells', 'list'], /unknown command 'cells'/],
    [
      'a missing required option',
      ['cell', 'create', '--name', 'x'],
      /required option '--database-connection <url>'/,
    ],
    ['a malformed instance uuid', ['instance', 'verify', 'not-a-uuid'], /must be a uuid/],
    [
      'a malformed connection URL',
      ['cell', 'create', '--name', 'x', '--database-connection', 'mssql://u:p@h/db'],
      /not a valid connection URL/,
    ],
    ['db migrate without --cell or --all', ['db', 'migrate'], /--cell <name\|uuid> or --all/],
    [
      'a zero --concurrency',
      ['db', 'migrate', '--all', '--concurrency', '0'],
      /--concurrency <n>.*integer >= 1/,
    ],
    [
      'both --disable and --enable',
      ['cell', 'update', 'x', '--disable', '--enable'],
      /--disable or --enable, not both/,
    ],
    [
      'cell create with --disabled and another --state',
      ['cell', 'create', '--no-verify', '--name', 'x', '--database-connection', 'postgres://u@h/db', '--disabled', '--state', 'active'],
      /^error: Pass --disabled or --state active, not both: --disabled is --state disabled\.$/m,
    ],
    ['db migrate --resume --all', ['db', 'migrate', '--resume', '--all'], /^error: --resume continues the newest run as it started: pass it without --all/m],
  ])('exits 2 with one line for %s', async (_what, args, pattern) => {
    expectOneErrorLine(await run(...args), 2, pattern);
  });

  it('prints the stack trace of an error under --debug', async () => {
    const result = await run('instance', 'verify', randomUUID(), '--debug');
    expect(result.code).toBe(1);
    expect(result.stderr).toMatch(/^error: Unknown instance .*\n.*UnknownInstanceError.*\n\s+at /);
  });

  it('documents the exit codes in --help', async () => {
    const result = await run('--help');
    expect(result.code).toBe(0);
    expect(result.stdout).toMatch(
      /Exit status:\n\s+0 +success\n\s+1 +failure[^]*\n\s+2 +usage error/,
    );
  });
});

describe('output', () => {
  it('named CLI commands and options, never library calls, in any output of this file', () => {
    expect(cliTranscript()).not.toMatch(
      /\bcells\.mappings\b|\bmappings\.\w+\(|\{ force: true \}|\w\(\)\./,
    );
  });

  it('never printed the sentinel password, in any output of this file', () => {
    const transcript = cliTranscript();
    expect(transcript).toContain(`${role.name}:***@`);
    expect(transcript).not.toContain(role.password);
  });
});
