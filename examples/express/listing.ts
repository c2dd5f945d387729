import { getContext, UnknownInstanceError, type Cells } from '../../lib';
import { Server } from './entities/Server';
import { HttpError } from './errors';
import { gatherFromCells } from './gather';
import { serverView, type CellView, type ServerView } from './views';

/** One page of `GET /servers`. */
export interface ServerPage {
  servers: ServerView[];
  /** Pass as `?marker=` for the next page; null on the last page. */
  next_marker: string | null;
  /** Cells that failed or did not answer in time: their servers are missing from this page. */
  unreachable_cells: CellView[];
}

interface Position {
  createdAt: Date;
  uuid: string;
}

/**
 * Lists servers newest first across every cell (Nova's multi-cell instance list): each cell returns
 * its own first `limit + 1` servers after the marker, and the merge keeps the overall first `limit`;
 * a next page exists (`next_marker`) only when more than `limit` were found.
 * Non-admins see their project's servers only; the context's readDeleted applies in every cell.
 * @throws HttpError 400 for a marker that names no server visible to the caller.
 */
export async function listServers(
  cells: Cells,
  options: { limit: number; marker: string | undefined; timeoutMs: number },
): Promise<ServerPage> {
  const servers = cells.getRepository(Server);
  const ctx = getContext();
  const project = ctx.isAdmin ? null : ctx.projectId;
  const after = options.marker === undefined ? undefined : await markerPosition(cells, options.marker, project);
  const outcomes = await gatherFromCells(
    cells,
    () => {
      const qb = servers.createQueryBuilder('s');
      if (project !== null) qb.andWhere('s.projectId = :project', { project });
      if (after !== undefined) {
        qb.andWhere('(s.createdAt < :at OR (s.createdAt = :at AND s.uuid < :uuid))', { at: after.createdAt, uuid: after.uuid });
      }
      // One more than a page: whether a next page exists is known without asking for it.
      return qb.orderBy('s.createdAt', 'DESC').addOrderBy('s.uuid', 'DESC').limit(options.limit + 1).getMany();
    },
    { timeoutMs: options.timeoutMs },
  );
  const found: Array<{ server: Server; cell: CellView }> = [];
  const unreachable: CellView[] = [];
  for (const outcome of outcomes) {
    if (outcome.ok) for (const server of outcome.value) found.push({ server, cell: outcome.cell });
    else unreachable.push(outcome.cell);
  }
  found.sort((a, b) => newestFirst(a.server, b.server));
  const page = found.slice(0, options.limit);
  const last = page[page.length - 1];
  return {
    servers: page.map(({ server, cell }) => serverView(server, cell)),
    next_marker: found.length > options.limit && last !== undefined ? last.server.uuid : null,
    unreachable_cells: unreachable,
  };
}

function newestFirst(a: Position, b: Position): number {
  const byTime = b.createdAt.getTime() - a.createdAt.getTime();
  if (byTime !== 0) return byTime;
  return a.uuid < b.uuid ? 1 : a.uuid > b.uuid ? -1 : 0;
}

/** Where the marker server sits in the order; a marker deleted since the last page still counts. */
async function markerPosition(cells: Cells, marker: string, project: string | null): Promise<Position> {
  const unknown = () => new HttpError('BAD_MARKER', `marker ${marker} names no server you can list.`);
  const servers = cells.getRepository(Server);
  let server: Server | null;
  try {
    server = await cells.targetInstanceCell(marker, () => servers.findOne({ where: { uuid: marker }, withDeleted: true }));
  } catch (error) {
    if (error instanceof UnknownInstanceError) throw unknown();
    throw error;
  }
  if (server === null || (project !== null && server.projectId !== project)) throw unknown();
  return server;
}
