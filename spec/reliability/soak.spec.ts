import { randomUUID } from 'node:crypto';
import { EventEmitter } from 'node:events';
import { Transform, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { setImmediate as immediate, setTimeout as delay } from 'node:timers/promises';
import {
  RequestContext,
  bindContext,
  getContext,
  runWithContext,
  targetCell,
  tryGetContext,
  type CellMapping,
} from '../../lib';
import type { CellWorld } from '../support/cells';
import { rowsIn } from '../support/databases';
import { connectionsInTransaction } from '../support/pg-activity';
import { Widget } from '../support/widget';
import { reportFigure } from './figures';
import {
  createLoadWorld,
  mapLimit,
  runConcurrently,
  seededRandom,
  weightedPicker,
} from './support-load';

// Scenario 1 of "Reliability and security": routed calls from many interleaved async tasks, with
// the context carried across timers, event emitters and stream callbacks, never reach another cell.
// The tasks also share two query builders (made once, outside any context) in and out of
// transactions, and start nested transactions in parallel inside their transactions.
const SCENARIO = 'isolation soak';
const CELL_COUNT = 8;
const TASKS = 256;
const OPERATIONS = 100_000;
const INSTANCES_PER_CELL = 8;
/** Widgets per multi-row insert. */
const BATCH = 4;
const MIN_OPS_PER_SECOND = 200;

/** What the soak knows about one cell: the rows committed to it and the instances mapped to it. */
interface CellLedger {
  mapping: CellMapping;
  url: string;
  dbName: string;
  committed: Set<string>;
  /** The committed uuids again, to pick one at random. */
  rows: string[];
  instances: string[];
}

/** Thrown to roll a transaction back on purpose; its rows must be found nowhere. */
class DeliberateRollback extends Error {}

const OPERATION_WEIGHTS = {
  target: 3,
  instance: 2,
  transaction: 2,
  nested: 2,
  timers: 2,
  emitter: 2,
  stream: 1,
  shared: 2,
  parallelNested: 1,
};
type OperationKind = keyof typeof OPERATION_WEIGHTS;
/** Routed calls made by each kind of operation; the budget counts these. */
const ROUTED_CALLS: Record<OperationKind, number> = {
  target: 3,
  instance: 2,
  transaction: 4,
  nested: 4,
  timers: 3,
  emitter: 2,
  stream: 6,
  // Two outside a transaction, three inside: the budget counts the smaller.
  shared: 2,
  parallelNested: 5,
};

describe('isolation soak', () => {
  let world: CellWorld;
  let ledgers: CellLedger[];

  beforeAll(async () => {
    world = await createLoadWorld('soak', { cellCount: CELL_COUNT });
    ledgers = world.cells.map((c) => ({
      mapping: c.mapping,
      url: c.db.url,
      dbName: c.db.name,
      committed: new Set(),
      rows: [],
      instances: [],
    }));
    const placements = ledgers.flatMap((ledger) =>
      Array.from({ length: INSTANCES_PER_CELL }, () => ledger),
    );
    await mapLimit(placements, 8, async (ledger) => {
      const instanceUuid = randomUUID();
      await world.lib.mappings.mapInstance({
        instanceUuid,
        cell: ledger.mapping,
        projectId: 'soak',
      });
      ledger.instances.push(instanceUuid);
    });
  }, 120_000);

  afterAll(async () => {
    await world?.destroy();
  }, 60_000);

  it('shows why the soak binds listeners: an unbound listener runs in the emitter’s context', async () => {
    const [a, b] = world.cells;
    const bus = new EventEmitter();
    const seen: Array<string | null> = [];
    targetCell(a!.mapping, () => {
      bus.on('unbound', () => seen.push(tryGetContext()?.cellUuid ?? null));
      bus.on(
        'bound',
        bindContext(() => seen.push(tryGetContext()?.cellUuid ?? null)),
      );
    });
    targetCell(b!.mapping, () => {
      bus.emit('unbound');
      bus.emit('bound');
    });
    expect(seen).toEqual([b!.mapping.uuid, a!.mapping.uuid]);
  });

  it(`routes ${OPERATIONS} operations from ${TASKS} tasks over ${CELL_COUNT} cells, each to its own cell`, async () => {
    const { lib } = world;
    const widgets = lib.getRepository(Widget);
    // Shared by every task, on every cell: the row with the smallest uuid, the cell it was meant
    // for and the database transaction it was read in; and a count of all rows.
    const sharedFirst = widgets
      .createQueryBuilder('w')
      .select('w.intended_cell', 'cell')
      .addSelect('txid_current_if_assigned()::text', 'tx')
      .orderBy('w.uuid')
      .limit(1);
    const sharedCount = sharedFirst.clone().orderBy().limit(undefined);
    const random = seededRandom(0x5eed);
    const pickKind = weightedPicker(OPERATION_WEIGHTS, random);
    const bus = new EventEmitter();
    bus.setMaxListeners(0);
    let routedCalls = 0;
    let reserved = 0;
    let mismatches = 0;
    let wrongReads = 0;
    let events = 0;
    const failures: unknown[] = [];
    const notes: string[] = [];

    const note = (what: string): void => {
      if (notes.length < 10) notes.push(what);
    };
    const pickCell = (): CellLedger => ledgers[Math.floor(random() * ledgers.length)]!;
    const pickOther = (cell: CellLedger): CellLedger => {
      const i = ledgers.indexOf(cell);
      return ledgers[(i + 1 + Math.floor(random() * (ledgers.length - 1))) % ledgers.length]!;
    };
    /** Counts a context that does not target `expected` where the code runs now. */
    const expectTarget = (expected: CellLedger | null, where: string): void => {
      const actual = getContext().cellUuid;
      if (actual !== (expected?.mapping.uuid ?? null)) {
        mismatches++;
        note(`${where}: context targets ${actual}, expected ${expected?.mapping.uuid ?? null}`);
      }
    };
    const record = (cell: CellLedger, uuids: readonly string[]): void => {
      for (const uuid of uuids) {
        cell.committed.add(uuid);
        cell.rows.push(uuid);
      }
    };
    const someRow = (cell: CellLedger): string | undefined =>
      cell.rows[Math.floor(random() * cell.rows.length)];

    // The routed calls. Each checks what it can see of the cell it reached.
    const insert = async (cell: CellLedger, count: number): Promise<string[]> => {
      routedCalls++;
      const rows = Array.from({ length: count }, () => ({
        uuid: randomUUID(),
        name: 'soak',
        intendedCell: cell.mapping.uuid,
      }));
      await widgets.insert(rows);
      return rows.map((r) => r.uuid);
    };
    const readBack = async (cell: CellLedger, uuid = someRow(cell)): Promise<void> => {
      routedCalls++;
      if (uuid === undefined) return void (await widgets.count());
      const row = await widgets.findOneBy({ uuid });
      if (row?.intendedCell !== cell.mapping.uuid) {
        wrongReads++;
        note(
          `findOneBy(${uuid}) in ${cell.mapping.name} returned ${row === null ? 'nothing' : `a row of ${row.intendedCell}`}`,
        );
      }
    };
    const countAtLeastCommitted = async (cell: CellLedger): Promise<void> => {
      routedCalls++;
      const floor = cell.committed.size;
      const count = await widgets.count();
      if (count < floor) {
        wrongReads++;
        note(`count() in ${cell.mapping.name} = ${count}, but ${floor} rows were committed there`);
      }
    };
    const updateOne = async (cell: CellLedger): Promise<void> => {
      const uuid = someRow(cell);
      if (uuid === undefined) return countAtLeastCommitted(cell);
      routedCalls++;
      const result = await widgets.update({ uuid }, { size: Math.floor(random() * 1000) });
      if (result.affected !== 1) {
        wrongReads++;
        note(`update(${uuid}) in ${cell.mapping.name} affected ${result.affected} rows`);
      }
    };

    /** Runs the shared builders in `cell`, inside a transaction when `inTransaction`. */
    const readShared = async (cell: CellLedger, inTransaction: boolean, pending = 0): Promise<void> => {
      routedCalls++;
      const first = (await sharedFirst.getRawOne()) as { cell: string; tx: string | null } | undefined;
      if (first !== undefined && first.cell !== cell.mapping.uuid) {
        wrongReads++;
        note(`shared builder in ${cell.mapping.name} read a row of ${first.cell}`);
      }
      if (first !== undefined && (first.tx !== null) !== inTransaction) {
        wrongReads++;
        note(`shared builder in ${cell.mapping.name} ran ${inTransaction ? 'outside' : 'inside'} a transaction`);
      }
      routedCalls++;
      const floor = cell.committed.size + pending;
      const count = await sharedCount.getCount();
      if (count < floor) {
        wrongReads++;
        note(`shared count in ${cell.mapping.name} = ${count}, but ${floor} rows are committed or its own`);
      }
    };

    const operations: Record<OperationKind, (cell: CellLedger) => Promise<void>> = {
      // targetCell, with setImmediate between the awaits.
      target: (cell) =>
        targetCell(cell.mapping, async () => {
          expectTarget(cell, 'target');
          record(cell, await insert(cell, BATCH));
          await immediate();
          expectTarget(cell, 'target after setImmediate');
          await readBack(cell);
          expectTarget(cell, 'target after findOneBy');
          await countAtLeastCommitted(cell);
        }),
      // cells.targetInstanceCell, resolved through the (cached) instance mapping.
      instance: (cell) =>
        lib.targetInstanceCell(
          cell.instances[Math.floor(random() * cell.instances.length)]!,
          async (found) => {
            if (found.uuid !== cell.mapping.uuid)
              note(`instance resolved to ${found.uuid}, mapped to ${cell.mapping.uuid}`);
            expectTarget(cell, 'targetInstanceCell');
            record(cell, await insert(cell, 1));
            await delay(0);
            expectTarget(cell, 'targetInstanceCell after setTimeout');
            await updateOne(cell);
          },
        ),
      // cells.transaction with a savepoint; one in ten rolls back, and its rows must be nowhere.
      transaction: async (cell) => {
        const rollBack = random() < 0.1;
        const pending: string[] = [];
        try {
          await targetCell(cell.mapping, () =>
            lib.transaction(async () => {
              expectTarget(cell, 'transaction');
              pending.push(...(await insert(cell, BATCH)));
              await immediate();
              expectTarget(cell, 'transaction after setImmediate');
              await updateOne(cell);
              await lib.transaction(async () => {
                pending.push(...(await insert(cell, 1)));
                expectTarget(cell, 'savepoint');
              });
              await countAtLeastCommitted(cell);
              if (rollBack) throw new DeliberateRollback();
            }),
          );
          record(cell, pending);
        } catch (error) {
          if (!(error instanceof DeliberateRollback)) throw error;
        }
      },
      // The shared builders, outside and (with a row of its own, 1 in 10 rolled back) inside a transaction.
      shared: async (cell) => {
        if (random() < 0.5) return targetCell(cell.mapping, () => readShared(cell, false));
        const rollBack = random() < 0.1;
        const pending: string[] = [];
        try {
          await targetCell(cell.mapping, () =>
            lib.transaction(async () => {
              pending.push(...(await insert(cell, 1)));
              await readShared(cell, true, pending.length);
              if (rollBack) throw new DeliberateRollback();
            }),
          );
          record(cell, pending);
        } catch (error) {
          if (!(error instanceof DeliberateRollback)) throw error;
        }
      },
      // Three nested transactions started together, one throwing: only its row is rolled back.
      parallelNested: async (cell) => {
        const rollBack = random() < 0.1;
        const failing = Math.floor(random() * 3);
        const kept: string[] = [];
        try {
          await targetCell(cell.mapping, () =>
            lib.transaction(async () => {
              kept.push(...(await insert(cell, 1)));
              const settled = await Promise.allSettled(
                [0, 1, 2].map((i) =>
                  lib.transaction(async () => {
                    const uuids = await insert(cell, 1);
                    expectTarget(cell, 'parallel nested transaction');
                    if (i === failing) throw new DeliberateRollback();
                    kept.push(...uuids);
                  }),
                ),
              );
              const outcomes = settled.map((r) => r.status).join(',');
              if (settled.filter((r) => r.status === 'rejected').length !== 1) {
                mismatches++;
                note(`parallel nested transactions in ${cell.mapping.name} settled ${outcomes}`);
              }
              await countAtLeastCommitted(cell);
              if (rollBack) throw new DeliberateRollback();
            }),
          );
          record(cell, kept);
        } catch (error) {
          if (!(error instanceof DeliberateRollback)) throw error;
        }
      },
      // targetCell inside targetCell: the inner cell, then the outer one again.
      nested: (cell) => {
        const inner = pickOther(cell);
        return targetCell(cell.mapping, async () => {
          record(cell, await insert(cell, 1));
          await targetCell(inner.mapping, async () => {
            expectTarget(inner, 'nested inner');
            record(inner, await insert(inner, BATCH));
            await delay(0);
            expectTarget(inner, 'nested inner after setTimeout');
            await readBack(inner);
          });
          expectTarget(cell, 'nested outer after inner');
          await readBack(cell);
        });
      },
      // Routed work inside setTimeout, setImmediate and nextTick callbacks (no binding needed).
      timers: (cell) =>
        targetCell(
          cell.mapping,
          () =>
            new Promise<void>((resolve, reject) => {
              setTimeout(
                () => {
                  expectTarget(cell, 'setTimeout callback');
                  insert(cell, 1).then((uuids) => {
                    record(cell, uuids);
                    setImmediate(() => {
                      expectTarget(cell, 'setImmediate callback');
                      readBack(cell, uuids[0]).then(() => {
                        process.nextTick(() => {
                          expectTarget(cell, 'nextTick callback');
                          countAtLeastCommitted(cell).then(resolve, reject);
                        });
                      }, reject);
                    });
                  }, reject);
                },
                Math.floor(random() * 3),
              );
            }),
        ),
      // A listener bound in this cell's context, emitted from another cell's context.
      emitter: async (cell) => {
        const emitterCell = pickOther(cell);
        const event = `soak-${events++}`;
        const bind = events % 2 === 0 ? bindContext : lib.bind.bind(lib);
        const handled = targetCell(
          cell.mapping,
          () =>
            new Promise<void>((resolve, reject) => {
              bus.once(
                event,
                bind((count: number) => {
                  expectTarget(cell, 'bound listener');
                  insert(cell, count)
                    .then((uuids) => {
                      record(cell, uuids);
                      expectTarget(cell, 'bound listener after insert');
                      return readBack(cell, uuids[0]);
                    })
                    .then(resolve, reject);
                }),
              );
            }),
        );
        await targetCell(emitterCell.mapping, async () => {
          await immediate();
          expectTarget(emitterCell, 'emitter');
          bus.emit(event, BATCH);
        });
        await handled;
      },
      // A Transform and a Writable created in this cell's context, with bound callbacks doing routed
      // work, fed from another cell's context.
      stream: (cell) => {
        const feeder = pickOther(cell);
        return targetCell(cell.mapping, async () => {
          const transform = new Transform({
            objectMode: true,
            transform: bindContext(
              (
                _chunk: number,
                _encoding: BufferEncoding,
                done: (e?: Error | null, uuid?: string) => void,
              ) => {
                expectTarget(cell, 'transform callback');
                insert(cell, 1).then((uuids) => {
                  record(cell, uuids);
                  done(null, uuids[0]);
                }, done);
              },
            ),
          });
          const sink = new Writable({
            objectMode: true,
            write: bindContext(
              (uuid: string, _encoding: BufferEncoding, done: (e?: Error | null) => void) => {
                expectTarget(cell, 'writable callback');
                readBack(cell, uuid).then(() => done(), done);
              },
            ),
          });
          const fed = targetCell(feeder.mapping, async () => {
            for (let i = 0; i < 3; i++) {
              transform.write(i);
              await immediate();
              expectTarget(feeder, 'stream feeder');
            }
            transform.end();
          });
          await Promise.all([pipeline(transform, sink), fed]);
          expectTarget(cell, 'after pipeline');
        });
      },
    };

    const started = performance.now();
    await runConcurrently(TASKS, (task) =>
      runWithContext(new RequestContext({ requestId: `soak-task-${task}` }), async () => {
        while (reserved < OPERATIONS) {
          const kind = pickKind();
          reserved += ROUTED_CALLS[kind];
          try {
            await operations[kind](pickCell());
          } catch (error) {
            failures.push(error);
            note(`${kind} failed: ${String(error)}`);
          }
          // The task's own context stays untargeted whatever its operations targeted.
          expectTarget(null, 'task between operations');
        }
      }),
    );
    const seconds = (performance.now() - started) / 1000;

    // Every cell database, read with a plain pg client: which rows are there, and for which cell.
    let misrouted = 0;
    const found = new Map<CellLedger, number>();
    const missing = new Map<CellLedger, number>();
    for (const ledger of ledgers) {
      const rows = await rowsIn<{ uuid: string; intended_cell: string }>(
        ledger.url,
        'SELECT uuid, intended_cell FROM widgets',
      );
      misrouted += rows.filter((r) => r.intended_cell !== ledger.mapping.uuid).length;
      found.set(ledger, rows.length);
      const present = new Set(rows.map((r) => r.uuid));
      missing.set(ledger, [...ledger.committed].filter((uuid) => !present.has(uuid)).length);
    }

    reportFigure(SCENARIO, 'routed operations', routedCalls, `>= ${OPERATIONS}`);
    reportFigure(SCENARIO, 'concurrent tasks', TASKS, `= ${TASKS}`);
    reportFigure(SCENARIO, 'misrouted rows', misrouted, 'must be 0');
    reportFigure(SCENARIO, 'context mismatches in flight', mismatches, 'must be 0');
    reportFigure(
      SCENARIO,
      'wrong reads (row missing or of another cell, update missed, count low)',
      wrongReads,
      'must be 0',
    );
    reportFigure(SCENARIO, 'failed operations', failures.length, 'must be 0');
    let leftInTransaction = 0;
    for (const ledger of ledgers) leftInTransaction += (await connectionsInTransaction(ledger.dbName)).length;
    reportFigure(SCENARIO, 'connections left in a transaction', leftInTransaction, 'must be 0');
    for (const [i, ledger] of ledgers.entries()) {
      reportFigure(
        SCENARIO,
        `cell${i} rows found (committed: ${ledger.committed.size})`,
        found.get(ledger)!,
        `must be ${ledger.committed.size}`,
      );
    }
    reportFigure(
      SCENARIO,
      'operations per second',
      Math.round(routedCalls / seconds),
      `>= ${MIN_OPS_PER_SECOND}`,
    );

    expect(notes).toEqual([]);
    expect(failures).toEqual([]);
    expect(routedCalls).toBeGreaterThanOrEqual(OPERATIONS);
    expect(misrouted).toBe(0);
    expect(mismatches).toBe(0);
    expect(wrongReads).toBe(0);
    expect(leftInTransaction).toBe(0);
    for (const ledger of ledgers) {
      expect(missing.get(ledger)).toBe(0);
      expect(found.get(ledger)).toBe(ledger.committed.size);
    }
    expect(routedCalls / seconds).toBeGreaterThanOrEqual(MIN_OPS_PER_SECOND);
  }, 600_000);
});
