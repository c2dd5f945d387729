import { CellsError } from '../../lib';
import { rowsIn } from '../support/databases';

/** What one bad-input case produced, through whichever door it came in. */
export type Outcome =
  | { kind: 'value'; value: unknown }
  | { kind: 'thrown'; error: unknown }
  | { kind: 'http'; status: number; body: unknown; contentType: string | undefined }
  | { kind: 'cli'; code: number; stdout: string; stderr: string };

/** What a case must produce. */
export type Contract =
  | { error: string; message?: RegExp }
  | { status: number; code?: string }
  | { exit: number; stderr?: RegExp }
  | { ok: true };

/** Messages longer than this are not "clear": they probably echo the hostile input. */
const MAX_MESSAGE = 1000;

/** The ways `outcome` breaks `contract`; empty when it keeps it. */
export function contractViolations(outcome: Outcome, contract: Contract): string[] {
  const problems: string[] = [];
  if ('error' in contract) {
    if (outcome.kind !== 'thrown')
      return [`expected ${contract.error}, got ${describeOutcome(outcome)}`];
    const error = outcome.error;
    if (!(error instanceof CellsError))
      return [`expected ${contract.error}, got untyped ${describeOutcome(outcome)}`];
    if (error.code !== contract.error)
      problems.push(
        `expected ${contract.error}, got ${error.code}: ${error.message.slice(0, 200)}`,
      );
    if (!error.message || error.message.length > MAX_MESSAGE)
      problems.push(`unclear message of ${error.message.length} characters`);
    if (contract.message && !contract.message.test(error.message))
      problems.push(
        `message does not match ${String(contract.message)}: ${error.message.slice(0, 300)}`,
      );
    return problems;
  }
  if ('status' in contract) {
    if (outcome.kind !== 'http')
      return [`expected HTTP ${contract.status}, got ${describeOutcome(outcome)}`];
    if (outcome.status !== contract.status)
      problems.push(
        `expected HTTP ${contract.status}, got ${outcome.status}: ${JSON.stringify(outcome.body).slice(0, 200)}`,
      );
    if (!outcome.contentType?.startsWith('application/json'))
      problems.push(`content-type ${String(outcome.contentType)}, not JSON`);
    const body = outcome.body as
      { error?: { status?: unknown; code?: unknown; message?: unknown } } | undefined;
    const message = body?.error?.message;
    if (body?.error?.status !== outcome.status)
      problems.push('the JSON body does not repeat the status');
    if (typeof message !== 'string' || message === '' || message.length > MAX_MESSAGE)
      problems.push('no clear JSON error message');
    if (contract.code !== undefined && body?.error?.code !== contract.code)
      problems.push(`expected code ${contract.code}, got ${String(body?.error?.code)}`);
    return problems;
  }
  if ('exit' in contract) {
    if (outcome.kind !== 'cli')
      return [`expected exit ${contract.exit}, got ${describeOutcome(outcome)}`];
    if (outcome.code !== contract.exit)
      problems.push(`expected exit ${contract.exit}, got ${outcome.code}`);
    if (!/^error: [^\n]+\n$/.test(outcome.stderr))
      problems.push(`stderr is not one error line: ${outcome.stderr.slice(0, 300)}`);
    if (/\n\s+at /.test(outcome.stderr)) problems.push('stderr has a stack trace');
    if (outcome.stderr.length > MAX_MESSAGE)
      problems.push(`stderr of ${outcome.stderr.length} characters`);
    if (contract.stderr && !contract.stderr.test(outcome.stderr))
      problems.push(
        `stderr does not match ${String(contract.stderr)}: ${outcome.stderr.slice(0, 300)}`,
      );
    return problems;
  }
  if (outcome.kind === 'thrown') return [`expected success, got ${describeOutcome(outcome)}`];
  if (outcome.kind === 'http' && (outcome.status < 200 || outcome.status >= 300))
    return [`expected success, got HTTP ${outcome.status}`];
  if (outcome.kind === 'cli' && outcome.code !== 0)
    return [`expected exit 0, got ${outcome.code}: ${outcome.stderr.slice(0, 300)}`];
  return [];
}

function describeOutcome(outcome: Outcome): string {
  switch (outcome.kind) {
    case 'value':
      return 'success';
    case 'thrown': {
      const error = outcome.error as { name?: unknown; code?: unknown; message?: unknown } | null;
      return `${String(error?.name)} (${String(error?.code)}): ${String(error?.message).slice(0, 200)}`;
    }
    case 'http':
      return `HTTP ${outcome.status}`;
    case 'cli':
      return `exit ${outcome.code}: ${outcome.stderr.slice(0, 200)}`;
  }
}

/** Runs `fn` and captures its result or what it threw. */
export async function outcomeOf(fn: () => unknown): Promise<Outcome> {
  try {
    return { kind: 'value', value: await fn() };
  } catch (error) {
    return { kind: 'thrown', error };
  }
}

/** A table whose rows must all survive: `SELECT` text run on the database at `url`. */
export interface WatchedTable {
  url: string;
  sql: string;
}

/** Every row of `tables`, each as one JSON line prefixed by its table, read with plain pg clients. */
export async function rowsOf(tables: readonly WatchedTable[]): Promise<Set<string>> {
  const rows = new Set<string>();
  for (const [i, table] of tables.entries()) {
    for (const row of await rowsIn(table.url, table.sql)) rows.add(`${i} ${JSON.stringify(row)}`);
  }
  return rows;
}

/** The rows of `before` missing from `after`: data that was lost. */
export function lostRows(before: ReadonlySet<string>, after: ReadonlySet<string>): string[] {
  return [...before].filter((row) => !after.has(row));
}
