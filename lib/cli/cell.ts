import type { Command } from 'commander';
import { Client } from 'pg';
import { CELL0_UUID, CELL_STATES, type CellMapping } from '../../entities/CellMapping';
import { cellStateArg } from '../arguments';
import { InstanceMapping } from '../../entities/InstanceMapping';
import type { Cells } from '../cells';
import type { CellsOptions } from '../cells-options';
import { DEFAULTS, connect, fromParts, guardedDataSource, secretSettings, type DatabaseConfig } from '../data-source-options';
import { messageOf } from '../connection-errors';
import { parseConnectionUrl, redactUrl, type ConnectionParts } from '../connection-url';
import { CellUnreachableError, InvalidArgumentError, SecretResolutionError, sentenceStart } from '../errors';
import type { CellMappingPatch } from '../mappings';
import { cellLabel } from '../route';
import { SecretSource } from '../secret-reference';
import { CellVerificationError } from './errors';
import type { Output } from './output';
import type { CliSession } from './session';

interface CreateOptions {
  name: string;
  databaseConnection: string;
  readConnection?: string[];
  transportUrl?: string;
  uuid?: string;
  disabled?: boolean;
  state?: string;
  verify: boolean;
}

interface UpdateOptions {
  name?: string;
  databaseConnection?: string;
  readConnection?: string[];
  clearReadConnections?: boolean;
  transportUrl?: string;
  disable?: boolean;
  enable?: boolean;
}

/** Collects a repeatable option's values (commander calls it once per occurrence). */
function collect(value: string, previous: string[] | undefined): string[] {
  return [...(previous ?? []), value];
}

/** Registers `cell create|list|update|set-state|delete` and `cell0 map`. */
export function registerCellCommands(program: Command, session: () => CliSession): void {
  const cell = program.command('cell').description('cell mappings in the API database');

  cell
    .command('create')
    .description('map a new cell, after checking that its database answers (SELECT 1)')
    .requiredOption('--name <name>', 'unique cell name')
    .requiredOption('--database-connection <url>', 'postgres://, mysql:// or mariadb:// URL of the cell database')
    .option('--read-connection <url>', 'postgres:// URL of a read replica of the cell database (repeatable)', collect)
    .option('--transport-url <url>', 'message transport URL of the cell, stored as is')
    .option('--uuid <uuid>', 'cell uuid (default: a random one)')
    .option('--state <state>', `the cell's state: ${CELL_STATES.join(', ')} (default: active)`)
    .option('--disabled', 'create the cell disabled, as --state disabled (its routed calls are refused)')
    .option('--no-verify', 'skip the connection check')
    .action(async (opts: CreateOptions) => {
      const s = session();
      const state = cellStateArg(opts.state);
      if (opts.disabled === true && state !== undefined && state !== 'disabled') {
        throw new InvalidArgumentError(`Pass --disabled or --state ${state}, not both: --disabled is --state disabled.`);
      }
      const config = await s.config();
      if (opts.verify) {
        await verifyConnection(opts.databaseConnection, `cell '${opts.name}'`, config);
        for (const [index, url] of (opts.readConnection ?? []).entries()) {
          await verifyConnection(url, `cell '${opts.name}' reader ${index + 1}`, config);
        }
      }
      const created = await s.withCells((lib) =>
        lib.mappings.createCell({
          name: opts.name,
          databaseConnection: opts.databaseConnection,
          readConnections: opts.readConnection ?? null,
          transportUrl: opts.transportUrl ?? null,
          disabled: opts.disabled === true,
          ...(state === undefined ? {} : { state }),
          ...(opts.uuid === undefined ? {} : { uuid: opts.uuid }),
        }),
      );
      // After the write, so a command refused for its input prints one error line and no warning.
      warnOfLiteralPasswords(s.output, `cell '${opts.name}'`, opts.databaseConnection, opts.readConnection);
      s.output.result(cellJson(created, 0, true), () =>
        s.output.line(`Created cell ${cellLabel(created)}.`),
      );
    });

  cell
    .command('list')
    .description('list cells with their states and instance counts; --verbose adds the (masked) URLs')
    .option('--verbose', 'show the database connection and transport URLs, passwords masked')
    .action(async (opts: { verbose?: boolean }) => {
      const s = session();
      const verbose = opts.verbose === true;
      const rows = await s.withCells(async (lib) => {
        const cells = await lib.mappings.allCells();
        const counts = await instanceCounts(lib);
        return cells.map((c) => cellJson(c, counts.get(c.id) ?? 0, verbose));
      });
      s.output.result(rows, () => {
        const head = [
          'UUID',
          'Name',
          'State',
          'Instances',
          ...(verbose ? ['Database connection', 'Read connections', 'Transport URL'] : []),
        ];
        s.output.table(
          head,
          rows.map((r) => [
            r.uuid,
            r.name,
            r.state,
            r.instances ?? 0,
            ...(verbose ? [r.databaseConnection ?? '', r.readConnections?.join(' ') ?? '-', r.transportUrl ?? '-'] : []),
          ]),
        );
      });
    });

  cell
    .command('update')
    .description("change a cell's name or URLs (its state: cell set-state)")
    .argument('<cell>', 'cell name or uuid')
    .option('--name <name>', 'new name')
    .option('--database-connection <url>', 'new postgres://, mysql:// or mariadb:// URL (not checked)')
    .option('--read-connection <url>', 'postgres:// URL of a read replica (repeatable; replaces the list; not checked)', collect)
    .option('--clear-read-connections', 'remove every read replica of the cell')
    .option('--transport-url <url>', 'new transport URL')
    .option('--disable', 'disable the cell, as set-state <cell> disabled')
    .option('--enable', 'set a disabled cell active (another state is kept)')
    .action(async (ref: string, opts: UpdateOptions) => {
      const s = session();
      if (opts.disable && opts.enable)
        throw new InvalidArgumentError('Pass --disable or --enable, not both.');
      const patch: CellMappingPatch = {};
      if (opts.name !== undefined) patch.name = opts.name;
      if (opts.databaseConnection !== undefined) patch.databaseConnection = opts.databaseConnection;
      if (opts.readConnection !== undefined && opts.clearReadConnections)
        throw new InvalidArgumentError('Pass --read-connection or --clear-read-connections, not both.');
      if (opts.readConnection !== undefined) patch.readConnections = opts.readConnection;
      if (opts.clearReadConnections) patch.readConnections = null;
      if (opts.transportUrl !== undefined) patch.transportUrl = opts.transportUrl;
      if (opts.disable || opts.enable) patch.disabled = opts.disable === true;
      if (Object.keys(patch).length === 0) {
        throw new InvalidArgumentError(
          'Nothing to update: pass --name, --database-connection, --read-connection, --clear-read-connections, --transport-url, --disable or --enable.',
        );
      }
      const updated = await s.withCells((lib) => lib.mappings.updateCell(ref, patch));
      warnOfLiteralPasswords(s.output, `cell '${ref}'`, opts.databaseConnection, opts.readConnection);
      s.output.result(cellJson(updated, undefined, true), () =>
        s.output.line(`Updated cell ${cellLabel(updated)}.`),
      );
      // --enable sets only a disabled cell active; say so rather than let "Updated" suggest it is active.
      if (opts.enable && updated.state !== 'active') {
        s.output.warn(
          `${sentenceStart(`cell ${cellLabel(updated)}`)} is ${updated.state}, not disabled: --enable left its state unchanged (${updated.state}). ` +
            `Use 'cell set-state <cell> active' to make it active.`,
        );
      }
    });

  cell
    .command('set-state')
    .description(
      `set a cell's state (${CELL_STATES.join(', ')}); every process applies it to calls that start after it (within about 1 s)`,
    )
    .argument('<cell>', 'cell name or uuid')
    .argument('<state>', CELL_STATES.join(' | '))
    .action(async (ref: string, given: string) => {
      const s = session();
      const state = cellStateArg(given)!;
      const updated = await s.withCells((lib) => lib.mappings.setCellState(ref, state));
      s.output.result(cellJson(updated, undefined, false), () =>
        s.output.line(`Cell ${cellLabel(updated)} is now ${updated.state}.`),
      );
    });

  cell
    .command('delete')
    .description(
      'delete a cell mapping (its database is left alone); refuses while instances or hosts are mapped to it',
    )
    .argument('<cell>', 'cell name or uuid')
    .option('--force', 'also delete the instance and host mappings of the cell')
    .action(async (ref: string, opts: { force?: boolean }) => {
      const s = session();
      const deleted = await s.withCells((lib) =>
        lib.mappings.deleteCell(ref, { force: opts.force === true }),
      );
      s.output.result({ deleted: { uuid: deleted.uuid, name: deleted.name } }, () =>
        s.output.line(`Deleted cell ${cellLabel(deleted)}.`),
      );
    });

  program
    .command('cell0')
    .description('cell0, the cell of instances that never reached a real cell')
    .command('map')
    .description(
      `map cell0 (uuid ${CELL0_UUID}, name 'cell0'); does nothing when it is already mapped`,
    )
    .option(
      '--database-connection <url>',
      "cell0's database (default: the main, else the API database URL with '_cell0' appended to its name; it must exist)",
    )
    .option('--no-verify', 'skip the connection check')
    .action(async (opts: { databaseConnection?: string; verify: boolean }) => {
      const s = session();
      const config = await s.config();
      const outcome = await s.withCells(async (lib) => {
        const existing = (await lib.mappings.allCells()).find((c) => c.uuid === CELL0_UUID);
        if (existing) return { cell: existing, created: false };
        const url = opts.databaseConnection ?? cell0Url(config.main ?? config.api);
        // Like `cell create`: a cell0 whose database does not exist fails every later `db migrate`.
        if (opts.verify) await verifyConnection(url, `cell 'cell0'`, config);
        return {
          cell: await lib.mappings.createCell({
            uuid: CELL0_UUID,
            name: 'cell0',
            databaseConnection: url,
          }),
          created: true,
        };
      });
      s.output.result(
        { created: outcome.created, cell: cellJson(outcome.cell, undefined, true) },
        () =>
          s.output.line(
            outcome.created
              ? `Mapped cell0 ${cellLabel(outcome.cell)}.`
              : `cell0 is already mapped ${cellLabel(outcome.cell)}; nothing changed.`,
          ),
      );
    });
}

/** A cell as the CLI shows it; URLs only when `withUrls`, always with passwords masked. */
function cellJson(cell: CellMapping, instances: number | undefined, withUrls: boolean) {
  return {
    uuid: cell.uuid,
    name: cell.name,
    state: cell.state,
    disabled: cell.disabled,
    ...(instances === undefined ? {} : { instances }),
    ...(withUrls
      ? {
          databaseConnection: redactUrl(cell.databaseConnection),
          readConnections: cell.readConnections?.map((url) => redactUrl(url)) ?? null,
          transportUrl: cell.transportUrl ? redactUrl(cell.transportUrl) : null,
        }
      : {}),
  };
}

/** Instance mappings per cell id, in one query. */
async function instanceCounts(lib: Cells): Promise<Map<number, number>> {
  const rows = await lib
    .getRepository(InstanceMapping, 'api')
    .createQueryBuilder('i')
    .select('i.cellId', 'cellId')
    .addSelect('COUNT(*)', 'count')
    .where('i.cellId IS NOT NULL')
    .groupBy('i.cellId')
    // PostgreSQL returns COUNT as a bigint string, MySQL as a number: read either.
    .getRawMany<{ cellId: number; count: number | string }>();
  return new Map(rows.map((r) => [Number(r.cellId), Number(r.count)]));
}

/** Nova's default for cell0: the main database's URL with `_cell0` appended to the database name. */
function cell0Url(base: DatabaseConfig): string {
  if (typeof base !== 'string') {
    throw new InvalidArgumentError(
      'The config gives its databases as options, not URLs: pass --database-connection <url> for cell0.',
    );
  }
  const url = new URL(base);
  url.pathname = `${url.pathname.replace(/\/$/, '')}_cell0`;
  return url.toString();
}

/**
 * Connects to `url` and runs `SELECT 1`, giving up after `timeoutMs`: with a pg Client for a
 * PostgreSQL URL, through the guarded mysql2 pool of routed cells (one connection) for a MySQL or
 * MariaDB one.
 * @throws BadConnectionUrlError; CellVerificationError naming `label`, with the reason masked;
 * MissingDriverError for a MySQL/MariaDB URL when `mysql2` is not installed.
 */
async function verifyConnection(url: string, label: string, config: CellsOptions): Promise<void> {
  try {
    await verifyReachable(url, label, config);
  } catch (error) {
    // As for an unreachable database: nothing is created, and --no-verify maps the cell anyway.
    if (!(error instanceof SecretResolutionError)) throw error;
    throw new SecretResolutionError(
      error.cell,
      error.kind,
      error.reason,
      error.reference,
      `Nothing was created; fix the secret reference or the secret, or pass --no-verify to map the cell anyway.`,
    );
  }
}

async function verifyReachable(url: string, label: string, config: CellsOptions): Promise<void> {
  const timeoutMs = config.connectTimeoutMs ?? DEFAULTS.connectTimeoutMs;
  const parts = parseConnectionUrl(url, label);
  if (parts.type !== 'postgres') return verifyMysqlConnection(parts, label, config);
  // A secret reference is resolved as the routed cells resolve it (the config's resolveSecret, else
  // the built-in env and file resolvers); SecretResolutionError as is.
  const password =
    parts.passwordRef === undefined
      ? parts.password
      : await new SecretSource(parts.passwordRef, { label }, secretSettings(config)).resolve();
  const client = new Client({
    host: parts.host,
    port: parts.port,
    user: parts.username,
    password,
    database: parts.database,
    ssl: parts.ssl,
    application_name: parts.applicationName,
    connectionTimeoutMillis: timeoutMs,
    query_timeout: timeoutMs,
  });
  client.on('error', () => undefined);
  try {
    await client.connect();
    await client.query('SELECT 1');
  } catch (error) {
    throw new CellVerificationError(label, messageOf(error), { cause: error });
  } finally {
    await client.end().catch(() => undefined);
  }
}

async function verifyMysqlConnection(parts: ConnectionParts, label: string, config: CellsOptions): Promise<void> {
  const timeoutMs = config.connectTimeoutMs ?? DEFAULTS.connectTimeoutMs;
  const bounds = { connectTimeoutMs: timeoutMs, queryTimeoutMs: timeoutMs, acquireTimeoutMs: timeoutMs };
  const dataSource = guardedDataSource({ ...fromParts({}, parts, label, secretSettings(config)), poolSize: 1 }, label, bounds);
  try {
    await connect(dataSource, label, '');
    await dataSource.query('SELECT 1');
  } catch (error) {
    // connect's CellUnreachableError would say "unreachable" twice: keep the driver's reason.
    const reason = error instanceof CellUnreachableError ? error.cause : error;
    throw new CellVerificationError(label, messageOf(reason), { cause: error });
  } finally {
    if (dataSource.isInitialized) await dataSource.destroy().catch(() => undefined);
  }
}

/**
 * Warns (stderr, masked) of each URL among `urls` that carries its password in plain text: it is
 * stored so in the API database, where a secret reference (`?password=env:NAME`, `file:/path`)
 * would keep it out. An unparsable URL is left to the mapping's own check.
 */
function warnOfLiteralPasswords(output: Output, label: string, ...urls: (string | string[] | undefined)[]): void {
  for (const url of urls.flat()) {
    if (url === undefined) continue;
    let password: string | undefined;
    try {
      ({ password } = parseConnectionUrl(url, label));
    } catch {
      continue;
    }
    if (password === undefined) continue;
    output.warn(
      `the URL ${redactUrl(url)} of ${label} carries its password in plain text, stored as is in the API ` +
        `database; give a secret reference instead: ?password=env:NAME or ?password=file:/path (README: Secret references).`,
    );
  }
}
