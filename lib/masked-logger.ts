import type { DataSource, Logger } from 'typeorm';
import { maskSecrets } from './connection-url';

function mask(value: unknown): unknown {
  if (typeof value === 'string') return maskSecrets(value);
  if (Array.isArray(value)) return value.map(mask);
  if (value instanceof Error) {
    // Query errors quote the failing parameters in their message.
    value.message = maskSecrets(value.message);
    return value;
  }
  return value;
}

/**
 * Wraps the TypeORM logger of `dataSource` so that every query, parameter list and message it logs
 * has connection passwords masked: inserting a CellMapping with logging on would otherwise print
 * its database URL. What the logger throws is ignored, so a broken logger fails no query.
 */
export function maskDataSourceLogger(dataSource: DataSource): void {
  const { logging, logger, maxQueryExecutionTime } = dataSource.options;
  // TypeORM calls its logger on every query; with logging off and no custom logger nothing is
  // printed, so the hot path skips the masking proxy.
  if (!logging && logger === undefined && maxQueryExecutionTime === undefined) return;
  const inner = dataSource.logger;
  const masked = new Proxy(inner, {
    get(target, property, receiver) {
      const value = Reflect.get(target, property, receiver) as unknown;
      if (typeof value !== 'function') return value;
      return (...args: unknown[]) => {
        // A logger that throws must not fail the query it was told about.
        try {
          return (value as (...a: unknown[]) => unknown).apply(target, args.map(mask));
        } catch {
          return undefined;
        }
      };
    },
  }) as Logger;
  Object.defineProperty(dataSource, 'logger', { value: masked, configurable: true, writable: true });
}
