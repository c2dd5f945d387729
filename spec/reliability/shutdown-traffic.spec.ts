import { CellMapping, runWithContext, RequestContext } from '../../lib';
import { createCellWorld, type CellWorld } from '../support/cells';
import { countConnections } from '../support/databases';
import { Widget } from '../support/widget';
import { reportFigure } from './figures';
import { sleep } from './support-load';

/**
 * destroy() in the middle of traffic on the API database and the default main database: the calls
 * already running finish like cell calls, and every concurrent or repeated destroy() waits for the
 * one shutdown, which ends only once the server shows no connection of ours.
 */
const SCENARIO = 'shutdown mid-traffic';
const CALLS = 520;

let world: CellWorld;
afterAll(async () => {
  await world?.destroy();
}, 60_000);

describe('destroy() while the API and main databases serve calls', () => {
  it(`lets ${CALLS} running calls on the API and main databases finish`, async () => {
    world = await createCellWorld('shutdown_traffic', { cellCount: 1, withMain: true, cells: { poolSize: 4 }, apiOptions: { poolSize: 4 } });
    const lib = world.lib;
    const api = lib.getRepository(CellMapping, 'api');
    const main = lib.getRepository(Widget);
    const ctx = new RequestContext();
    // Every call enters the library before destroy() begins (most of them queue for a connection).
    const calls = Array.from({ length: CALLS }, (_, i) =>
      runWithContext(ctx, () => (i % 2 === 0 ? api.query('SELECT pg_sleep(0.002)') : main.query('SELECT pg_sleep(0.002)'))),
    );
    await sleep(20);
    const destroys = [lib.destroy(), lib.destroy(), lib.destroy()];
    const outcomes = await Promise.allSettled(calls);
    const failed = outcomes.flatMap((o) => (o.status === 'rejected' ? [String(o.reason)] : []));
    reportFigure(SCENARIO, `running calls killed by destroy() (of ${CALLS})`, failed.length, 'must be 0');
    expect([failed.length, ...new Set(failed)].slice(0, 4)).toEqual([0]);
    // Each destroy() resolves only once nothing of ours is left on the server.
    const left: number[] = [];
    await Promise.all(
      destroys.map(async (d) => {
        await d;
        left.push(
          (await countConnections(world.api.name)) + (await countConnections(world.main!.name)),
        );
      }),
    );
    reportFigure(SCENARIO, 'connections left when each destroy() resolved', Math.max(...left), 'must be 0');
    expect(left).toEqual([0, 0, 0]);
    expect(destroys[0]).toBe(destroys[1]);
  }, 60_000);
});
