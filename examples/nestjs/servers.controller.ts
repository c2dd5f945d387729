import { Body, Controller, Delete, Get, HttpCode, Inject, Logger, Param, Post, Query, Res } from '@nestjs/common';
import { IsNull, Repository } from 'typeorm';
import { Cells, getContext } from '../../lib';
import { InjectCellsRepository, TargetInstanceCell } from '../../lib/nestjs';
import { createServer } from '../express/create-server';
import { Server } from '../express/entities/Server';
import { HttpError } from '../express/errors';
import { listServers, type ServerPage } from '../express/listing';
import { cellParam, limitParam, markerParam, serverNameOf } from '../express/params';
import { Placement } from '../express/placement';
import { cellView, serverView, type ServerView } from '../express/views';

/** The injection token of how long `GET /servers` waits for each cell, in ms. */
export const LIST_TIMEOUT_MS = Symbol('examples.nestjs.listTimeoutMs');

/** `POST /servers`, `GET /servers`, `GET /servers/:uuid`, `DELETE /servers/:uuid`, as in the Express example. */
@Controller('servers')
export class ServersController {
  private readonly logger = new Logger('ServersController');

  constructor(
    @Inject(Cells) private readonly cells: Cells,
    @InjectCellsRepository(Server) private readonly servers: Repository<Server>,
    @Inject(Placement) private readonly placement: Placement,
    @Inject(LIST_TIMEOUT_MS) private readonly listTimeoutMs: number,
  ) {}

  /** Places the server in the cell named by `?cell=` or the next one round-robin, and maps it there. */
  @Post()
  async create(
    @Body() body: unknown,
    @Query('cell') cell: unknown,
    @Res({ passthrough: true }) response: { header(name: string, value: string): unknown },
  ): Promise<{ server: ServerView }> {
    const name = serverNameOf(body);
    // The Express example defaults the project; CellsContextMiddleware leaves it null when not sent.
    if (getContext().projectId === null) throw new HttpError('BAD_PROJECT_ID', 'Send the project of the new server in x-project-id.');
    const target = await this.placement.choose(cellParam(cell));
    const server = await createServer(this.cells, target, name, (line) => this.logger.error(line));
    response.header('location', `/servers/${server.uuid}`);
    return { server: serverView(server, cellView(target)) };
  }

  /** Lists servers newest first across every cell; cells that do not answer are in `unreachable_cells`. */
  @Get()
  list(@Query('limit') limit: unknown, @Query('marker') marker: unknown): Promise<ServerPage> {
    return listServers(this.cells, { limit: limitParam(limit), marker: markerParam(marker), timeoutMs: this.listTimeoutMs });
  }

  /** Reads the server in the cell its InstanceMapping names: the repository routes by the context. */
  @Get(':uuid')
  @TargetInstanceCell('uuid')
  async get(@Param('uuid') uuid: string): Promise<{ server: ServerView }> {
    const server = await this.servers.findOneBy({ uuid });
    const ctx = getContext();
    if (server === null || !(ctx.isAdmin || server.projectId === ctx.projectId)) throw notFound(uuid);
    return { server: serverView(server, { uuid: ctx.cellUuid!, name: ctx.cellName ?? ctx.cellUuid! }) };
  }

  /** Soft-deletes the server in its cell and queues its mapping for deletion. */
  @Delete(':uuid')
  @HttpCode(204)
  @TargetInstanceCell('uuid')
  async remove(@Param('uuid') uuid: string): Promise<void> {
    const ctx = getContext();
    const where = { uuid, deletedAt: IsNull(), ...(ctx.isAdmin ? {} : { projectId: ctx.projectId ?? '' }) };
    const result = await this.servers.softDelete(where);
    if (!result.affected) throw notFound(uuid);
    await this.cells.mappings.setQueuedForDelete(uuid, true);
  }
}

function notFound(uuid: string): HttpError {
  return new HttpError('SERVER_NOT_FOUND', `Server ${uuid} does not exist.`);
}
