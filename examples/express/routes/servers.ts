import { Router } from 'express';
import { IsNull } from 'typeorm';
import { getContext, type Cells } from '../../../lib';
import { createServer } from '../create-server';
import { Server } from '../entities/Server';
import { HttpError } from '../errors';
import { listServers } from '../listing';
import { cellParam, limitParam, markerParam, serverNameOf, uuidParam } from '../params';
import { Placement } from '../placement';
import { cellView, serverView } from '../views';

/** Options of the servers routes. */
export interface ServerRoutesOptions {
  /** How long `GET /servers` waits for each cell before listing it as unreachable. */
  listTimeoutMs: number;
  /** Receives failures of clean-up steps that the client is not told about. */
  log: (line: string) => void;
}

/** `POST /servers`, `GET /servers`, `GET /servers/:uuid`, `DELETE /servers/:uuid`. */
export function serverRoutes(cells: Cells, options: ServerRoutesOptions): Router {
  const router = Router();
  const servers = cells.getRepository(Server);
  const placement = new Placement(cells);

  router.post('/', async (req, res) => {
    const name = serverNameOf(req.body);
    const cell = await placement.choose(cellParam(req.query['cell']));
    const server = await createServer(cells, cell, name, options.log);
    res.status(201).location(`/servers/${server.uuid}`).json({ server: serverView(server, cellView(cell)) });
  });

  router.get('/', async (req, res) => {
    const limit = limitParam(req.query['limit']);
    const marker = markerParam(req.query['marker']);
    res.json(await listServers(cells, { limit, marker, timeoutMs: options.listTimeoutMs }));
  });

  router.get('/:uuid', async (req, res) => {
    const uuid = uuidParam(req.params['uuid'], 'The server id');
    const found = await cells.targetInstanceCell(uuid, async (cell) => ({ cell, server: await servers.findOneBy({ uuid }) }));
    if (found.server === null || !visible(found.server)) throw notFound(uuid);
    res.json({ server: serverView(found.server, cellView(found.cell)) });
  });

  router.delete('/:uuid', async (req, res) => {
    const uuid = uuidParam(req.params['uuid'], 'The server id');
    const ctx = getContext();
    const where = { uuid, deletedAt: IsNull(), ...(ctx.isAdmin ? {} : { projectId: ctx.projectId ?? '' }) };
    const result = await cells.targetInstanceCell(uuid, () => servers.softDelete(where));
    if (!result.affected) throw notFound(uuid);
    await cells.mappings.setQueuedForDelete(uuid, true);
    res.status(204).end();
  });

  return router;
}

/** Non-admins see only their own project's servers; others' read as unknown. */
function visible(server: Server): boolean {
  const ctx = getContext();
  return ctx.isAdmin || server.projectId === ctx.projectId;
}

function notFound(uuid: string): HttpError {
  return new HttpError('SERVER_NOT_FOUND', `Server ${uuid} does not exist.`);
}
