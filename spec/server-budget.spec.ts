import { randomUUID } from 'node:crypto';
import { createServer, type Server, type Socket } from 'node:net';
import {
  CellUnreachableError,
  DidNotRespond,
  Cells,
  InvalidArgumentError,
  RequestContext,
  ServerBusyError,
  runWithContext,
  targetCell,
  type CellMapping,
  type CellsOptions,
  type ServerBudgetStats,
} from '../lib';
import { createCellWorld, widgetFor, type CellWorld } from './support/cells';
import { adminQuery, testServerUrl } from './support/databases';
import { eventually } from './support/peers';
import { ConnectionSampler, runConcurrently, sleep } from './reliability/support-load';
import { Widget } from './support/widget';

// maxConnectionsPerServer (lib/server-budget.ts): one connection budget for every cell pool on a
// server. Each test builds its own Cells over one shared set of cell databases and API database.

/** The test server as the budget names it, `host:port` (the service, or the embedded server's port). */
let SERVER: string;

let world: CellWorld;
let cells: CellMapping[];
let cellDatabases: string[];
const open: Cells[] = [];

beforeAll(async () => {
  world = await createCellWorld('budget', { cellCount: 4 });
  cells = world.cells.map((c) => c.mapping);
  cellDatabases = world.cells.map((c) => c.db.name);
  const url = new URL(testServerUrl());
  SERVER = `${url.hostname.toLowerCase()}:${url.port || '5432'}`;
  if (!world.api.url.includes(SERVER)) throw new Error(`the test server is not ${SERVER}: ${world.api.name}`);
});

afterEach(async () => {
  await Promise.all(open.splice(0).map((lib) => lib.destroy()));
});

afterAll(async () => {
  await world?.destroy();
});

async function budgetCells(options: Partial<CellsOptions>): Promise<Cells> {
  const lib = new Cells({ api: { url: world.api.url, poolSize: 2 }, entities: [Widget], poolSize: 2, ...options });
  open.push(lib);
  return lib.initialize();
}

function budgetOf(lib: Cells, server = SERVER): ServerBudgetStats | undefined {
  return lib.stats().servers.find((s) => s.server === server);
}

async function cellBackends(): Promise<number> {
  const [row] = await adminQuery<{ n: number }>(
    'SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = ANY($1)',
    [cellDatabases],
  );
  return row?.n ?? 0;
}

/** Holds a transaction (and so one connection) on `cell` until the returned `release` is called. */
async function holdConnection(lib: Cells, cell: CellMapping): Promise<{ release(): void; done: Promise<void> }> {
  let release = (): void => undefined;
  const gate = new Promise<void>((resolve) => (release = resolve));
  let began = (): void => undefined;
  const started = new Promise<void>((resolve) => (began = resolve));
  const done = targetCell(cell, () =>
    lib.transaction(async (manager) => {
      await manager.query('SELECT 1');
      began();
      await gate;
    }),
  );
  await Promise.race([started, done]);
  return { release, done };
}

describe('maxConnectionsPerServer', () => {
  it('never opens more connections to a server than its budget, under many interleaved calls', async () => {
    const lib = await budgetCells({ maxConnectionsPerServer: 3, poolSize: 3 });
    const widgets = lib.getRepository(Widget);
    const sampler = await new ConnectionSampler(cellDatabases).start(5);
    const written: Array<{ cell: CellMapping; uuid: string }> = [];
    const errors: unknown[] = [];
    await runConcurrently(48, async (task) => {
      for (let n = 0; n < 4; n++) {
        const cell = cells[(task + n) % cells.length]!;
        try {
          await targetCell(cell, async () => {
            const row = widgetFor(cell.uuid);
            await widgets.insert(row);
            await widgets.query('SELECT pg_sleep(0.005)');
            written.push({ cell, uuid: row.uuid! });
          });
        } catch (error) {
          errors.push(error);
        }
      }
    });
    const peak = await sampler.stop();
    expect(errors).toEqual([]);
    expect(peak).toBeLessThanOrEqual(3);
    expect(peak).toBeGreaterThan(0);
    // Every row landed in its own cell.
    for (const { cell, uuid } of written) {
      const found = await targetCell(cell, () => widgets.findOneBy({ uuid }));
      expect(found?.intendedCell).toBe(cell.uuid);
    }
    // No permit leaked: what the budget counts is what the server has.
    await eventually(async () => budgetOf(lib)!.inUse === (await cellBackends()), 5_000);
    expect(budgetOf(lib)).toMatchObject({ server: SERVER, limit: 3, waiting: 0 });
  });

  it('serves connections waiting for a spent budget in arrival order, and none before a permit frees', async () => {
    const lib = await budgetCells({ maxConnectionsPerServer: 1, poolSize: 1 });
    const widgets = lib.getRepository(Widget);
    const [a, ...rest] = cells as [CellMapping, ...CellMapping[]];
    const held = await holdConnection(lib, a);
    const finished: string[] = [];
    const calls: Promise<void>[] = [];
    for (const [i, cell] of rest.entries()) {
      calls.push(targetCell(cell, () => widgets.count()).then(() => void finished.push(cell.name)));
      // The next call queues only once this one waits for the permit.
      await eventually(() => budgetOf(lib)!.waiting === i + 1, 5_000);
    }
    await sleep(200);
    expect(finished).toEqual([]);
    held.release();
    await held.done;
    await Promise.all(calls);
    expect(finished).toEqual(rest.map((c) => c.name));
    expect(budgetOf(lib)!.inUse).toBeLessThanOrEqual(1);
  });

  it('fails a connection that waited acquireTimeoutMs for the budget with ServerBusyError', async () => {
    const lib = await budgetCells({ maxConnectionsPerServer: 1, poolSize: 1, acquireTimeoutMs: 300 });
    const held = await holdConnection(lib, cells[0]!);
    const started = performance.now();
    const error = await targetCell(cells[1]!, () => lib.getRepository(Widget).count()).then(
      () => undefined,
      (e: unknown) => e,
    );
    const ms = performance.now() - started;
    expect(error).toBeInstanceOf(ServerBusyError);
    expect(error).toMatchObject({ code: 'CELLS_SERVER_BUSY', server: SERVER, limit: 1 });
    expect((error as ServerBusyError).waitedMs).toBeGreaterThanOrEqual(290);
    expect(ms).toBeLessThan(300 + 1_500);
    expect((error as Error).message).toContain(cells[1]!.name);
    expect((error as Error).message).not.toMatch(/postgres:\/\//);
    expect(budgetOf(lib)).toMatchObject({ inUse: 1, waiting: 0, timedOut: 1 });
    held.release();
    await held.done;
    // The budget still serves once the holder is done.
    await expect(targetCell(cells[1]!, () => lib.getRepository(Widget).count())).resolves.toBeGreaterThanOrEqual(0);
  });

  it('fails with ServerBusyError, not CellBusyError, a call queued in a pool whose connections wait for the budget', async () => {
    const lib = await budgetCells({ maxConnectionsPerServer: 1, poolSize: 2, acquireTimeoutMs: 300 });
    const widgets = lib.getRepository(Widget);
    // Cell 1 open, its idle connection then given back to cell 0, whose transaction holds the budget.
    await targetCell(cells[1]!, () => widgets.count());
    const held = await holdConnection(lib, cells[0]!);
    expect(lib.stats()).toMatchObject({ open: 2, servers: [{ inUse: 1, givenBack: 1 }] });
    const outcomes = await Promise.all(
      Array.from({ length: 4 }, () =>
        targetCell(cells[1]!, () => widgets.count()).then(
          () => 'ok',
          (e: unknown) => (e as { code?: string }).code,
        ),
      ),
    );
    held.release();
    await held.done;
    expect(outcomes).toEqual(Array(4).fill('CELLS_SERVER_BUSY'));
  });

  it("closes another cell's idle connection for a waiting one, instead of waiting for pg-pool's idle timeout", async () => {
    const lib = await budgetCells({
      maxConnectionsPerServer: 2,
      poolSize: 2,
      acquireTimeoutMs: 5_000,
      // pg-pool would otherwise close idle connections itself after 10 s.
      cellDataSourceOptions: { extra: { idleTimeoutMillis: 600_000 } },
    });
    const widgets = lib.getRepository(Widget);
    await targetCell(cells[0]!, () => widgets.count());
    await targetCell(cells[1]!, () => widgets.count());
    expect(budgetOf(lib)).toMatchObject({ inUse: 2, givenBack: 0 });
    // pg-pool's private idle list and _remove, which the budget uses, are still there.
    const pool = (lib as unknown as { registry: { dataSources(): Array<{ driver: { master: Record<string, unknown> } }> } })
      .registry.dataSources()[0]!.driver.master;
    expect(Array.isArray(pool._idle)).toBe(true);
    expect(typeof pool._remove).toBe('function');
    const started = performance.now();
    await Promise.all([cells[2]!, cells[3]!].map((cell) => targetCell(cell, () => widgets.count())));
    expect(performance.now() - started).toBeLessThan(3_000);
    expect(budgetOf(lib)!.givenBack).toBeGreaterThanOrEqual(2);
    expect(budgetOf(lib)!.inUse).toBeLessThanOrEqual(2);
    await eventually(async () => budgetOf(lib)!.inUse === (await cellBackends()), 5_000);
  });

  it('gives the permit back after a failed connect, a connect timeout, killed backends and evictions', async () => {
    const silent = await silentServer();
    try {
      const lib = await budgetCells({ maxConnectionsPerServer: 1, poolSize: 1, connectTimeoutMs: 300, acquireTimeoutMs: 2_000 });
      const mappings = lib.mappings;
      const missing = await mappings.createCell({
        name: `budget-missing-${randomUUID().slice(0, 8)}`,
        databaseConnection: world.api.url.replace(/\/[^/]*$/, '/cells_no_such_database'),
      });
      const hung = await mappings.createCell({
        name: `budget-hung-${randomUUID().slice(0, 8)}`,
        databaseConnection: `postgres://postgres@127.0.0.1:${silent.port}/hung`,
      });
      const widgets = lib.getRepository(Widget);
      try {
        for (let i = 0; i < 3; i++) {
          await expect(targetCell(missing, () => widgets.count())).rejects.toBeInstanceOf(CellUnreachableError);
          await expect(targetCell(hung, () => widgets.count())).rejects.toBeInstanceOf(CellUnreachableError);
        }
        expect(budgetOf(lib)).toMatchObject({ inUse: 0, waiting: 0 });
        expect(budgetOf(lib, `127.0.0.1:${silent.port}`)).toMatchObject({ inUse: 0, waiting: 0 });
        // A budget of one still serves: nothing leaked.
        await targetCell(cells[0]!, () => widgets.count());
        expect(budgetOf(lib)!.inUse).toBe(1);
        await adminQuery('SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = ANY($1)', [cellDatabases]);
        await eventually(() => budgetOf(lib)!.inUse === 0, 5_000);
        await targetCell(cells[1]!, () => widgets.count());
        expect(budgetOf(lib)!.inUse).toBe(1);
        lib.evictCell(cells[1]!.uuid);
        await eventually(() => budgetOf(lib)!.inUse === 0, 5_000);
        expect(lib.stats()).toMatchObject({ open: 1, draining: 0 });
        await expect(cellBackends()).resolves.toBe(0);
      } finally {
        await mappings.deleteCell(missing.uuid);
        await mappings.deleteCell(hung.uuid);
      }
    } finally {
      await silent.close();
    }
  });

  it('keeps the API pool out of the budget and applies a per-server map by host:port in any case', async () => {
    const lib = await budgetCells({ maxConnectionsPerServer: { [SERVER.toUpperCase()]: 1, 'OTHER.example': 7 } });
    await lib.mappings.allCells();
    expect(lib.stats().servers).toEqual([]);
    await targetCell(cells[0]!, () => lib.getRepository(Widget).count());
    expect(lib.stats().servers).toEqual([{ server: SERVER, limit: 1, inUse: 1, waiting: 0, givenBack: 0, timedOut: 0 }]);
    const unlisted = await budgetCells({ maxConnectionsPerServer: { 'db.example:5432': 2 } });
    await targetCell(cells[0]!, () => unlisted.getRepository(Widget).count());
    expect(unlisted.stats().servers).toEqual([]);
  });

  it('serves a later call promptly after a scatter-gather gave up on cells waiting for the budget', async () => {
    // Attack: the gather's opens go on after its deadline, take the permits and leave their pools'
    // first connections idle with nobody to use them; a later call must not wait acquireTimeoutMs.
    const lib = await budgetCells({ maxConnectionsPerServer: 1, poolSize: 1, acquireTimeoutMs: 5_000 });
    const widgets = lib.getRepository(Widget);
    let release = (): void => undefined;
    const gate = new Promise<void>((resolve) => (release = resolve));
    let began = (): void => undefined;
    const begun = new Promise<void>((resolve) => (began = resolve));
    const holder = targetCell(cells[0]!, () =>
      lib.transaction(async () => {
        await widgets.count();
        began();
        await gate;
      }),
    );
    await begun;
    const gathered = await lib.scatterGather(cells.slice(1), () => widgets.count(), { timeoutMs: 300 });
    expect([...gathered.values()].map((r) => r instanceof DidNotRespond)).toEqual([true, true, true]);
    release();
    await holder;
    const started = performance.now();
    await targetCell(cells[0]!, () => widgets.count());
    expect(performance.now() - started).toBeLessThan(2_000);
    await eventually(() => budgetOf(lib)?.waiting === 0, 10_000);
    expect(budgetOf(lib)?.inUse).toBeLessThanOrEqual(1);
  });

  it("counts the default main database's pool in the budget of its server", async () => {
    const lib = await budgetCells({ main: world.cells[3]!.db.url, maxConnectionsPerServer: 1, poolSize: 1, acquireTimeoutMs: 300 });
    expect(budgetOf(lib)).toMatchObject({ inUse: 1 });
    let release = (): void => undefined;
    const gate = new Promise<void>((resolve) => (release = resolve));
    let began = (): void => undefined;
    const started = new Promise<void>((resolve) => (began = resolve));
    const held = runWithContext(new RequestContext(), () =>
      lib.transaction(async (manager) => {
        await manager.query('SELECT 1');
        began();
        await gate;
      }),
    );
    await started;
    const error = await targetCell(cells[0]!, () => lib.getRepository(Widget).count()).catch((e: unknown) => e);
    release();
    await held;
    expect(error).toBeInstanceOf(ServerBusyError);
  });

  it.each([0, -1, 1.5, '5', null, [], new Map(), { 'a:b:c': 1 }, { '*': 0 }, { 'h:70000': 3 }])(
    'refuses maxConnectionsPerServer %p with InvalidArgumentError',
    (value) => {
      expect(() => new Cells({ api: world.api.url, entities: [Widget], maxConnectionsPerServer: value as never })).toThrow(
        InvalidArgumentError,
      );
    },
  );
});

/** A TCP server that accepts connections and never answers: a connect to it times out. */
async function silentServer(): Promise<{ port: number; close(): Promise<void> }> {
  const sockets = new Set<Socket>();
  const server: Server = createServer((socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = server.address();
  if (address === null || typeof address === 'string') throw new Error('no port');
  return {
    port: address.port,
    close: () =>
      new Promise<void>((resolve) => {
        for (const socket of sockets) socket.destroy();
        server.close(() => resolve());
      }),
  };
}
