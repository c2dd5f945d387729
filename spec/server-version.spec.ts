import 'reflect-metadata';
import type { DataSource } from 'typeorm';
import { PostgresQueryRunner } from 'typeorm/driver/postgres/PostgresQueryRunner';
import { RequestContext, runWithContext } from '../lib';
import type { RegistryEntry } from '../lib/registry';
import { versionOf } from '../lib/server-version';
import { createCellWorld, type CellWorld } from './support/cells';

let world: CellWorld;

beforeAll(async () => {
  world = await createCellWorld('server_version', { cellCount: 3 });
});

afterAll(async () => {
  await world.destroy();
});

it('opens cell DataSources without asking the server its version, and knows the version version() gives', async () => {
  const asked = jest.spyOn(PostgresQueryRunner.prototype, 'getVersion');
  let dataSources: DataSource[];
  try {
    // Opened concurrently, interleaved, each by the routed call that needs it.
    dataSources = await Promise.all(
      world.cells.map((cell) =>
        runWithContext(new RequestContext({ cell: cell.mapping }), async () => {
          const entry = (await world.lib.route('main')) as RegistryEntry;
          entry.release();
          return entry.dataSource;
        }),
      ),
    );
    expect(asked).not.toHaveBeenCalled();
  } finally {
    asked.mockRestore();
  }
  for (const dataSource of dataSources) {
    const runner = dataSource.createQueryRunner() as PostgresQueryRunner;
    try {
      const fromQuery = await runner.getVersion();
      expect((dataSource.driver as unknown as { version?: string }).version).toBe(fromQuery);
      expect(fromQuery).toMatch(/^\d+(\.\d+)*$/);
    } finally {
      await runner.release();
    }
  }
});

it('reads the version as TypeORM reads it from version()', () => {
  expect(versionOf('15.4 (Debian 15.4-1.pgdg120+1)')).toBe('15.4');
  expect(versionOf('16devel')).toBe('16');
  expect(versionOf('11.2-YB-2.18.1.0-b0')).toBe('11.2');
  expect(versionOf('unknown')).toBeUndefined();
  expect(versionOf(undefined)).toBeUndefined();
});
