import { AsyncLocalStorage, createHook } from 'node:async_hooks';
import { randomUUID } from 'node:crypto';
import { bindContext, targetCell, type Cells } from '../../lib';
import { createCellWorld, type CellWorld } from '../support/cells';
import { adminQuery, rowsIn } from '../support/databases';
import { eventually } from '../support/peers';
import { Widget } from '../support/widget';
import { reportFigure } from './figures';

// Scenario 7 of "Reliability and security": destroy() of a busy Cells leaves no server connection
// and no open handle, not even an unreferenced timer.
const SCENARIO = 'shutdown';
const SLEEP_SECONDS = 1;

/** `process.getActiveResourcesInfo()` counted by resource type. */
function activeResources(): Map<string, number> {
  const counts = new Map<string, number>();
  for (const type of process.getActiveResourcesInfo())
    counts.set(type, (counts.get(type) ?? 0) + 1);
  return counts;
}

/** The resources active in `after` beyond those in `before`, e.g. `['TCPSocketWrap']`. */
function extraResources(before: Map<string, number>, after: Map<string, number>): string[] {
  return [...after].flatMap(([type, n]) =>
    Array<string>(Math.max(0, n - (before.get(type) ?? 0))).fill(type),
  );
}

/** async_hooks types of timers and handles: what can outlive a call (requests and promises end). */
const LONG_LIVED: ReadonlySet<string> = new Set([
  'Timeout',
  'TCPWRAP',
  'TCPSERVERWRAP',
  'TLSWRAP',
  'PIPEWRAP',
  'PIPESERVERWRAP',
  'PROCESSWRAP',
  'UDPWRAP',
  'SIGNALWRAP',
  'FSEVENTWRAP',
  'STATWATCHER',
  'TTYWRAP',
]);

/**
 * Records the timers and handles created by code run through `within()` (and by whatever that code
 * starts, in its async context) that are not destroyed yet, whether or not they keep the process
 * alive: process.getActiveResourcesInfo() and Jest's --detectOpenHandles see only referenced ones,
 * but an unreferenced interval left running is a leak too. Resources of others sharing the process
 * (Jest's reporter in band) are not counted.
 */
class ResourceTracker {
  private readonly alive = new Map<number, string>();
  private readonly scope = new AsyncLocalStorage<ResourceTracker>();
  private readonly hook = createHook({
    init: (asyncId, type) => {
      if (LONG_LIVED.has(type) && this.scope.getStore() === this) this.alive.set(asyncId, type);
    },
    destroy: (asyncId) => {
      this.alive.delete(asyncId);
    },
  });

  start(): this {
    this.hook.enable();
    return this;
  }

  /** Runs `fn`, recording what it creates. */
  within<T>(fn: () => Promise<T>): Promise<T> {
    return this.scope.run(this, fn);
  }

  /** Stops recording; returns the types of the resources still alive. */
  stop(): string[] {
    this.hook.disable();
    return [...this.alive.values()];
  }
}

/** Connections to `databases` on the test server, not counting the one asking. */
async function connectionsTo(databases: readonly string[]): Promise<number> {
  const [row] = await adminQuery<{ n: number }>(
    'SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = ANY($1) AND pid <> pg_backend_pid()',
    [databases],
  );
  return row?.n ?? -1;
}

async function queriesRunning(databases: readonly string[], pattern: string): Promise<number> {
  const [row] = await adminQuery<{ n: number }>(
    "SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = ANY($1) AND state = 'active' AND query LIKE $2",
    [databases, pattern],
  );
  return row?.n ?? 0;
}

/** A promise's outcome, and whether it had settled when `settled()` was asked. */
function track<T>(promise: Promise<T>): {
  outcome: Promise<PromiseSettledResult<T>>;
  settled(): boolean;
} {
  let done = false;
  const outcome = Promise.allSettled([promise]).then(([result]) => {
    done = true;
    return result!;
  });
  return { outcome, settled: () => done };
}

describe('destroy() of a busy Cells', () => {
  let world: CellWorld;
  let databases: string[];
  let listening: boolean;
  let connectionsBefore: number;
  let connectionsAfter: number;
  let extra: string[];
  let leftByCells: string[];
  let destroyMs: number;
  let transaction: PromiseSettledResult<number>;
  let gather: PromiseSettledResult<Map<string, unknown>>;
  let settledByDestroy: boolean;
  let committed: number;
  let openBefore: number;
  let callFromEndedTransaction: () => Promise<number>;

  beforeAll(async () => {
    const before = activeResources();
    const tracker = new ResourceTracker().start();
    let after = before;
    const uuid = randomUUID();
    await tracker.within(async () => {
      world = await createCellWorld('shut', { cellCount: 3, cells: { idleTimeoutMs: 60_000 } });
      const lib: Cells = world.lib;
      databases = [world.api.name, ...world.cells.map((c) => c.db.name)];
      const widgets = lib.getRepository(Widget);

      // Open cells (and the idle sweeper that watches them), the mapping listener...
      await Promise.all(world.cells.map((c) => targetCell(c.mapping, () => widgets.count())));
      listening = lib.mappings.cacheStats().listening;
      openBefore = lib.stats().open;
      // ...a transaction running a long statement, and a scatter-gather waiting on every cell.
      const cell0 = world.cells[0]!.mapping;
      const tx = track(
        targetCell(cell0, () =>
          lib.transaction(async () => {
            await widgets.insert({ uuid, name: 'shutdown', intendedCell: cell0.uuid });
            callFromEndedTransaction = bindContext(() => widgets.count());
            await widgets.query('SELECT pg_sleep($1)', [SLEEP_SECONDS]);
            return widgets.count();
          }),
        ),
      );
      const sg = track(
        lib.scatterGatherAll(() => widgets.query('SELECT pg_sleep($1)', [SLEEP_SECONDS]), {
          timeoutMs: 30_000,
        }),
      );
      await eventually(
        async () =>
          (await queriesRunning(databases, 'SELECT pg_sleep%')) === 1 + world.cells.length,
        5_000,
      );
      connectionsBefore = await connectionsTo(databases);

      const started = performance.now();
      await lib.destroy();
      destroyMs = performance.now() - started;
      // At once: destroy() resolves only when everything is closed.
      after = activeResources();
      settledByDestroy = tx.settled() && sg.settled();
      transaction = await tx.outcome;
      gather = await sg.outcome;
    });
    // async_hooks reports closed handles and cleared timers from the next turn of the loop.
    await new Promise((resolve) => setImmediate(resolve));
    await new Promise((resolve) => setImmediate(resolve));
    leftByCells = tracker.stop();
    // Run in band (--detectOpenHandles, -i), Jest's reporter arms timers in this process too: an
    // extra Timeout counts only when one of ours is still alive.
    extra = extraResources(before, after).filter(
      (type) => type !== 'Timeout' || leftByCells.includes('Timeout'),
    );
    connectionsAfter = await connectionsTo(databases);
    const [row] = await rowsIn<{ n: number }>(
      world.cells[0]!.db.url,
      'SELECT count(*)::int AS n FROM widgets WHERE uuid = $1',
      [uuid],
    );
    committed = row?.n ?? -1;
  }, 60_000);

  afterAll(async () => {
    await world?.destroy();
  }, 60_000);

  it('had connections, a listener and work in flight when destroy() was called', () => {
    expect(listening).toBe(true);
    expect(openBefore).toBe(3);
    expect(connectionsBefore).toBeGreaterThanOrEqual(1 + 1 + world.cells.length);
  });

  it('leaves no server connection to any of its databases', () => {
    reportFigure(SCENARIO, 'server connections after destroy()', connectionsAfter, 'must be 0');
    expect(connectionsAfter).toBe(0);
  });

  it('leaves no active resource beyond the baseline', () => {
    reportFigure(
      SCENARIO,
      'extra active resources (process.getActiveResourcesInfo)',
      extra.length,
      'must be 0',
    );
    expect(extra).toEqual([]);
  });

  it('leaves no timer or handle alive, referenced or not', () => {
    reportFigure(
      SCENARIO,
      'timers and handles created and still alive (async_hooks)',
      leftByCells.length,
      'must be 0',
    );
    expect(leftByCells).toEqual([]);
  });

  it('waits for the running transaction and scatter-gather before resolving', () => {
    reportFigure(
      SCENARIO,
      'destroy() duration with work in flight (ms)',
      Math.round(destroyMs),
      '< 10000',
    );
    expect(settledByDestroy).toBe(true);
    expect(destroyMs).toBeLessThan(10_000);
    expect(gather.status).toBe('fulfilled');
  });

  it('lets the transaction running when destroy() began commit', () => {
    expect(transaction).toEqual({ status: 'fulfilled', value: 1 });
    expect(committed).toBe(1);
  });

  it('refuses a call from the context of a transaction that has ended', async () => {
    await expect(callFromEndedTransaction()).rejects.toMatchObject({ code: 'CELLS_NOT_READY' });
  });
});

describe('destroy() while the mapping listener waits to reconnect', () => {
  let world: CellWorld;
  afterAll(async () => {
    await world?.destroy();
  }, 60_000);

  it('leaves no timer, handle or connection', async () => {
    const tracker = new ResourceTracker().start();
    await tracker.within(async () => {
      world = await createCellWorld('shut_listen', { cellCount: 1 });
      const { lib } = world;
      await adminQuery(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND application_name = 'typeorm-cells mapping listener'",
        [world.api.name],
      );
      // The listener lost its connection and armed its (unreferenced) backoff timer.
      await eventually(() => !lib.mappings.cacheStats().listening, 5_000);
      await lib.destroy();
    });
    await new Promise((resolve) => setImmediate(resolve));
    await new Promise((resolve) => setImmediate(resolve));
    const left = tracker.stop();
    const connections = await connectionsTo([world.api.name, world.cells[0]!.db.name]);
    reportFigure(
      SCENARIO,
      'timers, handles and connections left after destroy() during a listener outage',
      left.length + connections,
      'must be 0',
    );
    expect(left).toEqual([]);
    expect(connections).toBe(0);
  });
});
