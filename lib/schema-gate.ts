import { MigrationExecutor, type DataSource, type MigrationInterface } from 'typeorm';
import { InvalidArgumentError, SchemaBehindError, SchemaUnreadableError } from './errors';
import { queryErrorCode } from './connection-errors';

/**
 * The schema gate (`requireSchema`): which of the application's cell migrations a cell must have
 * applied before routed calls reach it, and the one query that checks a cell's migrations table.
 */

/** The `requireSchema` option: `'latest'`, the name of one of the cell migrations, or `false`. */
export type RequireSchema = 'latest' | (string & Record<never, never>) | false;

/** A missing table: PostgreSQL's SQLSTATE, MySQL's and MariaDB's error code. */
const NO_SUCH_TABLE: ReadonlySet<string> = new Set(['42P01', 'ER_NO_SUCH_TABLE']);

/**
 * A migrations table the server refuses to read (SchemaUnreadableError): PostgreSQL's class 42
 * (syntax error or access rule violation: 42501 no privilege, 42703 no such column...) but a
 * missing table, and MySQL's and MariaDB's refusals of the table or the column.
 */
function refusesRead(code: string): boolean {
  return (/^42/.test(code) && !NO_SUCH_TABLE.has(code)) || MYSQL_REFUSALS.has(code);
}
const MYSQL_REFUSALS: ReadonlySet<string> = new Set(['ER_TABLEACCESS_DENIED_ERROR', 'ER_COLUMNACCESS_DENIED_ERROR', 'ER_BAD_FIELD_ERROR']);

/** Why the gate refuses a cell's calls. @internal */
export type SchemaRefusal = SchemaBehindError | SchemaUnreadableError;

/** A new error like `refusal` (a new one per refused call, so its stack is that call's). @internal */
export function freshRefusal(refusal: SchemaRefusal, cellRef: string): SchemaRefusal {
  return refusal instanceof SchemaBehindError
    ? new SchemaBehindError(refusal.cell, refusal.migration, refusal.missing, cellRef)
    : new SchemaUnreadableError(refusal.cell, refusal.table, refusal.reason);
}

/**
 * The names of `migrations` in the order TypeORM applies them: by the timestamp of 13 digits that
 * ends each name (the class name when the migration sets no `name`). @internal
 */
export function orderedMigrationNames(migrations: readonly MigrationInterface[]): string[] {
  return migrations
    .map((migration) => {
      const name = migration.name ?? migration.constructor.name;
      return { name, timestamp: Number(/\d{13}$/.exec(name)?.[0] ?? 0) };
    })
    .sort((a, b) => a.timestamp - b.timestamp)
    .map((m) => m.name);
}

/** The checked `requireSchema` option; `false` (the default) for none. @throws InvalidArgumentError. @internal */
export function requireSchemaArg(value: unknown): RequireSchema {
  if (value === undefined || value === false) return false;
  if (typeof value !== 'string' || value.length === 0 || value.length > 255) {
    throw new InvalidArgumentError(
      `The 'requireSchema' option must be 'latest', the name of one of the cell migrations, or false.`,
    );
  }
  return value;
}

/**
 * The migrations a cell needs under `requireSchema`, and the check of a cell against them. Built
 * once per Cells from the cell migrations it knows (the `migrations` option). @internal
 */
export class SchemaGate {
  private constructor(
    /** The migrations every cell must have applied, oldest first. */
    readonly required: readonly string[],
  ) {}

  /**
   * The gate of `option` over `known` (the cell migrations), or undefined for `false`.
   * @throws InvalidArgumentError when `known` is empty or does not name the pinned migration.
   */
  static of(option: RequireSchema, known: readonly MigrationInterface[]): SchemaGate | undefined {
    if (option === false) return undefined;
    const names = orderedMigrationNames(known);
    if (names.length === 0) {
      throw new InvalidArgumentError(
        `requireSchema: '${option}' needs the cell migrations: list them in the 'migrations' option (as the CLI's config does).`,
      );
    }
    const last = option === 'latest' ? names.length - 1 : names.indexOf(option);
    if (last < 0) {
      throw new InvalidArgumentError(
        `requireSchema names migration ${option.slice(0, 255)}, which is not one of the 'migrations' option (newest: ${names.at(-1)}).`,
      );
    }
    return new SchemaGate(names.slice(0, last + 1));
  }

  /**
   * Reads the names in the migrations table of an initialized cell `dataSource` (TypeORM's
   * `migrationsTableName`, default `migrations`, in its schema): one query, nothing created. A
   * missing table counts as nothing applied.
   * @param label - how the error names the cell, `cell 'name' (uuid)`.
   * @returns SchemaBehindError naming the oldest required migration not applied,
   *   SchemaUnreadableError when the server refuses to read the table (see refusesRead), or undefined.
   * @throws what the query throws when it fails otherwise (the cell unreachable, a deadline passed).
   */
  async check(dataSource: DataSource, label: string): Promise<SchemaRefusal | undefined> {
    let applied: Set<string>;
    const table = migrationsTableOf(dataSource);
    try {
      const rows: Array<{ name: string }> = await dataSource
        .createQueryBuilder()
        .select(dataSource.driver.escape('name'), 'name')
        .from(table, 'migrations')
        .getRawMany();
      applied = new Set(rows.map((row) => row.name));
    } catch (error) {
      const code = queryErrorCode(error) ?? '';
      if (refusesRead(code)) return new SchemaUnreadableError(label, table, code);
      if (!NO_SUCH_TABLE.has(code)) throw error;
      applied = new Set();
    }
    const missing = this.required.filter((name) => !applied.has(name));
    return missing.length === 0 ? undefined : new SchemaBehindError(label, missing[0]!, missing.length);
  }
}

/** The migrations table of `dataSource` as TypeORM's MigrationExecutor names it (schema included). */
function migrationsTableOf(dataSource: DataSource): string {
  // The executor computes the name in its constructor and runs no query.
  return (new MigrationExecutor(dataSource) as unknown as { migrationsTable: string }).migrationsTable;
}
