import { randomBytes, randomUUID } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import request from 'supertest';
import {
  Cells,
  CellsError,
  RequestContext,
  runWithContext,
  targetCell,
  type CellMapping,
  type CellsOptions,
} from '../../lib';
import { createCellWorld, migrateCellDatabase, widgetFor, type CellWorld } from '../support/cells';
import { assertCliBuilt, createCliProject, createProject, runCli, type CliProject } from '../support/cli';
import { createTestDatabase, rowsIn, testServerUrl, type TestDatabase } from '../support/databases';
import { startForwarder } from '../support/forwarder';
import { Widget } from '../support/widget';
import { reportFigure } from './figures';
import { createExampleApp, type ExampleApp } from '../support/example-app';
import {
  contractViolations,
  lostRows,
  outcomeOf,
  rowsOf,
  type Contract,
  type Outcome,
  type WatchedTable,
} from './support-input';
import { sleep, withTimeout } from '../../dev/wait';

// Scenario 5: malformed and hostile input through the public API, the CLI and the example's HTTP
// routes. Every case must end in a typed error (CellsError with its code), a 4xx with a JSON
// message, or a CLI exit with one clear stderr line; never a crash or a hang, and no row that
// existed before the case may be missing after it.

const SCENARIO = '5 bad input';
const SQL = `'; DROP TABLE cell_mappings; --`;
const MB = 1 << 20;

let world: CellWorld;
let example: ExampleApp;
let project: CliProject;
let watched: WatchedTable[];
let baseline: Set<string>;
let casesRun = 0;
let casesFailing = 0;

beforeAll(async () => {
  assertCliBuilt();
  world = await createCellWorld('bad', { cellCount: 2, cells: { poolSize: 2 } });
  example = await createExampleApp('badex');
  project = await createCliProject(world.api.url);
  // Data that every case must leave in place.
  const widgets = world.lib.getRepository(Widget);
  for (const cell of world.cells) {
    await targetCell(cell.mapping, () =>
      widgets.insert([widgetFor(cell.mapping.uuid), widgetFor(cell.mapping.uuid)]),
    );
  }
  await world.lib.mappings.mapInstance({
    instanceUuid: randomUUID(),
    cell: world.cells[0]!.mapping,
    projectId: 'p1',
  });
  await world.lib.mappings.mapHost('host-1', world.cells[1]!.mapping);
  for (const name of ['seed-1', 'seed-2', 'seed-3']) {
    await request(example.app)
      .post('/servers')
      .set('x-project-id', 'seed')
      .send({ name })
      .expect(201);
  }
  watched = [
    {
      url: world.api.url,
      sql: 'SELECT uuid, name, database_connection, state FROM cell_mappings',
    },
    {
      url: world.api.url,
      sql: 'SELECT instance_uuid, cell_id, project_id, queued_for_delete FROM instance_mappings',
    },
    { url: world.api.url, sql: 'SELECT host, cell_id FROM host_mappings' },
    ...world.cells.map((c) => ({
      url: c.db.url,
      sql: 'SELECT uuid, name, intended_cell, deleted_at FROM widgets',
    })),
    {
      url: example.api.url,
      sql: 'SELECT uuid, name, database_connection, state FROM cell_mappings',
    },
    {
      url: example.api.url,
      sql: 'SELECT instance_uuid, cell_id, project_id, queued_for_delete FROM instance_mappings',
    },
    ...example.cells.map((cell) => ({
      url: cell.url,
      sql: 'SELECT uuid, name, project_id, deleted_at FROM servers',
    })),
  ];
  baseline = await rowsOf(watched);
}, 120_000);

afterAll(async () => {
  await project?.remove();
  await example?.destroy();
  await world?.destroy();
}, 60_000);

// ---------------------------------------------------------------------------------------------
// Doors

const lib = () => world.lib;
const widgets = () => world.lib.getRepository(Widget);
const cellA = (): CellMapping => world.cells[0]!.mapping;
const cellUrl = (): string => world.cells[0]!.db.url;
const api = (fn: () => unknown) => outcomeOf(fn);

async function http(test: request.Test): Promise<Outcome> {
  const res = await test;
  return {
    kind: 'http',
    status: res.status,
    body: res.body as unknown,
    contentType: res.headers['content-type'],
  };
}
const app = () => request(example.app);

async function cli(...args: string[]): Promise<Outcome> {
  return { kind: 'cli', ...(await runCli(args, project.dir)) };
}

/** Throws (an untyped error, so the case fails) unless `condition` holds. */
function check(condition: boolean, what: string): void {
  if (!condition) throw new Error(`check failed: ${what}`);
}

function cellsOptions(extra: Record<string, unknown>): CellsOptions {
  return { api: world.api.url, entities: [Widget], ...extra } as unknown as CellsOptions;
}

/**
 * Maps a fresh migrated cell, opens it and starts routed calls on it, then runs `strike` while they
 * are in flight. The calls must succeed or fail with a CellsError, the other cells must keep
 * working, and the outcome is that of one more call on the struck cell.
 */
async function strikeWhileInUse(
  label: string,
  strike: (cell: CellMapping, db: TestDatabase) => Promise<void>,
): Promise<Outcome> {
  const db = await createTestDatabase(`bad_${label}`);
  let cell: CellMapping | undefined;
  try {
    await migrateCellDatabase(db.url);
    cell = await lib().mappings.createCell({
      name: `${label}-${randomBytes(3).toString('hex')}`,
      databaseConnection: db.url,
    });
    const target = cell;
    await lib().mappings.mapInstance({ instanceUuid: randomUUID(), cell: target, projectId: 'p1' });
    await targetCell(target, () => widgets().count());
    const inFlight = Array.from({ length: 12 }, (_, i) =>
      targetCell(target, () =>
        i % 2 === 0
          ? widgets().query('SELECT pg_sleep(0.2)')
          : widgets().insert(widgetFor(target.uuid)),
      ),
    );
    await sleep(50);
    await strike(target, db);
    const settled = await Promise.allSettled(inFlight);
    const untyped = settled.filter(
      (s): s is PromiseRejectedResult =>
        s.status === 'rejected' && !(s.reason instanceof CellsError),
    );
    check(
      untyped.length === 0,
      `in-flight calls failed untyped: ${untyped
        .map((s) => String(s.reason))
        .join('; ')
        .slice(0, 300)}`,
    );
    check((await targetCell(cellA(), () => widgets().count())) >= 2, 'another cell still answers');
    return await outcomeOf(() => targetCell(target, () => widgets().count()));
  } finally {
    if (cell)
      await lib()
        .mappings.deleteCell(cell.uuid, { force: true })
        .catch(() => undefined);
    await db.drop();
  }
}

/**
 * Runs `call` on a second Cells whose API database is reached through a forwarder, after mapping
 * an instance it never looked up and cutting the forwarder (the API server refuses connections).
 * The outcome must name the API database, not be the driver's ECONNREFUSED.
 */
async function duringApiOutage(
  call: (cells: Cells, instanceUuid: string) => Promise<unknown>,
): Promise<Outcome> {
  const forwarder = await startForwarder(world.api.url);
  const cells = await new Cells({
    api: { url: forwarder.url(world.api.url), poolSize: 2 },
    entities: [Widget],
    connectTimeoutMs: 2000,
  }).initialize();
  try {
    const instanceUuid = randomUUID();
    await lib().mappings.mapInstance({ instanceUuid, cell: cellA(), projectId: 'p1' });
    await forwarder.cut();
    const outcome = await outcomeOf(() => call(cells, instanceUuid));
    if (outcome.kind === 'thrown' && outcome.error instanceof CellsError) {
      check(/the API database/i.test(outcome.error.message), `names the API database: ${outcome.error.message}`);
    }
    return outcome;
  } finally {
    await forwarder.close();
    await withTimeout(cells.destroy(), 10_000, 'destroy() during the outage');
  }
}

/**
 * A CLI project over a fresh API database and three unmigrated cells, whose config's second
 * migration creates a table and then throws in the cell named `half` only.
 */
async function halfWayMigration(mode: 'all' | 'each'): Promise<Outcome> {
  const apiDb = await createTestDatabase(`bad_mig_${mode}_api`);
  const dbs = await Promise.all([0, 1, 2].map((i) => createTestDatabase(`bad_mig_${mode}_${i}`)));
  const half = dbs[1]!;
  const migProject = await createCliProject(apiDb.url);
  try {
    const setup = await new Cells({ api: apiDb.url, entities: [], migrateApi: true }).initialize();
    try {
      for (const [i, db] of dbs.entries()) {
        await setup.mappings.createCell({
          name: i === 1 ? 'half' : `whole-${i}`,
          databaseConnection: db.url,
        });
      }
    } finally {
      await setup.destroy();
    }
    const config = join(migProject.dir, 'half.config.ts');
    await writeFile(
      config,
      `import type { MigrationInterface, QueryRunner } from 'typeorm';
import { CreateWidgets1764072100000, Widget } from ${JSON.stringify(join(__dirname, '..', 'support', 'widget'))};

export class Explode1764072300000 implements MigrationInterface {
  name = 'Explode1764072300000';
  async up(queryRunner: QueryRunner): Promise<void> {
    await queryRunner.query('CREATE TABLE "explode_marker" ("id" integer)');
    const [row] = await queryRunner.query('SELECT current_database() AS db');
    if (row.db === ${JSON.stringify(half.name)}) throw new Error('Explode failed half-way, on purpose');
  }
  async down(queryRunner: QueryRunner): Promise<void> {
    await queryRunner.query('DROP TABLE "explode_marker"');
  }
}

export default {
  api: ${JSON.stringify(apiDb.url)},
  entities: [Widget],
  migrations: [CreateWidgets1764072100000, Explode1764072300000],
  connectTimeoutMs: 3000,
  cellDataSourceOptions: { migrationsTransactionMode: ${JSON.stringify(mode)} },
};
`,
    );
    // --json: the report on stdout, no progress lines, so stderr holds only the error line.
    const result = await runCli(
      ['--config', config, 'db', 'migrate', '--all', '--continue-on-error', '--json'],
      migProject.dir,
    );
    const report = JSON.parse(result.stdout) as {
      cells: Array<{ name: string; result: string; error?: string }>;
    };
    const byName = Object.fromEntries(report.cells.map((c) => [c.name, c]));
    check(
      byName['half']?.result === 'failed' &&
        /Explode failed half-way/.test(byName['half'].error ?? '') &&
        byName['whole-0']?.result === 'migrated' &&
        byName['whole-2']?.result === 'migrated',
      `the report shows the failed cell and the others migrated: ${result.stdout.slice(0, 600)}`,
    );
    for (const [i, db] of dbs.entries()) {
      const state = await migrationState(db.url);
      if (i === 1) {
        // 'all': one transaction, nothing stays; 'each': the first migration stays, fully recorded.
        const expected =
          mode === 'all'
            ? { applied: [], widgets: false, marker: false }
            : { applied: ['CreateWidgets1764072100000'], widgets: true, marker: false };
        check(
          JSON.stringify(state) === JSON.stringify(expected),
          `half-migrated cell in mode ${mode} is ${JSON.stringify(state)}`,
        );
      } else {
        const expected = {
          applied: ['CreateWidgets1764072100000', 'Explode1764072300000'],
          widgets: true,
          marker: true,
        };
        check(
          JSON.stringify(state) === JSON.stringify(expected),
          `cell ${i} is ${JSON.stringify(state)}`,
        );
      }
    }
    return { kind: 'cli', ...result };
  } finally {
    await migProject.remove();
    await Promise.all([apiDb, ...dbs].map((db) => db.drop()));
  }
}

async function migrationState(
  url: string,
): Promise<{ applied: string[]; widgets: boolean; marker: boolean }> {
  const [tables] = await rowsIn<{
    migrations: string | null;
    widgets: string | null;
    marker: string | null;
  }>(
    url,
    `SELECT to_regclass('public.migrations')::text AS migrations, to_regclass('public.widgets')::text AS widgets,
            to_regclass('public.explode_marker')::text AS marker`,
  );
  const applied = tables?.migrations
    ? (await rowsIn<{ name: string }>(url, 'SELECT name FROM migrations ORDER BY id')).map(
        (r) => r.name,
      )
    : [];
  return { applied, widgets: tables?.widgets != null, marker: tables?.marker != null };
}

// ---------------------------------------------------------------------------------------------
// The table

interface Case {
  name: string;
  contract: Contract;
  run(): Promise<Outcome>;
}

const BAD_URL = { error: 'CELLS_BAD_CONNECTION_URL' };
const INVALID = { error: 'CELLS_INVALID_ARGUMENT' };
const ONLY_POSTGRES = /supports PostgreSQL, MySQL and MariaDB/;
const MSSQL_URL = 'mssql://sa@127.0.0.1:1433/db';
const MSSQL_OPTIONS = { type: 'mssql', host: '127.0.0.1', port: 1433, username: 'sa', database: 'db' };
const hostileUrls: Array<[string, () => string]> = [
  ['an empty URL', () => ''],
  ['a URL that is not a URL', () => 'not a url at all'],
  ['an mssql:// URL', () => 'mssql://u:p@127.0.0.1:1433/db'],
  ['a URL without a database', () => 'postgres://u:p@127.0.0.1:5432'],
  ['a 1 MB URL', () => `postgres://u:p@127.0.0.1:5432/${'d'.repeat(MB)}`],
  ['a URL with a newline', () => `${cellUrl()}\nhost=evil`],
  ['a URL with a NUL byte', () => `${cellUrl()}\u0000`],
  ['a URL with a percent-encoded NUL byte', () => 'postgres://u:p@127.0.0.1:5432/d%00b'],
  ['an SQL-looking URL', () => SQL],
  // Query parameters other than sslmode/ssl/application_name were dropped without a word, so a
  // ?password= URL connected without its password.
  ['a URL with ?password=', () => `${cellUrl()}?password=hunter2`],
  ['a URL with a query parameter it does not read', () => `${cellUrl()}?target_session_attrs=read-write`],
  // A TLS mode it did not know connected in plain text.
  ['a URL with a misspelled sslmode', () => `${cellUrl()}?sslmode=requird`],
  ["a URL with MySQL's verify_identity misspelled as verify_full", () => `${cellUrl()}?sslmode=verify_full`],
  ['a mariadb:// URL with a misspelled ssl-mode', () => 'mariadb://u:p@127.0.0.1:3306/db?ssl-mode=REQUIRD'],
  ['a mysql:// URL with ssl=yes', () => 'mysql://u:p@127.0.0.1:3306/db?ssl=yes'],
];

const cases: Case[] = [
  // Connection URLs through the library.
  ...hostileUrls.map(([what, url]): Case => ({
    name: `api: createCell refuses ${what}`,
    contract: BAD_URL,
    run: () =>
      api(() =>
        lib().mappings.createCell({
          name: `url-${randomBytes(3).toString('hex')}`,
          databaseConnection: url(),
        }),
      ),
  })),
  {
    name: 'api: updateCell refuses an mssql:// URL and keeps the old one',
    contract: BAD_URL,
    run: () =>
      api(() =>
        lib().mappings.updateCell(cellA().uuid, { databaseConnection: 'mssql://u:p@h/db' }),
      ),
  },
  // Arguments of transaction() and targetCell() (raw TypeErrors and TypeORM errors before).
  {
    name: 'api: transaction(null) refuses a callback that is not a function',
    contract: INVALID,
    run: () => api(() => targetCell(cellA(), () => lib().transaction(null as never))),
  },
  {
    name: 'api: transaction(fn, null) refuses options that are not an object',
    contract: INVALID,
    run: () => api(() => targetCell(cellA(), () => lib().transaction(async () => 1, null as never))),
  },
  {
    name: 'api: transaction with an SQL-looking isolation level',
    contract: INVALID,
    run: () => api(() => targetCell(cellA(), () => lib().transaction(async () => 1, { isolation: 'BOGUS; DROP TABLE widgets' as never }))),
  },
  {
    name: "api: transaction with isolation 'SNAPSHOT', which PostgreSQL does not run",
    contract: INVALID,
    run: () => api(() => targetCell(cellA(), () => lib().transaction(async () => 1, { isolation: 'SNAPSHOT' }))),
  },
  {
    name: 'api: targetCell(cell, 5) refuses a callback that is not a function',
    contract: INVALID,
    run: () => api(() => targetCell(cellA(), 5 as never)),
  },
  // Engines other than PostgreSQL, MySQL and MariaDB: refused, naming the supported ones (an api of type mysql used to
  // be treated as PostgreSQL).
  {
    name: 'api: createCell refuses an mssql:// URL, naming the supported engines',
    contract: { ...BAD_URL, message: ONLY_POSTGRES },
    run: () =>
      api(() => lib().mappings.createCell({ name: 'on-mysql', databaseConnection: MSSQL_URL })),
  },
  {
    name: 'api: updateCell refuses an mssql:// URL, naming the supported engines',
    contract: { ...BAD_URL, message: ONLY_POSTGRES },
    run: () => api(() => lib().mappings.updateCell(cellA().uuid, { databaseConnection: MSSQL_URL })),
  },
  {
    name: 'api: new Cells refuses an mssql:// API URL, naming the supported engines',
    contract: { ...BAD_URL, message: ONLY_POSTGRES },
    run: () => api(() => new Cells(cellsOptions({ api: MSSQL_URL }))),
  },
  {
    name: "api: new Cells refuses API options of type 'mssql', naming the supported engines",
    contract: { ...INVALID, message: ONLY_POSTGRES },
    run: () => api(() => new Cells(cellsOptions({ api: MSSQL_OPTIONS }))),
  },
  {
    name: "api: new Cells refuses main options of type 'mssql', naming the supported engines",
    contract: { ...INVALID, message: ONLY_POSTGRES },
    run: () => api(() => new Cells(cellsOptions({ main: MSSQL_OPTIONS }))),
  },
  {
    name: "api: new Cells refuses API options of type 'postgres' with an mssql:// url",
    contract: { ...BAD_URL, message: ONLY_POSTGRES },
    run: () => api(() => new Cells(cellsOptions({ api: { type: 'postgres', url: MSSQL_URL } }))),
  },
  {
    name: "api: new Cells refuses cellDataSourceOptions of type 'mssql', naming the supported engines",
    contract: { ...INVALID, message: ONLY_POSTGRES },
    run: () => api(() => new Cells(cellsOptions({ cellDataSourceOptions: { type: 'mssql' } as never }))),
  },
  {
    name: "api: new Cells refuses cellDataSourceOptions of type 'mysql': each cell's URL names its engine",
    contract: { ...INVALID, message: /must not set 'type'/ },
    run: () => api(() => new Cells(cellsOptions({ cellDataSourceOptions: { type: 'mysql' } as never }))),
  },
  {
    name: "api: new Cells refuses API options of type 'postgres' with a mysql:// url",
    contract: { ...INVALID, message: /has type 'postgres' but its url is a mysql URL/ },
    run: () => api(() => new Cells(cellsOptions({ api: { type: 'postgres', url: 'mysql://root@127.0.0.1:3306/mysql' } }))),
  },
  {
    name: 'api: new Cells refuses an SQL-looking API URL',
    contract: BAD_URL,
    run: () => api(() => new Cells({ api: SQL, entities: [] })),
  },
  // Uuids and names.
  {
    name: 'api: cellByUuid refuses a malformed uuid',
    contract: INVALID,
    run: () => api(() => lib().mappings.cellByUuid('0000-not-a-uuid')),
  },
  {
    name: 'api: cellByUuid reports an unknown uuid',
    contract: { error: 'CELLS_UNKNOWN_CELL' },
    run: () => api(() => lib().mappings.cellByUuid(randomUUID())),
  },
  {
    name: 'api: cell() reports an SQL-looking name as unknown',
    contract: { error: 'CELLS_UNKNOWN_CELL' },
    run: () => api(() => lib().mappings.cell(SQL)),
  },
  {
    name: 'api: createCell stores an SQL-looking name verbatim',
    contract: { ok: true },
    run: () =>
      api(async () => {
        const name = `${SQL} ${randomBytes(3).toString('hex')}`;
        const created = await lib().mappings.createCell({ name, databaseConnection: cellUrl() });
        check(
          (await lib().mappings.cellByName(name)).uuid === created.uuid,
          'the SQL-looking name round-trips',
        );
      }),
  },
  {
    name: 'api: createCell stores a unicode name verbatim',
    contract: { ok: true },
    run: () =>
      api(async () => {
        const name = `célula-細胞-🧫-${randomBytes(2).toString('hex')}`;
        const created = await lib().mappings.createCell({ name, databaseConnection: cellUrl() });
        check(
          (await lib().mappings.cell(name)).uuid === created.uuid,
          'the unicode name round-trips',
        );
      }),
  },
  {
    name: 'api: createCell refuses a 10 MB name',
    contract: INVALID,
    run: () =>
      api(() =>
        lib().mappings.createCell({ name: 'n'.repeat(10 * MB), databaseConnection: cellUrl() }),
      ),
  },
  {
    name: 'api: createCell refuses an empty name',
    contract: INVALID,
    run: () => api(() => lib().mappings.createCell({ name: '', databaseConnection: cellUrl() })),
  },
  {
    name: 'api: createCell refuses a name with a NUL byte',
    contract: INVALID,
    run: () =>
      api(() =>
        lib().mappings.createCell({ name: 'nul\u0000name', databaseConnection: cellUrl() }),
      ),
  },
  {
    name: 'api: cellByName refuses a name with a NUL byte',
    contract: INVALID,
    run: () => api(() => lib().mappings.cellByName('\u0000')),
  },
  {
    name: 'api: createCell refuses a taken name',
    contract: { error: 'CELLS_DUPLICATE_MAPPING' },
    run: () =>
      api(() => lib().mappings.createCell({ name: cellA().name, databaseConnection: cellUrl() })),
  },
  {
    name: 'api: createCell refuses a malformed uuid',
    contract: INVALID,
    run: () =>
      api(() => lib().mappings.createCell({ uuid: SQL, name: 'x', databaseConnection: cellUrl() })),
  },
  {
    name: 'api: mapHost stores an SQL-looking host verbatim',
    contract: { ok: true },
    run: () =>
      api(async () => {
        const host = `'; DROP TABLE host_mappings; -- ${randomBytes(2).toString('hex')}`;
        await lib().mappings.mapHost(host, cellA());
        check((await lib().mappings.hostCell(host)).uuid === cellA().uuid, 'the host round-trips');
      }),
  },
  {
    name: 'api: mapInstance refuses a malformed instance uuid',
    contract: INVALID,
    run: () =>
      api(() => lib().mappings.mapInstance({ instanceUuid: SQL, cell: cellA(), projectId: 'p' })),
  },
  {
    name: 'api: mapInstance refuses a 10 MB project id',
    contract: INVALID,
    run: () =>
      api(() =>
        lib().mappings.mapInstance({
          instanceUuid: randomUUID(),
          cell: cellA(),
          projectId: 'p'.repeat(10 * MB),
        }),
      ),
  },
  {
    name: 'api: instanceCell reports an unknown instance',
    contract: { error: 'CELLS_UNKNOWN_INSTANCE' },
    run: () => api(() => lib().mappings.instanceCell(randomUUID())),
  },
  {
    name: 'api: hostCell reports an unknown host',
    contract: { error: 'CELLS_UNKNOWN_HOST' },
    run: () => api(() => lib().mappings.hostCell(SQL)),
  },
  // Contexts.
  {
    name: 'api: RequestContext refuses readDeleted "maybe"',
    contract: INVALID,
    run: () => api(() => new RequestContext({ readDeleted: 'maybe' as never })),
  },
  {
    name: 'api: the readDeleted setter refuses a number',
    contract: INVALID,
    run: () => api(() => void (new RequestContext().readDeleted = 42 as never)),
  },
  {
    name: 'api: a routed find outside any context',
    contract: { error: 'CELLS_NO_CONTEXT' },
    run: () => api(() => widgets().find()),
  },
  {
    name: 'api: a transaction outside any context',
    contract: { error: 'CELLS_NO_CONTEXT' },
    run: () => api(() => lib().transaction(async () => 1)),
  },
  {
    name: 'api: a routed find in an untargeted context without a main database',
    contract: { error: 'CELLS_NO_TARGET_CELL' },
    run: () => api(() => runWithContext(new RequestContext(), () => widgets().find())),
  },
  {
    name: 'api: runWithContext refuses a plain object',
    contract: INVALID,
    run: () => api(() => runWithContext({} as never, () => 1)),
  },
  {
    name: 'api: targetCell refuses an SQL-looking cell',
    contract: INVALID,
    run: () => api(() => targetCell(SQL, () => 1)),
  },
  {
    name: 'api: targetCell refuses an object whose uuid is a number',
    contract: INVALID,
    run: () => api(() => targetCell({ uuid: 42 } as never, () => 1)),
  },
  {
    name: 'api: a routed call to an unmapped cell uuid',
    contract: { error: 'CELLS_UNKNOWN_CELL' },
    run: () => api(() => targetCell(randomUUID(), () => widgets().count())),
  },
  {
    name: "api: getRepository refuses db 'other'",
    contract: INVALID,
    run: () => api(() => lib().getRepository(Widget, 'other' as never)),
  },
  {
    name: 'api: scatterGather refuses a negative timeout',
    contract: INVALID,
    run: () =>
      api(() => lib().scatterGather([cellA()], () => widgets().count(), { timeoutMs: -1 })),
  },
  // Options of new Cells().
  {
    name: 'api: new Cells(null)',
    contract: INVALID,
    run: () => api(() => new Cells(null as never)),
  },
  {
    name: 'api: new Cells with a numeric api',
    contract: INVALID,
    run: () => api(() => new Cells(cellsOptions({ api: 42 }))),
  },
  {
    name: 'api: new Cells without entities',
    contract: INVALID,
    run: () => api(() => new Cells(cellsOptions({ entities: undefined }))),
  },
  {
    name: "api: new Cells with maxOpenCells 'ten'",
    contract: INVALID,
    run: () => api(() => new Cells(cellsOptions({ maxOpenCells: 'ten' }))),
  },
  {
    name: 'api: new Cells with poolSize 0',
    contract: INVALID,
    run: () => api(() => new Cells(cellsOptions({ poolSize: 0 }))),
  },
  {
    name: 'api: new Cells with idleTimeoutMs NaN',
    contract: INVALID,
    run: () => api(() => new Cells(cellsOptions({ idleTimeoutMs: NaN }))),
  },
  {
    name: 'api: new Cells with a logger that is a string',
    contract: INVALID,
    run: () => api(() => new Cells(cellsOptions({ logger: 'yes' }))),
  },
  {
    name: 'api: new Cells with a negative mapping-cache ttl',
    contract: INVALID,
    run: () => api(() => new Cells(cellsOptions({ mappingCache: { ttlMs: -5 } }))),
  },
  {
    name: 'api: new Cells with cellDataSourceOptions that are a string',
    contract: INVALID,
    run: () => api(() => new Cells(cellsOptions({ cellDataSourceOptions: 'logging' }))),
  },
  {
    name: 'api: new Cells with maxOpenCells 1e9 (heap exhaustion)',
    contract: INVALID,
    run: () => api(() => new Cells(cellsOptions({ maxOpenCells: 1e9 }))),
  },
  {
    name: 'api: new Cells with maxOpenCells 2**32 (RangeError)',
    contract: INVALID,
    run: () => api(() => new Cells(cellsOptions({ maxOpenCells: 2 ** 32 }))),
  },
  {
    name: 'api: new Cells with maxOpenCells one over its maximum',
    contract: INVALID,
    run: () => api(() => new Cells(cellsOptions({ maxOpenCells: 10_001 }))),
  },
  {
    name: 'api: new Cells with maxOpenCells at its maximum',
    contract: { ok: true },
    run: () => api(() => new Cells(cellsOptions({ maxOpenCells: 10_000 })).destroy()),
  },
  {
    name: 'api: new Cells with maxOpenCells Infinity',
    contract: INVALID,
    run: () => api(() => new Cells(cellsOptions({ maxOpenCells: Infinity }))),
  },
  {
    name: 'api: new Cells with poolSize 1e9',
    contract: INVALID,
    run: () => api(() => new Cells(cellsOptions({ poolSize: 1e9 }))),
  },
  {
    name: 'api: new Cells with idleTimeoutMs over the timer limit',
    contract: INVALID,
    run: () => api(() => new Cells(cellsOptions({ idleTimeoutMs: 2 ** 31 }))),
  },
  {
    name: 'api: new Cells with connectTimeoutMs 1e12',
    contract: INVALID,
    run: () => api(() => new Cells(cellsOptions({ connectTimeoutMs: 1e12 }))),
  },
  {
    name: 'api: new Cells with mappingCache.max 1e9',
    contract: INVALID,
    run: () => api(() => new Cells(cellsOptions({ mappingCache: { max: 1e9 } }))),
  },
  {
    name: 'api: new Cells with mappingCache.ttlMs over the timer limit',
    contract: INVALID,
    run: () => api(() => new Cells(cellsOptions({ mappingCache: { ttlMs: 2 ** 31 } }))),
  },
  {
    name: 'api: new Cells with mappingCache.pollIntervalMs 0',
    contract: INVALID,
    run: () => api(() => new Cells(cellsOptions({ mappingCache: { pollIntervalMs: 0 } }))),
  },
  {
    name: "api: new Cells with migrateApi 'false'",
    contract: INVALID,
    run: () => api(() => new Cells(cellsOptions({ migrateApi: 'false' }))),
  },
  // Per-cell query deadlines: a plain object of deadlines by cell name or uuid.
  ...(
    [
      ['null', null],
      ['an array', [400]],
      ['a Map', new Map([['c', 400]])],
      ['a negative deadline', { c: -1 }],
      ['a fractional deadline', { c: 1.5 }],
      ["a string deadline '400'", { c: '400' }],
      ['a deadline over the timer limit', { c: 2 ** 31 }],
      ['an undefined deadline', { c: undefined }],
      ['an empty key', { '': 400 }],
      ['a key with a NUL byte', { 'c\u0000x': 400 }],
      ['a key over 255 characters', { ['c'.repeat(256)]: 400 }],
      ['a key with a lone surrogate', { 'c\ud800': 400 }],
    ] as const
  ).map(
    ([what, value]): Case => ({
      name: `api: new Cells with cellQueryTimeoutMs holding ${what}`,
      contract: INVALID,
      run: () => api(() => new Cells(cellsOptions({ cellQueryTimeoutMs: value }))),
    }),
  ),
  {
    name: 'api: new Cells with cellQueryTimeoutMs at its bounds, by name and by uuid',
    contract: { ok: true },
    run: () =>
      api(() =>
        new Cells(
          cellsOptions({ cellQueryTimeoutMs: { c: 0, '5F0C7E4A-1B2C-4D3E-8F90-A1B2C3D4E5F6': 2_147_483_647 } }),
        ).destroy(),
      ),
  },
  ...(
    [
      ['url', () => cellUrl()],
      ['host', () => '127.0.0.1'],
      ['port', () => 5432],
      ['username', () => 'postgres'],
      ['password', () => 'secret'],
      ['database', () => 'postgres'],
      ['replication', () => ({ master: { url: cellUrl() }, slaves: [] })],
      ['ssl', () => true],
      // MySQL's: a socket path sent every MariaDB cell to one local server; the others replace a
      // connection setting or the driver.
      ['socketPath', () => '/run/mysqld/mysqld.sock'],
      ['connectTimeout', () => 60_000],
      ['driver', () => ({})],
      ['localAddress', () => '127.0.0.1'],
    ] as Array<[string, () => unknown]>
  ).map(
    ([field, value]): Case => ({
      name: `api: new Cells refuses cellDataSourceOptions.${field}`,
      contract: INVALID,
      run: () => api(() => new Cells(cellsOptions({ cellDataSourceOptions: { [field]: value() } }))),
    }),
  ),
  ...['connectionString', 'host', 'password', 'user', 'database'].map(
    (field): Case => ({
      name: `api: new Cells refuses cellDataSourceOptions.extra.${field}`,
      contract: INVALID,
      run: () =>
        api(
          () => new Cells(cellsOptions({ cellDataSourceOptions: { extra: { [field]: cellUrl() } } })),
        ),
    }),
  ),
  {
    name: 'api: new Cells keeps cellDataSourceOptions without connection fields',
    contract: { ok: true },
    run: () =>
      api(() =>
        new Cells(
          cellsOptions({ cellDataSourceOptions: { logging: false, extra: { application_name: 'x' } } }),
        ).destroy(),
      ),
  },
  // String booleans and other wrongly typed arguments: nothing may be written.
  {
    name: "api: RequestContext refuses isAdmin 'false'",
    contract: INVALID,
    run: () => api(() => new RequestContext({ isAdmin: 'false' as never })),
  },
  {
    name: "api: createCell refuses disabled 'false'",
    contract: INVALID,
    run: () =>
      api(() =>
        lib().mappings.createCell({
          name: `sb-${randomBytes(3).toString('hex')}`,
          databaseConnection: cellUrl(),
          disabled: 'false' as never,
        }),
      ),
  },
  {
    name: "api: updateCell refuses disabled 'false' and leaves the cell enabled",
    contract: INVALID,
    run: async () => {
      const outcome = await api(() =>
        lib().mappings.updateCell(cellA().uuid, { disabled: 'false' as never }),
      );
      check(!(await lib().mappings.cellByUuid(cellA().uuid)).disabled, 'the cell is still enabled');
      return outcome;
    },
  },
  {
    name: "api: deleteCell refuses force 'no' and deletes nothing",
    contract: INVALID,
    run: () => api(() => lib().mappings.deleteCell(cellA().uuid, { force: 'no' as never })),
  },
  {
    name: "api: setQueuedForDelete refuses 'false'",
    contract: INVALID,
    run: () =>
      api(() => lib().mappings.setQueuedForDelete(randomUUID(), 'false' as never)),
  },
  {
    name: "api: allCells refuses includeCell0 'false'",
    contract: INVALID,
    run: () => api(() => lib().mappings.allCells({ includeCell0: 'false' as never })),
  },
  {
    name: "api: scatterGatherAll refuses includeDisabled 'no'",
    contract: INVALID,
    run: () =>
      api(() =>
        lib().scatterGatherAll(async () => 1, { includeDisabled: 'no' as never }),
      ),
  },
  {
    name: 'api: scatterGatherAll with null options',
    contract: INVALID,
    run: () => api(() => lib().scatterGatherAll(async () => 1, null as never)),
  },
  {
    name: 'api: destroy() with a negative timeoutMs',
    contract: INVALID,
    run: () => api(() => new Cells({ api: testServerUrl(), entities: [] }).destroy({ timeoutMs: -1 })),
  },
  // Null and wrongly shaped arguments.
  {
    name: 'api: new RequestContext(null)',
    contract: INVALID,
    run: () => api(() => new RequestContext(null as never)),
  },
  {
    name: "api: new RequestContext('cell1')",
    contract: INVALID,
    run: () => api(() => new RequestContext('cell1' as never)),
  },
  {
    name: 'api: updateCell(x, null) writes nothing',
    contract: INVALID,
    run: () => api(() => lib().mappings.updateCell(cellA().uuid, null as never)),
  },
  {
    name: 'api: deleteCell(x, null) deletes nothing',
    contract: INVALID,
    run: () => api(() => lib().mappings.deleteCell(cellA().uuid, null as never)),
  },
  {
    name: 'api: mapInstance(null)',
    contract: INVALID,
    run: () => api(() => lib().mappings.mapInstance(null as never)),
  },
  {
    name: 'api: allCells(null)',
    contract: INVALID,
    run: () => api(() => lib().mappings.allCells(null as never)),
  },
  {
    name: 'api: scatterGather with null options',
    contract: INVALID,
    run: () => api(() => lib().scatterGather([cellA()], async () => 1, null as never)),
  },
  {
    name: 'api: scatterGather with a signal that is not an AbortSignal',
    contract: INVALID,
    run: () =>
      api(() => lib().scatterGather([cellA()], async () => 1, { signal: {} as never })),
  },
  {
    name: "api: scatterGather with the signal 'abort'",
    contract: INVALID,
    run: () =>
      api(() => lib().scatterGather([cellA()], async () => 1, { signal: 'abort' as never })),
  },
  // User ids, request ids and names PostgreSQL would not store as given.
  {
    name: 'api: RequestContext refuses a userId of 256 characters',
    contract: INVALID,
    run: () => api(() => new RequestContext({ userId: 'u'.repeat(256) })),
  },
  {
    name: 'api: RequestContext refuses a userId with a NUL byte',
    contract: INVALID,
    run: () => api(() => new RequestContext({ userId: 'u\u0000' })),
  },
  {
    name: 'api: RequestContext refuses a numeric userId',
    contract: INVALID,
    run: () => api(() => new RequestContext({ userId: 42 as never })),
  },
  {
    name: 'api: RequestContext refuses a requestId of 1 MB',
    contract: INVALID,
    run: () => api(() => new RequestContext({ requestId: 'r'.repeat(MB) })),
  },
  {
    name: 'api: RequestContext refuses a projectId with a lone surrogate',
    contract: INVALID,
    run: () => api(() => new RequestContext({ projectId: 'p\uD800' })),
  },
  {
    name: 'api: mapInstance refuses a userId of 256 characters',
    contract: INVALID,
    run: () =>
      api(() =>
        lib().mappings.mapInstance({
          instanceUuid: randomUUID(),
          cell: cellA(),
          projectId: 'p1',
          userId: 'u'.repeat(256),
        }),
      ),
  },
  {
    name: 'api: mapInstance refuses a userId with a NUL byte',
    contract: INVALID,
    run: () =>
      api(() =>
        lib().mappings.mapInstance({
          instanceUuid: randomUUID(),
          cell: cellA(),
          projectId: 'p1',
          userId: 'u\u0000',
        }),
      ),
  },
  {
    name: 'api: mapInstance stores a userId of 255 characters',
    contract: { ok: true },
    run: () =>
      api(async () => {
        const instanceUuid = randomUUID();
        await lib().mappings.mapInstance({
          instanceUuid,
          cell: cellA(),
          projectId: 'p1',
          userId: 'u'.repeat(255),
        });
        const stored = await lib().mappings.instanceMapping(instanceUuid);
        check(stored?.userId === 'u'.repeat(255), 'the user id round-trips');
      }),
  },
  {
    name: 'api: createCell refuses a name with a lone surrogate',
    contract: INVALID,
    run: () =>
      api(() =>
        lib().mappings.createCell({ name: `lone-\uD83D-${randomBytes(2).toString('hex')}`, databaseConnection: cellUrl() }),
      ),
  },
  {
    name: 'api: updateCell refuses a name with a lone low surrogate',
    contract: INVALID,
    run: () => api(() => lib().mappings.updateCell(cellA().uuid, { name: '\uDC00' })),
  },
  {
    name: 'api: mapHost refuses a host with a lone surrogate',
    contract: INVALID,
    run: () => api(() => lib().mappings.mapHost('host-\uD800', cellA())),
  },
  {
    name: 'api: createCell refuses a numeric transport URL',
    contract: INVALID,
    run: () =>
      api(() =>
        lib().mappings.createCell({
          name: `tu-${randomBytes(3).toString('hex')}`,
          databaseConnection: cellUrl(),
          transportUrl: 42 as never,
        }),
      ),
  },
  {
    name: 'api: updateCell refuses a transport URL with a NUL byte',
    contract: INVALID,
    run: () =>
      api(() => lib().mappings.updateCell(cellA().uuid, { transportUrl: 'amqp://mq/\u0000' })),
  },
  // The API database goes away.
  {
    name: 'api: targetInstanceCell of an uncached instance during an API database outage',
    contract: { error: 'CELLS_CELL_UNREACHABLE' },
    run: () => duringApiOutage((cells, instanceUuid) => cells.targetInstanceCell(instanceUuid, () => 1)),
  },
  {
    name: 'api: cellByName during an API database outage',
    contract: { error: 'CELLS_CELL_UNREACHABLE' },
    run: () => duringApiOutage((cells) => cells.mappings.cellByName(cellA().name)),
  },
  {
    name: 'api: mapInstance during an API database outage',
    contract: { error: 'CELLS_CELL_UNREACHABLE' },
    run: () =>
      duringApiOutage((cells) =>
        cells.mappings.mapInstance({ instanceUuid: randomUUID(), cell: cellA(), projectId: 'p1' }),
      ),
  },
  // A cell that goes away under running calls.
  {
    name: 'api: a cell deleted (force) while calls run on it',
    contract: { error: 'CELLS_UNKNOWN_CELL' },
    run: () =>
      strikeWhileInUse('deleted', (cell) =>
        lib()
          .mappings.deleteCell(cell.uuid, { force: true })
          .then(() => undefined),
      ),
  },
  {
    name: 'api: a cell whose database is dropped while calls run on it',
    contract: { error: 'CELLS_CELL_UNREACHABLE' },
    run: () => strikeWhileInUse('dropped', (_cell, db) => db.drop()),
  },
  // The example's HTTP routes.
  {
    name: 'http: GET /servers/:uuid with a malformed uuid',
    contract: { status: 400, code: 'BAD_UUID' },
    run: () => http(app().get('/servers/not-a-uuid')),
  },
  {
    name: 'http: GET /servers/:uuid with an unknown uuid',
    contract: { status: 404, code: 'CELLS_UNKNOWN_INSTANCE' },
    run: () => http(app().get(`/servers/${randomUUID()}`)),
  },
  {
    name: 'http: GET /servers/:uuid with an SQL-looking id',
    contract: { status: 400, code: 'BAD_UUID' },
    run: () => http(app().get(`/servers/${encodeURIComponent(SQL)}`)),
  },
  {
    name: 'http: GET /servers/:uuid with a NUL byte',
    contract: { status: 400, code: 'BAD_UUID' },
    run: () => http(app().get('/servers/%00')),
  },
  {
    name: 'http: GET /servers?limit=-1',
    contract: { status: 400, code: 'BAD_LIMIT' },
    run: () => http(app().get('/servers?limit=-1')),
  },
  {
    name: 'http: GET /servers?limit=1e9',
    contract: { status: 400, code: 'BAD_LIMIT' },
    run: () => http(app().get('/servers?limit=1e9')),
  },
  {
    name: 'http: GET /servers?limit=1000000000',
    contract: { status: 400, code: 'BAD_LIMIT' },
    run: () => http(app().get('/servers?limit=1000000000')),
  },
  {
    name: 'http: GET /servers with a repeated limit',
    contract: { status: 400, code: 'BAD_LIMIT' },
    run: () => http(app().get('/servers?limit=1&limit=2')),
  },
  {
    name: 'http: GET /servers?marker=garbage',
    contract: { status: 400, code: 'BAD_MARKER' },
    run: () => http(app().get(`/servers?marker=${encodeURIComponent(SQL)}`)),
  },
  {
    name: 'http: GET /servers with an unknown marker',
    contract: { status: 400, code: 'BAD_MARKER' },
    run: () => http(app().get(`/servers?marker=${randomUUID()}`)),
  },
  {
    name: 'http: GET /servers?read_deleted=maybe',
    contract: { status: 400, code: 'BAD_READ_DELETED' },
    run: () => http(app().get('/servers?read_deleted=maybe').set('x-roles', 'admin')),
  },
  {
    name: 'http: POST /servers with a 10 MB name',
    contract: { status: 413 },
    run: () =>
      http(
        app()
          .post('/servers')
          .send({ name: 'n'.repeat(10 * MB) }),
      ),
  },
  {
    name: 'http: POST /servers with an empty name',
    contract: { status: 400, code: 'BAD_NAME' },
    run: () => http(app().post('/servers').send({ name: '' })),
  },
  {
    name: 'http: POST /servers with a NUL byte in the name',
    contract: { status: 400, code: 'BAD_NAME' },
    run: () => http(app().post('/servers').send({ name: 'web\u0000one' })),
  },
  {
    name: 'http: POST /servers with the JSON body null',
    contract: { status: 400 },
    run: () => http(app().post('/servers').set('content-type', 'application/json').send('null')),
  },
  {
    name: 'http: POST /servers with a unicode name round-trips',
    contract: { ok: true },
    run: async () => {
      const name = 'сервер-サーバー-🚀';
      const created = await app().post('/servers').set('x-project-id', 'uni').send({ name });
      check(created.status === 201, `created: ${created.status}`);
      const uuid = (created.body as { server: { uuid: string } }).server.uuid;
      const read = await app().get(`/servers/${uuid}`).set('x-project-id', 'uni');
      check(
        (read.body as { server?: { name?: string } }).server?.name === name,
        'the unicode name round-trips',
      );
      return http(app().get(`/servers/${uuid}`).set('x-project-id', 'uni'));
    },
  },
  {
    name: 'http: POST /servers?cell=<SQL>',
    contract: { status: 400, code: 'CELLS_UNKNOWN_CELL' },
    run: () =>
      http(
        app()
          .post(`/servers?cell=${encodeURIComponent(SQL)}`)
          .send({ name: 'x' }),
      ),
  },
  {
    name: 'http: POST /servers?cell=<NUL>',
    contract: { status: 400 },
    run: () => http(app().post('/servers?cell=%00').send({ name: 'x' })),
  },
  {
    name: 'http: POST /servers?cell=<300 characters>',
    contract: { status: 400, code: 'BAD_CELL' },
    run: () =>
      http(
        app()
          .post(`/servers?cell=${'c'.repeat(300)}`)
          .send({ name: 'x' }),
      ),
  },
  {
    name: 'http: DELETE /servers/:uuid with a malformed uuid',
    contract: { status: 400, code: 'BAD_UUID' },
    run: () => http(app().delete('/servers/garbage')),
  },
  // The CLI.
  ...hostileUrls
    .filter(([what]) => !/NUL|1 MB/.test(what))
    .map(([what, url]): Case => ({
      name: `cli: cell create refuses ${what}`,
      contract: { exit: 2, stderr: /not a valid connection URL/ },
      run: () => cli('cell', 'create', '--name', 'bad-url', '--database-connection', url()),
    })),
  {
    name: 'cli: cell create refuses a 100 kB URL',
    contract: { exit: 2, stderr: /not a valid connection URL/ },
    run: () =>
      cli(
        'cell',
        'create',
        '--no-verify',
        '--name',
        'long-url',
        '--database-connection',
        `postgres://u:p@h/${'d'.repeat(100_000)}`,
      ),
  },
  {
    name: 'cli: cell create refuses a malformed --uuid',
    contract: { exit: 2, stderr: /must be a uuid/ },
    run: () =>
      cli(
        'cell',
        'create',
        '--no-verify',
        '--name',
        'x',
        '--uuid',
        SQL,
        '--database-connection',
        cellUrl(),
      ),
  },
  {
    name: 'cli: cell create refuses an empty --name',
    contract: { exit: 2 },
    run: () =>
      cli('cell', 'create', '--no-verify', '--name', '', '--database-connection', cellUrl()),
  },
  {
    name: 'cli: cell create stores an SQL-looking --name verbatim',
    contract: { ok: true },
    run: async () => {
      const name = `${SQL}-cli-${randomBytes(2).toString('hex')}`;
      const created = await cli(
        'cell',
        'create',
        '--no-verify',
        '--name',
        name,
        '--database-connection',
        cellUrl(),
      );
      check((await lib().mappings.cellByName(name)).name === name, 'the name round-trips');
      return created;
    },
  },
  {
    name: 'cli: cell delete of an unknown uuid',
    contract: { exit: 1, stderr: /Unknown cell/ },
    run: () => cli('cell', 'delete', randomUUID()),
  },
  {
    name: 'cli: cell delete of an SQL-looking name',
    contract: { exit: 1, stderr: /Unknown cell/ },
    run: () => cli('cell', 'delete', SQL),
  },
  {
    name: 'cli: cell update refuses an mssql:// URL',
    contract: { exit: 2, stderr: /not a valid connection URL/ },
    run: () => cli('cell', 'update', cellA().name, '--database-connection', 'mssql://u:p@h/db'),
  },
  {
    name: 'cli: cell create names the cell once in a bad-URL message, without a CellMapping to fix',
    contract: { exit: 2, stderr: /The database connection of cell 'url-words' is not a valid connection URL \(its password query parameter is not a secret reference \(env:NAME, file:\/path or kind:reference\); a literal password goes after the user name\)\. Expected a URL such as postgres:\/\/user@host:5432\/database \(or mysql:\/\/, mariadb:\/\/\); a password, if any, follows the user name after a colon\.$/m },
    // Without the server's own password (the embedded server has one), so only the query gives one.
    run: () => cli('cell', 'create', '--name', 'url-words', '--database-connection', `${withoutPassword(cellUrl())}?password=x`),
  },
  {
    name: 'api: new Cells names the API database in a bad-URL message',
    contract: { ...BAD_URL, message: /^The database connection of the API database is not a valid connection URL \(query parameter 'foo'/ },
    run: () => api(() => new Cells(cellsOptions({ api: `${cellUrl()}?foo=1` }))),
  },
  {
    name: 'api: new Cells names the default main database in a bad-URL message',
    contract: { ...BAD_URL, message: /^The database connection of the default main database is not a valid connection URL \(it names no single database/ },
    run: () => api(() => new Cells(cellsOptions({ main: 'postgres://u@127.0.0.1:5432' }))),
  },
  {
    name: "cli: a config whose 'api' reads an unset environment variable says so",
    contract: { exit: 1, stderr: /cells\.config\.js: its 'api' option is undefined.*environment variable/ },
    run: async () => {
      const unset = await createProject({
        'cells.config.js': `module.exports = { api: process.env.CELLS_NO_SUCH_VARIABLE_${process.pid}, entities: [] };\n`,
      });
      try {
        return { kind: 'cli', ...(await runCli(['cell', 'list'], unset.dir)) };
      } finally {
        await unset.remove();
      }
    },
  },
  {
    name: 'cli: cell create refuses an mssql:// URL, naming the supported engines',
    contract: { exit: 2, stderr: ONLY_POSTGRES },
    run: () => cli('cell', 'create', '--name', 'on-mysql', '--database-connection', MSSQL_URL),
  },
  {
    name: "cli: a config whose API database is of type 'mssql' is refused, naming the supported engines",
    contract: { exit: 1, stderr: /cells\.config\.js: The API database has type 'mssql'.*supports PostgreSQL, MySQL and MariaDB/ },
    run: async () => {
      const mysql = await createProject({
        'cells.config.js': `module.exports = { api: ${JSON.stringify(MSSQL_OPTIONS)}, entities: [] };\n`,
      });
      try {
        return { kind: 'cli', ...(await runCli(['cell', 'list'], mysql.dir)) };
      } finally {
        await mysql.remove();
      }
    },
  },
  {
    name: 'cli: instance verify of a malformed uuid',
    contract: { exit: 2, stderr: /must be a uuid/ },
    run: () => cli('instance', 'verify', SQL),
  },
  {
    name: 'cli: instance map with a malformed uuid',
    contract: { exit: 2 },
    run: () => cli('instance', 'map', '--uuid', 'nope', '--cell', cellA().name, '--project', 'p'),
  },
  {
    name: 'cli: instance map to an unknown cell',
    contract: { exit: 1, stderr: /Unknown cell/ },
    run: () => cli('instance', 'map', '--uuid', randomUUID(), '--cell', SQL, '--project', 'p'),
  },
  {
    name: 'cli: db status of an unknown cell',
    contract: { exit: 1, stderr: /Unknown cell/ },
    run: () => cli('db', 'status', '--cell', randomUUID()),
  },
  {
    name: 'cli: db migrate with a migration failing half-way (transaction all)',
    contract: { exit: 1, stderr: /1 of 3 cell\(s\) failed to migrate/ },
    run: () => halfWayMigration('all'),
  },
  {
    name: 'cli: db migrate with a migration failing half-way (transaction each)',
    contract: { exit: 1, stderr: /1 of 3 cell\(s\) failed to migrate/ },
    run: () => halfWayMigration('each'),
  },
];

describe('bad input', () => {
  it.each(cases.map((c) => [c.name, c] as const))(
    '%s',
    async (_name, c) => {
      const outcome = await withTimeout(c.run(), 45_000, c.name).catch(
        (error: unknown): Outcome => ({ kind: 'thrown', error }),
      );
      const violations = contractViolations(outcome, c.contract);
      const lost = lostRows(baseline, await rowsOf(watched));
      if (lost.length > 0)
        violations.push(`lost ${lost.length} pre-existing row(s), e.g. ${lost[0]!.slice(0, 200)}`);
      casesRun++;
      if (violations.length > 0) casesFailing++;
      expect(violations).toEqual([]);
    },
    60_000,
  );

  it('reports its figures', () => {
    reportFigure(SCENARIO, 'cases run', casesRun, '>= 30');
    reportFigure(SCENARIO, 'cases failing the contract', casesFailing, 'must be 0');
    expect(casesRun).toBe(cases.length);
    expect(casesRun).toBeGreaterThanOrEqual(30);
    expect(casesFailing).toBe(0);
  });
});

/** `url` without the password of its user information. */
function withoutPassword(url: string): string {
  const u = new URL(url);
  u.password = '';
  return u.toString();
}
