import { randomUUID } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { inspect } from 'node:util';
import request from 'supertest';
import {
  CellMapping,
  Cells,
  RequestContext,
  getContext,
  runWithContext,
  targetCell,
  type CellsLogEvent,
} from '../../lib';
import { migrateCellDatabase, widgetFor } from '../support/cells';
import {
  assertCliBuilt,
  createCliWorld,
  createSentinelRole,
  runCli,
  type CliResult,
  type CliWorld,
  type SentinelRole,
} from '../support/cli';
import { createTestDatabase, type TestDatabase } from '../support/databases';
import { CreateWidgets1764072100000, Widget } from '../support/widget';
import { reportFigure } from './figures';
import { createExampleApp, type ExampleApp } from '../support/example-app';
import { capturingLogger, closedPort } from '../support/peers';

// Scenario 6: one sentinel password logs in to every database (API and cells, through URLs that
// carry it). Everything the library, the CLI and the example app print, log or return is captured,
// and the sentinel must occur nowhere in it, while its masked form (`***`) must.

const SCENARIO = '6 secrets everywhere';

let role: SentinelRole;
const captured: string[] = [];

function capture(...parts: unknown[]): void {
  captured.push(parts.map((p) => (typeof p === 'string' ? p : inspect(p, { depth: 8 }))).join(' '));
}

/** Every way an error is shown: message, stack, inspect (with its causes), JSON. */
function captureError(error: unknown): void {
  const e = error as Error | undefined;
  let json: string;
  try {
    json = JSON.stringify(error);
  } catch {
    json = '(not serialisable)';
  }
  capture(String(error), e?.stack ?? '', inspect(error, { depth: 8 }), json);
}

/** JSON of `value`, or a marker when it cannot be serialised (cycles). */
function safeJson(value: unknown): string {
  try {
    return JSON.stringify(value) ?? 'undefined';
  } catch {
    return '(not serialisable)';
  }
}

async function caught(fn: () => unknown): Promise<unknown> {
  try {
    await fn();
  } catch (error) {
    captureError(error);
    return error;
  }
  throw new Error('expected a failure');
}

const captureLogger = capturingLogger(capture);

/** Whatever the code under test prints on its own, bypassing every logger given to it. */
function captureConsole(): void {
  for (const method of ['log', 'info', 'warn', 'error', 'debug'] as const) {
    const original = console[method].bind(console);
    jest.spyOn(console, method).mockImplementation((...args: unknown[]) => {
      capture(...args);
      original(...args);
    });
  }
  for (const stream of [process.stdout, process.stderr]) {
    const original = stream.write.bind(stream) as (...args: unknown[]) => boolean;
    jest.spyOn(stream, 'write').mockImplementation(((chunk: unknown, ...rest: unknown[]) => {
      capture(
        typeof chunk === 'string' ? chunk : Buffer.from(chunk as Uint8Array).toString('utf8'),
      );
      return original(chunk, ...rest);
    }) as typeof stream.write);
  }
}

/** `url` logging in as the sentinel role. */
function asRole(url: string): string {
  return role.urlFor(new URL(url).pathname.slice(1));
}

beforeAll(async () => {
  assertCliBuilt();
  role = await createSentinelRole();
  captureConsole();
}, 30_000);

afterAll(async () => {
  jest.restoreAllMocks();
  await lib?.destroy();
  await example?.destroy();
  await cliWorld?.destroy();
  await Promise.all(libDbs.map((db) => db.drop()));
  await role?.drop().catch(() => undefined);
}, 60_000);

// ---------------------------------------------------------------------------------------------
// The library

let lib: Cells | undefined;
let libDbs: TestDatabase[] = [];
const libCells: CellMapping[] = [];

describe('the library', () => {
  beforeAll(async () => {
    const api = await createTestDatabase('sec_api');
    libDbs = [api, await createTestDatabase('sec_c0'), await createTestDatabase('sec_c1')];
    lib = await new Cells({
      api: { url: asRole(api.url), poolSize: 2, logging: 'all', logger: captureLogger },
      entities: [Widget],
      migrations: [CreateWidgets1764072100000],
      migrateApi: true,
      poolSize: 2,
      connectTimeoutMs: 2000,
      logger: (event: CellsLogEvent) => capture('cells-event', event),
      cellDataSourceOptions: { logging: 'all', logger: captureLogger },
    }).initialize();
    for (const [i, db] of libDbs.slice(1).entries()) {
      await migrateCellDatabase(db.url);
      libCells.push(
        await lib.mappings.createCell({ name: `sec-${i}`, databaseConnection: asRole(db.url) }),
      );
    }
  }, 60_000);

  it('routes through cells whose URLs carry the sentinel', async () => {
    const widgets = lib!.getRepository(Widget);
    for (const cell of libCells) {
      await targetCell(cell, () => lib!.transaction(() => widgets.insert(widgetFor(cell.uuid))));
      expect(await targetCell(cell, () => widgets.count())).toBe(1);
    }
    expect(libCells[0]!.databaseConnection).toContain(role.password);
  });

  it('shows mappings and contexts without the password', async () => {
    const all = await lib!.mappings.allCells();
    const one = await lib!.mappings.cellByName('sec-0');
    const ctx = new RequestContext({ cell: one });
    capture(
      JSON.stringify(all),
      inspect(all, { depth: 8 }),
      String(one),
      inspect(one),
      JSON.stringify(one),
    );
    capture(JSON.stringify(ctx), String(ctx), inspect(ctx));
    await runWithContext(ctx, async () => capture(inspect(ctx), lib!.stats()));
    expect(JSON.stringify(one)).toContain(':***@');
  });

  it('shows no public object with its password, at any inspect depth and with showHidden', async () => {
    const cells = lib!;
    const widgets = cells.getRepository(Widget);
    const apiCells = cells.getRepository(CellMapping, 'api');
    const cell = libCells[0]!;
    const instanceUuid = randomUUID();
    await cells.mappings.mapInstance({ instanceUuid, cell, projectId: 'p-sec' });
    await cells.mappings.mapHost('sec-host', cell);
    const duplicate = await caught(() =>
      cells.mappings.createCell({ name: cell.name, databaseConnection: cell.databaseConnection }),
    );
    expect(duplicate).toMatchObject({ code: 'CELLS_DUPLICATE_MAPPING' });
    const gathered = await cells.scatterGather(libCells, async () => {
      throw new Error(`cannot copy from ${cell.databaseConnection}`);
    });
    const objects: Array<[string, unknown]> = [
      ['cells', cells],
      ['a routed repository', widgets],
      ['an API repository', apiCells],
      ['cells.mappings', cells.mappings],
      ['the registry', (cells as unknown as { registry: unknown }).registry],
      ['a CellMapping', await cells.mappings.cellByUuid(cell.uuid)],
      ['CellMappings of allCells', await cells.mappings.allCells()],
      ['a CellMapping read through the API repository', await apiCells.findOneBy({ uuid: cell.uuid })],
      ['an InstanceMapping', await cells.mappings.instanceMapping(instanceUuid)],
      ['the cell of a host', await cells.mappings.hostCell('sec-host')],
      ['a DuplicateMappingError', duplicate],
      ['a scatter-gather result', gathered],
      ['the request context', await targetCell(cell, () => getContext())],
      ['stats', cells.stats()],
      ['cache stats', cells.mappings.cacheStats()],
      // TypeORM's own objects the routed repositories hand out: managers and query runners reach
      // the DataSource, its options, driver, pool and pg clients.
      ['a routed repository with getters', await targetCell(cell, async () => (await widgets.count(), inspect(widgets, { getters: true, depth: 6 })))],
      ['the manager of a routed repository on an open cell', await targetCell(cell, () => widgets.manager)],
      ['the manager and query runner of a transaction', await targetCell(cell, () =>
        cells.transaction(async (manager) => {
          await manager.getRepository(Widget).count();
          return { manager, queryRunner: widgets.queryRunner, repoManager: widgets.manager };
        }),
      )],
      ['the manager of an API repository', apiCells.manager],
      // Errors of routed calls whose query parameters carry a connection URL.
      ['a failed insert through the API repository', await caught(() =>
        apiCells.insert({ uuid: cell.uuid, name: `copy-${cell.name}`, databaseConnection: cell.databaseConnection }),
      )],
      ['a failed routed query with a URL parameter', await targetCell(cell, () =>
        caught(() => widgets.query('SELECT $1::int AS n', [cell.databaseConnection])),
      )],
      ['the API DataSource', apiCells.manager.connection],
    ];
    const leaking: string[] = [];
    for (const [what, object] of objects) {
      const shown = {
        'inspect at depth Infinity with showHidden': inspect(object, { depth: Infinity, showHidden: true }),
        inspect: inspect(object),
        String: String(object),
        JSON: safeJson(object),
      };
      capture(...Object.values(shown));
      for (const [how, text] of Object.entries(shown)) {
        if (text.includes(role.password)) leaking.push(`${what} (${how})`);
      }
    }
    expect(leaking).toEqual([]);
  });

  it('shows a password holding a raw space or double quote nowhere, logged or thrown', async () => {
    // The URL parser accepts both raw; TypeORM then logs the INSERT's parameters with them raw.
    const port = await closedPort();
    const widgets = lib!.getRepository(Widget);
    for (const [i, password] of [`${role.password} x`, `${role.password}"x`, `x ${role.password}"y@z`].entries()) {
      const dead = await lib!.mappings.createCell({
        name: `sec-raw-${i}`,
        databaseConnection: `postgres://${role.name}:${password}@127.0.0.1:${port}/nowhere`,
      });
      capture(inspect(dead, { depth: Infinity, showHidden: true }), JSON.stringify(dead));
      expect(await caught(() => targetCell(dead, () => widgets.count()))).toMatchObject({
        code: 'CELLS_CELL_UNREACHABLE',
      });
      for (const url of [`mssql://u:${password}@h/db`, `postgres://u:${password}@h`]) {
        expect(
          await caught(() => lib!.mappings.createCell({ name: `sec-raw-bad-${i}`, databaseConnection: url })),
        ).toMatchObject({ code: 'CELLS_BAD_CONNECTION_URL' });
      }
      // A duplicate name fails the INSERT, whose error carries the URL among its parameters.
      await caught(() =>
        lib!.mappings.createCell({ name: `sec-raw-${i}`, databaseConnection: `postgres://u:${password}@h/db` }),
      );
    }
  });

  it('shows every connection failure without the password', async () => {
    const port = await closedPort();
    const dead = await lib!.mappings.createCell({
      name: 'sec-dead',
      databaseConnection: `postgres://${role.name}:${role.password}@127.0.0.1:${port}/nowhere`,
    });
    const widgets = lib!.getRepository(Widget);
    expect(await caught(() => targetCell(dead, () => widgets.count()))).toMatchObject({
      code: 'CELLS_CELL_UNREACHABLE',
    });
    expect(
      await caught(() => targetCell(dead, () => lib!.transaction(() => widgets.count()))),
    ).toMatchObject({ code: 'CELLS_CELL_UNREACHABLE' });
    // A MariaDB cell whose entities (Widget's timestamptz) cannot run there: a typed refusal, no password.
    const deadMaria = await lib!.mappings.createCell({
      name: 'sec-dead-maria',
      databaseConnection: `mariadb://${role.name}:${role.password}@127.0.0.1:${port}/nowhere`,
    });
    expect(await caught(() => targetCell(deadMaria, () => widgets.count()))).toMatchObject({
      code: 'CELLS_INCOMPATIBLE_ENTITY',
      message: expect.stringMatching(/cell 'sec-dead-maria'.*mariadb database.*timestamptz/i),
    });
    const missing = await lib!.mappings.createCell({
      name: 'sec-missing',
      databaseConnection: role.urlFor(`cells_sec_missing_${randomUUID().slice(0, 8)}`),
    });
    expect(await caught(() => targetCell(missing, () => widgets.count()))).toMatchObject({
      code: 'CELLS_CELL_UNREACHABLE',
    });
    const gathered = await lib!.scatterGatherAll(() => widgets.count(), { timeoutMs: 3000 });
    capture(inspect(gathered, { depth: 8 }));
    for (const url of [
      `mssql://u:${role.password}@h/db`,
      `postgres://u:${role.password}@[bad/db`,
      `postgres://u:${role.password}@h`,
      `postgres://u:${role.password}@h/db\n`,
    ]) {
      expect(
        await caught(() => lib!.mappings.createCell({ name: 'sec-bad', databaseConnection: url })),
      ).toMatchObject({ code: 'CELLS_BAD_CONNECTION_URL' });
    }
    expect(
      await caught(() =>
        lib!.mappings.updateCell('sec-0', { databaseConnection: `pg://u:${role.password}@h/db` }),
      ),
    ).toMatchObject({ code: 'CELLS_BAD_CONNECTION_URL' });
    const unreachableApi = new Cells({
      api: `postgres://${role.name}:${role.password}@127.0.0.1:${port}/api`,
      entities: [Widget],
    });
    expect(await caught(() => unreachableApi.initialize())).toMatchObject({
      code: 'CELLS_CELL_UNREACHABLE',
    });
    await unreachableApi.destroy();
    // A cell re-pointed and dropped under an open DataSource.
    const doomed = await createTestDatabase('sec_doomed');
    await migrateCellDatabase(doomed.url);
    const cell = await lib!.mappings.createCell({
      name: 'sec-doomed',
      databaseConnection: asRole(doomed.url),
    });
    await targetCell(cell, () => widgets.count());
    await doomed.drop();
    expect(await caught(() => targetCell(cell, () => widgets.count()))).toMatchObject({
      code: 'CELLS_CELL_UNREACHABLE',
    });
  });
});

// ---------------------------------------------------------------------------------------------
// The CLI

let cliWorld: CliWorld | undefined;

describe('the CLI', () => {
  const run = async (...args: string[]): Promise<CliResult> => {
    const result = await runCli(args, cliWorld!.project.dir);
    // Only what the CLI printed: its arguments carry the sentinel on purpose.
    capture(`exit ${result.code}`, result.stdout, result.stderr);
    return result;
  };
  let leakyConfig: string;

  beforeAll(async () => {
    cliWorld = await createCliWorld('sec_cli', role, 2);
    const port = await closedPort();
    await cliWorld.mapCell(
      'sec-cli-dead',
      `postgres://${role.name}:${role.password}@127.0.0.1:${port}/nowhere`,
    );
    leakyConfig = join(cliWorld.project.dir, 'leaky.config.ts');
    // A migration whose error message quotes a connection string with the sentinel password.
    await writeFile(
      leakyConfig,
      `import type { MigrationInterface } from 'typeorm';
import { CreateWidgets1764072100000, Widget } from ${JSON.stringify(join(__dirname, '..', 'support', 'widget'))};
export class Leaky1764072400000 implements MigrationInterface {
  name = 'Leaky1764072400000';
  async up(): Promise<void> {
    throw new Error('could not copy from ' + ${JSON.stringify(cliWorld.cells[0]!.url)});
  }
  async down(): Promise<void> {}
}
export default { api: ${JSON.stringify(role.urlFor(cliWorld.api.name))}, entities: [Widget], migrations: [CreateWidgets1764072100000, Leaky1764072400000], connectTimeoutMs: 2000 };
`,
    );
  }, 60_000);

  it('lists cells with and without --verbose and --json', async () => {
    for (const args of [[], ['--verbose'], ['--json'], ['--verbose', '--json']]) {
      expect((await run('cell', 'list', ...args)).code).toBe(0);
    }
  });

  it('reports cell create and update errors', async () => {
    const port = await closedPort();
    await run(
      'cell',
      'create',
      '--name',
      'bad',
      '--database-connection',
      `mysql://u:${role.password}@h/db`,
    );
    await run(
      'cell',
      'create',
      '--name',
      'bad',
      '--database-connection',
      `postgres://u:${role.password}@[bad/db`,
      '--json',
    );
    expect(
      (
        await run(
          'cell',
          'create',
          '--name',
          'down',
          '--database-connection',
          `postgres://${role.name}:${role.password}@127.0.0.1:${port}/x`,
        )
      ).code,
    ).toBe(1);
    await run(
      'cell',
      'create',
      '--name',
      'down',
      '--database-connection',
      `postgres://${role.name}:${role.password}@127.0.0.1:${port}/x`,
      '--debug',
    );
    await run(
      'cell',
      'create',
      '--name',
      'nodb',
      '--database-connection',
      role.urlFor('cells_sec_no_such_db'),
    );
    const created = await run(
      'cell',
      'create',
      '--no-verify',
      '--json',
      '--name',
      'sec-cli-new',
      '--database-connection',
      role.urlFor('cells_sec_unused'),
      '--transport-url',
      `amqp://guest:${role.password}@mq:5672/`,
    );
    expect(created.code).toBe(0);
    await run(
      'cell',
      'create',
      '--no-verify',
      '--name',
      'sec-cli-new',
      '--database-connection',
      role.urlFor('cells_sec_unused'),
    );
    await run(
      'cell',
      'update',
      'sec-cli-new',
      '--database-connection',
      `postgres://u:${role.password}@h`,
    );
    await run(
      'cell',
      'update',
      'sec-cli-new',
      '--transport-url',
      `amqp://guest:${role.password}@mq2:5672/`,
      '--json',
    );
    await run('cell', 'update', 'sec-cli-new', '--name', 'sec-cli-renamed');
    // Its default database does not exist: refused by the check, then mapped anyway for db migrate below.
    await run('cell0', 'map', '--json');
    await run('cell0', 'map', '--no-verify', '--json');
  });

  it('reports db migrate and db status, a failing cell included', async () => {
    expect(
      (await run('--config', leakyConfig, 'db', 'migrate', '--all', '--continue-on-error')).code,
    ).toBe(1);
    expect(
      (
        await run(
          '--config',
          leakyConfig,
          'db',
          'migrate',
          '--all',
          '--continue-on-error',
          '--json',
        )
      ).code,
    ).toBe(1);
    await run(
      '--config',
      leakyConfig,
      'db',
      'migrate',
      '--cell',
      cliWorld!.cells[0]!.name,
      '--debug',
    );
    expect((await run('db', 'migrate', '--all', '--continue-on-error')).code).toBe(1);
    expect((await run('db', 'migrate', '--all', '--json', '--continue-on-error')).code).toBe(1);
    expect((await run('db', 'status')).code).toBe(1);
    expect((await run('db', 'status', '--json')).code).toBe(1);
    await run('db', 'status', '--cell', 'sec-cli-dead', '--debug');
    // The fleet journal stored those failures; fleet-status prints them back.
    expect((await run('--config', leakyConfig, 'db', 'fleet-status')).code).toBe(1);
    expect((await run('--config', leakyConfig, 'db', 'fleet-status', '--json')).code).toBe(1);
    await run('--config', leakyConfig, 'db', 'migrate', '--resume', '--json');
    await run('api-db', 'status');
  });

  it('maps and verifies instances', async () => {
    const instance = randomUUID();
    await run(
      'instance',
      'map',
      '--uuid',
      instance,
      '--cell',
      cliWorld!.cells[1]!.name,
      '--project',
      'p1',
      '--json',
    );
    expect((await run('instance', 'verify', instance)).code).toBe(0);
    await run('instance', 'verify', instance, '--json');
    expect((await run('instance', 'verify', randomUUID())).code).toBe(1);
    await run('cell', 'delete', cliWorld!.cells[1]!.name);
    await run('cell', 'delete', 'sec-cli-renamed', '--json');
  });
});

// ---------------------------------------------------------------------------------------------
// The example app

let example: ExampleApp | undefined;

describe('the example app', () => {
  const call = async (test: request.Test): Promise<request.Response> => {
    const res = await test;
    capture(`HTTP ${res.status}`, JSON.stringify(res.headers), res.text);
    return res;
  };
  const app = () => request(example!.app);

  beforeAll(async () => {
    example = await createExampleApp('sec_ex', {
      connectionUrl: asRole,
      cells: {
        logger: (event: CellsLogEvent) => capture('example-event', event),
        cellDataSourceOptions: { logging: 'all', logger: captureLogger },
      },
    });
  }, 60_000);

  it('answers every route without the password', async () => {
    const created = await call(
      app().post('/servers').set('x-project-id', 'sec').send({ name: 'web-1' }),
    );
    expect(created.status).toBe(201);
    const uuid = (created.body as { server: { uuid: string } }).server.uuid;
    await call(app().get('/servers').set('x-project-id', 'sec'));
    await call(app().get(`/servers/${uuid}`).set('x-project-id', 'sec'));
    await call(app().get('/cells'));
    expect((await call(app().get('/healthz'))).body).toMatchObject({ status: 'ok' });
    await call(app().delete(`/servers/${uuid}`).set('x-project-id', 'sec'));
    await call(app().get(`/servers/${uuid}?read_deleted=yes`).set('x-roles', 'admin'));
    await call(app().get(`/servers/${uuid}`).set('x-project-id', 'sec'));
    await call(app().get('/servers/not-a-uuid'));
    await call(app().get('/nope'));
    await call(app().post('/servers').set('content-type', 'application/json').send('{"name":'));
    await call(app().post('/servers?cell=no-such-cell').send({ name: 'x' }));
  });

  it('answers 503 for a dead cell and 500 for a broken one without the password', async () => {
    const port = await closedPort();
    const dead = await example!.lib.mappings.createCell({
      name: 'sec-ex-dead',
      databaseConnection: `postgres://${role.name}:${role.password}@127.0.0.1:${port}/nowhere`,
    });
    expect(
      (await call(app().post(`/servers?cell=${dead.name}`).send({ name: 'doomed' }))).status,
    ).toBe(503);
    expect((await call(app().get('/healthz'))).body).toMatchObject({ status: 'degraded' });
    const listed = await call(app().get('/servers').set('x-roles', 'admin'));
    expect((listed.body as { unreachable_cells: unknown[] }).unreachable_cells).toHaveLength(1);
    // A cell mapped to a database without the servers table: a 500 whose details only go to the log.
    await example!.lib.mappings.createCell({
      name: 'sec-ex-broken',
      databaseConnection: example!.apiUrl,
    });
    const before = example!.logged.length;
    expect(
      (await call(app().post('/servers?cell=sec-ex-broken').send({ name: 'doomed' }))).status,
    ).toBe(500);
    expect(example!.logged.length).toBeGreaterThan(before);
    await call(app().get('/cells'));
  });
});

// ---------------------------------------------------------------------------------------------

describe('everything captured', () => {
  it('holds no sentinel password, and does hold its masked form', async () => {
    await lib?.destroy();
    await example?.destroy();
    capture(...(example?.logged ?? []));
    example = undefined;
    lib = undefined;
    const text = captured.join('\n');
    const occurrences = text.split(role.password).length - 1;
    const bytes = Buffer.byteLength(text, 'utf8');
    const masked = text.split(':***@').length - 1;
    reportFigure(SCENARIO, 'sentinel occurrences', occurrences, 'must be 0');
    reportFigure(SCENARIO, 'captured bytes scanned', bytes, 'must be > 0');
    reportFigure(SCENARIO, 'masked URLs seen', masked, 'must be > 0');
    const leaks = captured
      .filter((chunk) => chunk.includes(role.password))
      .map((chunk) => chunk.slice(0, 400));
    expect(leaks).toEqual([]);
    expect(occurrences).toBe(0);
    expect(bytes).toBeGreaterThan(0);
    expect(masked).toBeGreaterThan(0);
  }, 60_000);
});
