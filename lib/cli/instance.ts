import type { Command } from 'commander';
import { UnknownInstanceError } from '../errors';
import { cellLabel } from '../route';
import type { CliSession } from './session';

interface MapOptions {
  uuid: string;
  cell: string;
  project: string;
  user?: string;
}

/** Registers `instance map` and `instance verify`. */
export function registerInstanceCommands(program: Command, session: () => CliSession): void {
  const instance = program.command('instance').description('instance mappings in the API database');

  instance
    .command('map')
    .description('map an instance to a cell; an already mapped instance moves to that cell')
    .requiredOption('--uuid <uuid>', 'instance uuid')
    .requiredOption('--cell <name|uuid>', 'the cell holding the instance')
    .requiredOption('--project <id>', 'project (tenant) id of the instance')
    .option('--user <id>', 'user id of the instance')
    .action(async (opts: MapOptions) => {
      const s = session();
      const mapping = await s.withCells(async (lib) => {
        const cell = await lib.mappings.cell(opts.cell);
        return lib.mappings.mapInstance({
          instanceUuid: opts.uuid,
          cell,
          projectId: opts.project,
          userId: opts.user ?? null,
        });
      });
      const cell = mapping.cell;
      s.output.result(
        {
          instanceUuid: mapping.instanceUuid,
          projectId: mapping.projectId,
          userId: mapping.userId,
          cell: cell && { uuid: cell.uuid, name: cell.name },
        },
        () =>
          s.output.line(
            `Mapped instance ${mapping.instanceUuid} to cell ${cell ? cellLabel(cell) : '(none)'}.`,
          ),
      );
    });

  instance
    .command('verify')
    .description('print the cell an instance is mapped to; exits 1 when it is not mapped to a cell')
    .argument('<uuid>', 'instance uuid')
    .action(async (uuid: string) => {
      const s = session();
      const mapping = await s.withCells((lib) => lib.mappings.instanceMapping(uuid));
      if (mapping === null) throw new UnknownInstanceError(uuid.toLowerCase());
      if (mapping.cell === null)
        throw new UnknownInstanceError(
          mapping.instanceUuid,
          'it is mapped but not placed in a cell yet',
        );
      const cell = mapping.cell;
      s.output.result(
        {
          instanceUuid: mapping.instanceUuid,
          projectId: mapping.projectId,
          cell: { uuid: cell.uuid, name: cell.name },
        },
        () => s.output.line(`Instance ${mapping.instanceUuid} is in cell ${cellLabel(cell)}.`),
      );
    });
}
