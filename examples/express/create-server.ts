import { randomUUID } from 'node:crypto';
import { getContext, targetCell, type CellMapping, type Cells } from '../../lib';
import { Server } from './entities/Server';

/**
 * Writes the server in `cell` and its InstanceMapping in the API database. The mapping is written
 * inside the cell transaction, so a failed mapping rolls the server back; a failed commit after the
 * mapping was written removes the mapping again (best effort: a crash in between leaves a mapping to
 * a missing server, which reads as 404).
 */
export async function createServer(cells: Cells, cell: CellMapping, name: string, log: (line: string) => void): Promise<Server> {
  const servers = cells.getRepository(Server);
  const ctx = getContext();
  const uuid = randomUUID();
  const projectId = ctx.projectId ?? '';
  let mapped = false;
  try {
    return await targetCell(cell, () =>
      cells.transaction(async () => {
        const server = await servers.save(servers.create({ uuid, name, projectId, status: 'ACTIVE' }));
        await cells.mappings.mapInstance({ instanceUuid: uuid, cell, projectId, userId: ctx.userId });
        mapped = true;
        return server;
      }),
    );
  } catch (error) {
    if (mapped) {
      await cells.mappings.unmapInstance(uuid).catch((cleanup: unknown) => {
        log(`[${ctx.requestId}] could not remove the mapping of server ${uuid} after a failed write: ${String(cleanup)}`);
      });
    }
    throw error;
  }
}
