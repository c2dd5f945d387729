import type { CellMapping } from '../../lib';
import type { Server } from './entities/Server';

/** A cell as the API shows it: never its connection string. */
export interface CellView {
  uuid: string;
  name: string;
}

/** A server as the API shows it, with the cell that holds it. */
export interface ServerView {
  uuid: string;
  name: string;
  project_id: string;
  status: string;
  created_at: string;
  deleted_at: string | null;
  cell: CellView;
}

/** The public fields of a cell. */
export function cellView(cell: CellMapping): CellView {
  return { uuid: cell.uuid, name: cell.name };
}

/** The public fields of a server and of the cell that holds it. */
export function serverView(server: Server, cell: CellView): ServerView {
  return {
    uuid: server.uuid,
    name: server.name,
    project_id: server.projectId,
    status: server.deletedAt ? 'DELETED' : server.status,
    created_at: server.createdAt.toISOString(),
    deleted_at: server.deletedAt ? server.deletedAt.toISOString() : null,
    cell: { uuid: cell.uuid, name: cell.name },
  };
}
