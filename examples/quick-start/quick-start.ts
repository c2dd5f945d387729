import 'reflect-metadata';
import { Cells, UnknownCellError, targetCell } from 'typeorm-cells';
import { Server } from './server';

async function main(): Promise<void> {
  const cells = new Cells({
    api: process.env.API_DATABASE_URL!, // holds CellMapping, InstanceMapping, HostMapping
    entities: [Server], // the entities of every cell database
    migrateApi: true, // create the API database's tables in initialize()
    // Development only: create each cell's tables from the entities when the cell opens.
    // In production, run migrations instead: `npx typeorm-cells db migrate --all`.
    cellDataSourceOptions: { synchronize: true },
  });
  await cells.initialize();
  try {
    // Map the cell once (the CLI does the same: `npx typeorm-cells cell create`).
    const cell1 = await cells.mappings.cellByName('cell1').catch((error: unknown) => {
      if (!(error instanceof UnknownCellError)) throw error; // code 'CELLS_UNKNOWN_CELL'
      const databaseConnection = process.env.CELL1_DATABASE_URL!;
      return cells.mappings.createCell({ name: 'cell1', databaseConnection });
    });

    // One repository, created at start-up, serves every cell.
    const servers = cells.getRepository(Server);
    await targetCell(cell1, () => servers.save(servers.create({ name: 'web-1' })));
    const found = await targetCell(cell1, () => servers.findBy({ name: 'web-1' }));
    console.log(`cell1 holds ${found.length} server(s) named web-1`);
  } finally {
    await cells.destroy(); // closes every DataSource, leaves no connection behind
  }
}

main().catch((error: unknown) => {
  console.error(error);
  process.exitCode = 1;
});
