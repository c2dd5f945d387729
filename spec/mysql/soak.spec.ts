import { randomUUID } from 'node:crypto';
import { EventEmitter } from 'node:events';
import { setImmediate as immediate, setTimeout as delay } from 'node:timers/promises';
import { RequestContext, bindContext, getContext, runWithContext, targetCell } from '../../lib';
import { connectionsInTransaction } from '../support/pg-activity';
import { createMixedFleet, Gadget, mysqlConnectionsInTransaction, type FleetCell, type MixedFleet } from '../support/mixed-fleet';
import { describeMysql } from '../support/mysql';
import { reportFigure } from '../reliability/figures';
import { runConcurrently, seededRandom, weightedPicker } from '../reliability/support-load';

// The isolation soak (spec/reliability/soak.spec.ts) over a mixed fleet: 4 PostgreSQL and 4
// MariaDB cells under one Cells, interleaved async tasks moving between engines (nested targets,
// bound listeners, timers, transactions with savepoints, shared query builders). Sized for a
// 2-core machine: the PostgreSQL soak has the volume, this one the mix.
const SCENARIO = 'mixed-engine isolation soak';
const PG_CELLS = 4;
const MARIADB_CELLS = 4;
const TASKS = 48;
const OPERATIONS = 20_000;

/** The rows committed to one cell. */
interface Ledger {
  cell: FleetCell;
  committed: Set<string>;
  rows: string[];
}

class DeliberateRollback extends Error {}

const WEIGHTS = { target: 3, transaction: 2, nested: 2, timers: 1, emitter: 1, shared: 2 };
type Kind = keyof typeof WEIGHTS;
const ROUTED_CALLS: Record<Kind, number> = { target: 3, transaction: 4, nested: 4, timers: 2, emitter: 2, shared: 2 };

describeMysql(SCENARIO, () => {
  let fleet: MixedFleet;
  let ledgers: Ledger[];

  beforeAll(async () => {
    fleet = await createMixedFleet('my_soak', { pgCells: PG_CELLS, mariadbCells: MARIADB_CELLS });
    ledgers = fleet.cells.map((cell) => ({ cell, committed: new Set(), rows: [] }));
  }, 120_000);
  afterAll(async () => {
    await fleet?.destroy();
  }, 60_000);

  it(`routes ${OPERATIONS} calls from ${TASKS} tasks over ${PG_CELLS} PostgreSQL and ${MARIADB_CELLS} MariaDB cells, each to its own cell`, async () => {
    const { lib } = fleet;
    const gadgets = lib.getRepository(Gadget);
    // Made once, outside any context, and run in every cell of both engines.
    const sharedFirst = gadgets.createQueryBuilder('g').select('g.intendedCell', 'cell').orderBy('g.uuid').limit(1);
    const sharedCount = gadgets.createQueryBuilder('g');
    const random = seededRandom(0x6d6978);
    const pickKind = weightedPicker(WEIGHTS, random);
    const bus = new EventEmitter();
    bus.setMaxListeners(0);
    let routed = 0;
    let reserved = 0;
    let events = 0;
    const notes: string[] = [];
    const failures: unknown[] = [];
    const note = (what: string): void => {
      if (notes.length < 10) notes.push(what);
    };
    const pick = (): Ledger => ledgers[Math.floor(random() * ledgers.length)]!;
    // Another cell, of the other engine half of the time.
    const other = (ledger: Ledger): Ledger => {
      const i = ledgers.indexOf(ledger);
      return ledgers[(i + 1 + Math.floor(random() * (ledgers.length - 1))) % ledgers.length]!;
    };
    const expectTarget = (expected: Ledger | null, where: string): void => {
      const actual = getContext().cellUuid;
      if (actual !== (expected?.cell.mapping.uuid ?? null)) note(`${where}: context targets ${actual}`);
    };
    const record = (ledger: Ledger, uuids: string[]): void => {
      for (const uuid of uuids) {
        ledger.committed.add(uuid);
        ledger.rows.push(uuid);
      }
    };
    const insert = async (ledger: Ledger, count: number): Promise<string[]> => {
      routed++;
      const rows = Array.from({ length: count }, () => ({ uuid: randomUUID(), name: 'soak', intendedCell: ledger.cell.mapping.uuid }));
      await gadgets.insert(rows);
      return rows.map((r) => r.uuid);
    };
    const readBack = async (ledger: Ledger, uuid = ledger.rows[Math.floor(random() * ledger.rows.length)]): Promise<void> => {
      routed++;
      if (uuid === undefined) return void (await gadgets.count());
      const row = await gadgets.findOneBy({ uuid });
      if (row?.intendedCell !== ledger.cell.mapping.uuid) note(`findOneBy in ${ledger.cell.mapping.name} returned ${row?.intendedCell ?? 'nothing'}`);
    };
    const countAtLeast = async (ledger: Ledger, pending = 0): Promise<void> => {
      routed++;
      const floor = ledger.committed.size + pending;
      const count = await sharedCount.getCount();
      if (count < floor) note(`count in ${ledger.cell.mapping.name} = ${count} < ${floor}`);
    };

    const operations: Record<Kind, (ledger: Ledger) => Promise<void>> = {
      target: (ledger) =>
        targetCell(ledger.cell.mapping, async () => {
          record(ledger, await insert(ledger, 2));
          await immediate();
          expectTarget(ledger, 'target after setImmediate');
          await readBack(ledger);
          await countAtLeast(ledger);
        }),
      transaction: async (ledger) => {
        const rollBack = random() < 0.15;
        const pending: string[] = [];
        try {
          await targetCell(ledger.cell.mapping, () =>
            lib.transaction(async () => {
              pending.push(...(await insert(ledger, 2)));
              await lib.transaction(async () => {
                pending.push(...(await insert(ledger, 1)));
                expectTarget(ledger, 'savepoint');
              });
              // A savepoint rolled back on its own: its row is nowhere.
              await lib
                .transaction(async () => {
                  await insert(ledger, 1);
                  throw new DeliberateRollback();
                })
                .catch((error: unknown) => {
                  if (!(error instanceof DeliberateRollback)) throw error;
                });
              await countAtLeast(ledger, pending.length);
              if (rollBack) throw new DeliberateRollback();
            }),
          );
          record(ledger, pending);
        } catch (error) {
          if (!(error instanceof DeliberateRollback)) throw error;
        }
      },
      nested: (ledger) => {
        const inner = other(ledger);
        return targetCell(ledger.cell.mapping, async () => {
          record(ledger, await insert(ledger, 1));
          await targetCell(inner.cell.mapping, async () => {
            record(inner, await insert(inner, 1));
            await delay(0);
            expectTarget(inner, 'nested inner after setTimeout');
            await readBack(inner);
          });
          expectTarget(ledger, 'nested outer after inner');
          await readBack(ledger);
        });
      },
      timers: (ledger) =>
        targetCell(
          ledger.cell.mapping,
          () =>
            new Promise<void>((resolve, reject) => {
              setTimeout(() => {
                expectTarget(ledger, 'setTimeout callback');
                insert(ledger, 1).then((uuids) => {
                  record(ledger, uuids);
                  setImmediate(() => readBack(ledger, uuids[0]).then(resolve, reject));
                }, reject);
              }, Math.floor(random() * 3));
            }),
        ),
      emitter: async (ledger) => {
        const emitterCell = other(ledger);
        const event = `mixed-soak-${events++}`;
        const handled = targetCell(
          ledger.cell.mapping,
          () =>
            new Promise<void>((resolve, reject) => {
              bus.once(
                event,
                bindContext(() => {
                  expectTarget(ledger, 'bound listener');
                  insert(ledger, 1)
                    .then((uuids) => {
                      record(ledger, uuids);
                      return readBack(ledger, uuids[0]);
                    })
                    .then(resolve, reject);
                }),
              );
            }),
        );
        await targetCell(emitterCell.cell.mapping, async () => {
          await immediate();
          bus.emit(event);
        });
        await handled;
      },
      shared: (ledger) =>
        targetCell(ledger.cell.mapping, async () => {
          routed++;
          const first = (await sharedFirst.getRawOne()) as { cell: string } | undefined;
          if (first !== undefined && first.cell !== ledger.cell.mapping.uuid) note(`shared builder in ${ledger.cell.mapping.name} read a row of ${first.cell}`);
          await countAtLeast(ledger);
        }),
    };

    const started = performance.now();
    await runConcurrently(TASKS, (task) =>
      runWithContext(new RequestContext({ requestId: `mixed-soak-${task}` }), async () => {
        while (reserved < OPERATIONS) {
          const kind = pickKind();
          reserved += ROUTED_CALLS[kind];
          try {
            await operations[kind](pick());
          } catch (error) {
            failures.push(error);
            note(`${kind} failed: ${String(error)}`);
          }
          expectTarget(null, 'task between operations');
        }
      }),
    );
    const seconds = (performance.now() - started) / 1000;

    // Every cell database, read directly: which rows are there, and for which cell.
    let misrouted = 0;
    let missing = 0;
    let extra = 0;
    let leftInTransaction = 0;
    for (const ledger of ledgers) {
      const rows = await ledger.cell.gadgets();
      misrouted += rows.filter((r) => r.intended_cell !== ledger.cell.mapping.uuid).length;
      const present = new Set(rows.map((r) => r.uuid));
      missing += [...ledger.committed].filter((uuid) => !present.has(uuid)).length;
      extra += rows.filter((r) => !ledger.committed.has(r.uuid)).length;
      leftInTransaction +=
        ledger.cell.engine === 'postgres'
          ? (await connectionsInTransaction(ledger.cell.db.name)).length
          : await mysqlConnectionsInTransaction(ledger.cell.db.name);
    }
    reportFigure(SCENARIO, 'routed calls', routed, `>= ${OPERATIONS}`);
    reportFigure(SCENARIO, 'misrouted rows', misrouted, 'must be 0');
    reportFigure(SCENARIO, 'committed rows missing', missing, 'must be 0');
    reportFigure(SCENARIO, 'rolled-back rows found', extra, 'must be 0');
    reportFigure(SCENARIO, 'failed operations', failures.length, 'must be 0');
    reportFigure(SCENARIO, 'connections left in a transaction', leftInTransaction, 'must be 0');
    reportFigure(SCENARIO, 'calls per second', Math.round(routed / seconds), 'informational');

    expect(notes).toEqual([]);
    expect(failures).toEqual([]);
    expect(routed).toBeGreaterThanOrEqual(OPERATIONS);
    expect(misrouted).toBe(0);
    expect(missing).toBe(0);
    expect(extra).toBe(0);
    expect(leftInTransaction).toBe(0);
    for (const engine of ['postgres', 'mariadb'] as const) {
      expect(ledgers.filter((l) => l.cell.engine === engine).every((l) => l.committed.size > 0)).toBe(true);
    }
  }, 300_000);
});
