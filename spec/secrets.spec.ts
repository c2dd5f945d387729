import { randomBytes } from 'node:crypto';
import { inspect } from 'node:util';
import {
  BadConnectionUrlError,
  CellMapping,
  CellUnreachableError,
  Cells,
  RequestContext,
  maskSecrets,
  redactUrl,
  targetCell,
  type CellsLogEvent,
} from '../lib';
import { createCellWorld, widgetFor, type CellWorld } from './support/cells';
import { createRole, withPassword } from './support/databases';
import { Widget } from './support/widget';
import { capturingLogger, closedPort } from './support/peers';

const SENTINEL = `S3ntinel-${randomBytes(6).toString('hex')}`;
const captured: string[] = [];
const capture = (...parts: unknown[]) => captured.push(parts.map((p) => (typeof p === 'string' ? p : inspect(p, { depth: 6 }))).join(' '));

const captureLogger = capturingLogger(capture);

let world: CellWorld;
let roleUrl: string;

beforeAll(async () => {
  roleUrl = await createRole(`cells_secret_${process.pid}`, SENTINEL);
  world = await createCellWorld('secret', {
    cellCount: 2,
    connectionUrl: (url) => {
      const u = new URL(url);
      const r = new URL(roleUrl);
      u.username = r.username;
      u.password = SENTINEL;
      return u.toString();
    },
    apiOptions: { logging: 'all', logger: captureLogger },
    cells: {
      logger: (e: CellsLogEvent) => capture('cells', e),
      cellDataSourceOptions: { logging: 'all', logger: captureLogger },
    },
  });
});
afterAll(async () => {
  await world?.destroy();
  // The sentinel must be nowhere in what the whole file produced.
  expect(captured.length).toBeGreaterThan(0);
  expect(captured.filter((line) => line.includes(SENTINEL))).toEqual([]);
});

describe('connection secrets', () => {
  it('routes through cells whose URL carries the sentinel password', async () => {
    const widgets = world.lib.getRepository(Widget);
    const target = world.cells[0]!.mapping;
    await targetCell(target, () => widgets.insert(widgetFor(target.uuid)));
    expect(await targetCell(target, () => widgets.count())).toBe(1);
  });

  it('masks the password in CellMapping toJSON and inspect', async () => {
    const [cell] = await world.lib.getRepository(CellMapping, 'api').find({ take: 1 });
    expect(cell!.databaseConnection).toContain(SENTINEL);
    const shown = [JSON.stringify(cell), inspect(cell), inspect([cell], { depth: 5 })];
    capture(...shown);
    for (const text of shown) {
      expect(text).not.toContain(SENTINEL);
      expect(text).toContain('***');
    }
  });

  it('keeps the context free of URLs and passwords', async () => {
    const cell = world.cells[1]!.mapping;
    await targetCell(cell, async () => {
      const ctx = new RequestContext({ cell });
      const shown = [JSON.stringify(ctx), String(ctx), inspect(ctx)];
      capture(...shown);
      for (const text of shown) expect(text).not.toContain(SENTINEL);
    });
  });

  it('names an unreachable cell without its connection string', async () => {
    const port = await closedPort();
    const mapping = await world.lib.mappings.createCell({
      name: 'secret-down',
      databaseConnection: `postgres://someone:${SENTINEL}@127.0.0.1:${port}/nowhere`,
    });
    const widgets = world.lib.getRepository(Widget);
    const error = await targetCell(mapping, () => widgets.count()).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(CellUnreachableError);
    const text = [String(error), (error as Error).stack, inspect(error, { depth: 8 }), JSON.stringify(error)].join('\n');
    capture(text);
    expect(text).toContain('secret-down');
    expect(text).not.toContain(SENTINEL);
  });

  it('rejects a malformed connection URL with a typed error that does not echo it', async () => {
    const bad = `postgres://u:${SENTINEL}@[bad/db`;
    const error = await world.lib.mappings.createCell({ name: 'secret-bad', databaseConnection: bad }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(BadConnectionUrlError);
    capture(inspect(error), (error as Error).stack);
    expect(inspect(error)).not.toContain(SENTINEL);
    const notPostgres = await world.lib.mappings
      .createCell({ name: 'secret-mysql', databaseConnection: `mysql://u:${SENTINEL}@h/db` })
      .catch((e: unknown) => e);
    expect(notPostgres).toMatchObject({ code: 'CELLS_BAD_CONNECTION_URL' });
  });

  it('fails to start against an unreachable API database without leaking its password', async () => {
    const port = await closedPort();
    const cells = new Cells({ api: `postgres://x:${SENTINEL}@127.0.0.1:${port}/api`, entities: [Widget] });
    const error = await cells.initialize().catch((e: unknown) => e);
    expect(error).toMatchObject({ code: 'CELLS_CELL_UNREACHABLE' });
    capture(inspect(error, { depth: 8 }));
    expect(inspect(error, { depth: 8 })).not.toContain(SENTINEL);
    await cells.destroy();
  });

  it('masks passwords in any text', () => {
    expect(maskSecrets(`connect postgres://u:${SENTINEL}@h:5432/db and password=${SENTINEL} now`)).toBe(
      'connect postgres://u:***@h:5432/db and password=*** now',
    );
    expect(redactUrl(withPassword('postgres://u:p@h/db', SENTINEL))).toBe('postgres://u:***@h/db');
  });
});
