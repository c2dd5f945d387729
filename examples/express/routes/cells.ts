import { Router } from 'express';
import { CELL0_UUID, type Cells } from '../../../lib';
import { Server } from '../entities/Server';
import { gatherFromCells } from '../gather';
import { cellView, type CellView } from '../views';

/** A cell's state in `GET /healthz`. */
export interface CellHealth extends CellView {
  state: 'ok' | 'unreachable';
}

/** `GET /cells` and `GET /healthz`. */
export function cellRoutes(cells: Cells, options: { healthTimeoutMs: number }): Router {
  const router = Router();
  const servers = cells.getRepository(Server);

  router.get('/cells', async (_req, res) => {
    const all = await cells.mappings.allCells();
    res.json({
      cells: all.map((cell) => ({ ...cellView(cell), state: cell.state, disabled: cell.disabled, cell0: cell.uuid === CELL0_UUID })),
    });
  });

  // Always 200 while the API database answers: one cell down degrades the service, it does not stop it.
  router.get('/healthz', async (_req, res) => {
    const outcomes = await gatherFromCells(cells, () => servers.query('SELECT 1'), { timeoutMs: options.healthTimeoutMs });
    const states: CellHealth[] = outcomes.map((o) => ({ ...o.cell, state: o.ok ? 'ok' : 'unreachable' }));
    res.json({ status: states.every((s) => s.state === 'ok') ? 'ok' : 'degraded', api: 'ok', cells: states });
  });

  return router;
}
