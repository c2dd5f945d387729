import type { Command } from 'commander';
import { DataSource } from 'typeorm';
import { API_ENTITIES } from '../../entities';
import { API_MIGRATIONS } from '../../migrations';
import type { CellsOptions } from '../cells';
import { DEFAULT_LOCK_TIMEOUT_MS, migrateLocked, migrationStatus, withDataSource } from './cell-database';
import { timeoutMs } from './db';
import { API_MIGRATIONS_TABLE, postgresOptions } from '../cells';
import type { CliSession } from './session';

const API_LABEL = 'the API database';

/** Registers `api-db migrate` and `api-db status`. */
export function registerApiDbCommands(program: Command, session: () => CliSession): void {
  const apiDb = program
    .command('api-db')
    .description('API database (cell, instance and host mappings) schema');

  apiDb
    .command('migrate')
    .description('apply the pending API database migrations')
    .option(
      '--lock-timeout <ms>',
      'wait at most this long for another runner holding the migration lock (0: no limit)',
      timeoutMs,
      DEFAULT_LOCK_TIMEOUT_MS,
    )
    .action(async (opts: { lockTimeout: number }) => {
      const s = session();
      const applied = await withApiDataSource(await s.config(), (ds) =>
        migrateLocked(ds, API_LABEL, opts.lockTimeout),
      );
      s.output.result({ applied }, () => {
        s.output.line(
          applied.length === 0
            ? 'API database is up to date (0 migrations applied).'
            : `Applied ${applied.length} migration(s): ${applied.join(', ')}`,
        );
      });
    });

  apiDb
    .command('status')
    .description('list applied and pending API database migrations')
    .action(async () => {
      const s = session();
      const status = await withApiDataSource(await s.config(), migrationStatus);
      s.output.result(status, () => {
        s.output.table(
          ['Migration', 'State'],
          [
            ...status.applied.map((name) => [name, 'applied']),
            ...status.pending.map((name) => [name, 'pending']),
          ],
        );
        s.output.line(`${status.pending.length} pending.`);
      });
    });
}

function withApiDataSource<T>(
  config: CellsOptions,
  fn: (ds: DataSource) => Promise<T>,
): Promise<T> {
  const options = postgresOptions(config.api, API_LABEL);
  const dataSource = new DataSource({
    ...options,
    entities: API_ENTITIES,
    migrations: API_MIGRATIONS,
    migrationsTableName: API_MIGRATIONS_TABLE,
    // One connection holds the migration lock, the other runs the migrations.
    poolSize: 2,
    extra: { ...(options.extra as object | undefined), max: 2 },
    connectTimeoutMS: options.connectTimeoutMS ?? config.connectTimeoutMs ?? 5000,
  });
  return withDataSource(dataSource, API_LABEL, fn);
}
