import 'reflect-metadata';
import type { Socket } from 'node:net';
import { Cells, targetCell } from '../../lib';
import { createCellWorld, type CellWorld } from '../support/cells';
import { startForwarder } from '../support/forwarder';
import { Widget } from '../support/widget';

// An API database server that stops answering (a hung network, a paused VM) while Cells is idle:
// destroy() past its deadline closes every pool by force and must leave no socket open to it. An
// idle pooled connection's graceful end (a Terminate the server never answers) left its socket
// open for good.
let world: CellWorld;
beforeAll(async () => {
  world = await createCellWorld('stalledapi', { cellCount: 1 });
}, 60_000);
afterAll(async () => {
  await world?.destroy();
}, 60_000);

/** Open sockets of this process connected to `port`. */
function socketsTo(port: number): number {
  const handles = (process as unknown as { _getActiveHandles(): unknown[] })._getActiveHandles();
  return handles.filter((handle) => (handle as Socket).constructor?.name === 'Socket' && !(handle as Socket).destroyed && (handle as Socket).remotePort === port).length;
}

it('destroy() past its deadline leaves no socket open to a PostgreSQL API server that stopped answering', async () => {
  const forwarder = await startForwarder(world.api.url);
  const url = forwarder.url(world.api.url);
  const port = Number(new URL(url).port);
  const cells = new Cells({ api: { url, poolSize: 2 }, poolSize: 2, entities: [Widget] });
  try {
    await cells.initialize();
    await targetCell(world.cells[0]!.mapping, () => cells.getRepository(Widget).count());
    expect(socketsTo(port)).toBeGreaterThanOrEqual(2);
    forwarder.stall();
    const started = performance.now();
    await cells.destroy({ timeoutMs: 300 });
    expect(performance.now() - started).toBeLessThan(2_000);
    expect(socketsTo(port)).toBe(0);
  } finally {
    await cells.destroy();
    forwarder.flow();
    await forwarder.close();
  }
}, 30_000);
