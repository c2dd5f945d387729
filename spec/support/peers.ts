import type { Logger } from 'typeorm';
import { Cells, type CellsOptions } from '../../lib';
import type { CellWorld } from './cells';
import { Widget } from './widget';
import { freePort } from '../../dev/free-port';

export { eventually } from '../../dev/wait';

/** A TypeORM logger that records every query a DataSource runs, to count API-database round trips. */
export class QueryCounter implements Logger {
  readonly queries: string[] = [];

  /** Queries recorded so far whose text matches `pattern` (all when omitted). */
  count(pattern?: RegExp): number {
    return pattern === undefined
      ? this.queries.length
      : this.queries.filter((q) => pattern.test(q)).length;
  }

  logQuery(query: string): void {
    this.queries.push(query);
  }
  logQueryError(): void {}
  logQuerySlow(): void {}
  logSchemaBuild(): void {}
  logMigration(): void {}
  log(): void {}
}

/** A TypeORM logger that hands everything it is asked to log to `capture`, for secret-leak checks. */
export function capturingLogger(capture: (...parts: unknown[]) => void): Logger {
  return {
    logQuery: (q, p) => capture('query', q, p),
    logQueryError: (e, q, p) => capture('query-error', e, q, p),
    logQuerySlow: (t, q, p) => capture('slow', t, q, p),
    logSchemaBuild: (m) => capture('schema', m),
    logMigration: (m) => capture('migration', m),
    log: (l, m) => capture(l, m),
  };
}

/**
 * Another initialized `Cells` over the API database of `world`, as a second process would have,
 * with small pools; its API queries go to `counter` when given. The caller destroys it.
 */
export async function openPeer(
  world: CellWorld,
  options: Partial<CellsOptions> & { counter?: QueryCounter } = {},
): Promise<Cells> {
  const { counter, ...rest } = options;
  const peer = new Cells({
    api: { url: world.api.url, poolSize: 3, ...(counter ? { logger: counter } : {}) },
    poolSize: 2,
    entities: [Widget],
    ...rest,
  });
  return peer.initialize();
}

/** A loopback TCP port nothing listens on (taken from the OS, then released). */
export const closedPort: () => Promise<number> = freePort;
