import { Client } from 'pg';
import { CellsNotReadyError, UnknownCellError, type Cells } from '../../lib';
import { createCellWorld, type CellWorld } from '../support/cells';
import { openPeer } from '../support/peers';
import { reportFigure } from './figures';
import { sleep } from '../../dev/wait';

/**
 * A mapping write (`cells.mappings.*`) is a call on the API database: one running when `destroy()`
 * starts finishes and commits (it was killed with "Connection terminated", sometimes after its
 * commit, so a committed write was reported as failed); one started after is refused with
 * CellsNotReadyError before it reaches the server.
 */
const SCENARIO = 'mapping writes during shutdown';
const ROUNDS = 3;

let world: CellWorld;

beforeAll(async () => {
  world = await createCellWorld('shutdown_writes', { cellCount: 1 });
}, 120_000);
afterAll(async () => {
  await world?.destroy();
}, 60_000);

/** Holds an exclusive lock on cell_mappings from another session until the returned function runs. */
async function lockMappings(): Promise<() => Promise<void>> {
  const client = new Client({ connectionString: world.api.url });
  await client.connect();
  await client.query('BEGIN');
  await client.query('LOCK TABLE cell_mappings IN ACCESS EXCLUSIVE MODE');
  return async () => {
    await client.query('COMMIT');
    await client.end();
  };
}

describe('mapping writes while destroy() runs', () => {
  it('lets a running write finish and commit, and refuses a new one with CellsNotReadyError', async () => {
    let killed = 0;
    let refusedTyped = 0;
    for (let round = 0; round < ROUNDS; round++) {
      const peer: Cells = await openPeer(world);
      const created = await peer.mappings.createCell({
        name: `doomed-${round}-${process.pid}`,
        databaseConnection: world.cells[0]!.db.url,
      });
      const unlock = await lockMappings();
      // Blocks on the lock: running on the API database when destroy() starts.
      const running = peer.mappings.deleteCell(created.uuid).then(
        () => 'ok' as const,
        (error: unknown) => error,
      );
      await sleep(100);
      const destroyed = peer.destroy();
      const late = await peer.mappings
        .createCell({ name: `late-${round}-${process.pid}`, databaseConnection: world.cells[0]!.db.url })
        .then(
          () => 'ok' as const,
          (error: unknown) => error,
        );
      if (late instanceof CellsNotReadyError) refusedTyped++;
      await sleep(200);
      await unlock();
      const outcome = await running;
      await destroyed;
      if (outcome !== 'ok') killed++;
      // The write committed: the cell is gone for everyone.
      await expect(world.lib.mappings.cellByUuid(created.uuid)).rejects.toThrow(UnknownCellError);
      await expect(world.lib.mappings.cellByName(`late-${round}-${process.pid}`)).rejects.toThrow(UnknownCellError);
    }
    reportFigure(SCENARIO, 'running writes killed by destroy()', killed, 'must be 0');
    reportFigure(SCENARIO, 'writes started after destroy() refused with CellsNotReadyError', refusedTyped, `must be ${ROUNDS}`);
    expect(killed).toBe(0);
    expect(refusedTyped).toBe(ROUNDS);
  }, 60_000);
});
