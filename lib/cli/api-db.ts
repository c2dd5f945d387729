import type { Command } from 'commander';
import { DataSource } from 'typeorm';
import type { CellsOptions } from '../cells-options';
import { DEFAULTS, apiDataSourceOptions } from '../data-source-options';
import { API_LABEL } from '../route';
import { migrateLocked } from '../migration-lock';
import { DEFAULT_LOCK_TIMEOUT_MS, migrationStatus, withDataSource, withLockTimeout } from './migration-runner';
import { timeoutMs } from './option-parsers';
import type { CliSession } from './session';

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
      const applied = await withApiDataSource(
        await s.config(),
        (ds) => migrateLocked(ds, API_LABEL, opts.lockTimeout),
        opts.lockTimeout,
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
  lockTimeoutMs?: number,
): Promise<T> {
  const options = apiDataSourceOptions(config, API_LABEL, DEFAULTS.cliPoolSize);
  // PostgreSQL's lock_timeout is a connection option; MySQL's lock waits are set by the migration lock.
  return withDataSource(
    new DataSource(lockTimeoutMs === undefined || options.type !== 'postgres' ? options : withLockTimeout(options, lockTimeoutMs)),
    API_LABEL,
    fn,
  );
}
