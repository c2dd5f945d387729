import { InvalidArgumentError as CommanderArgumentError } from 'commander';

/** Commander parsers of the CLI's numeric options. */

/**
 * Commander argument parser of a count (`--concurrency`, `--wave-size`, `--max-per-server`):
 * decimal digits only (not `1e3`, `0x2`, ` 2` or `2.0`, which Number() reads), from 1 to 2^53 - 1.
 */
export function positiveInteger(value: string): number {
  const n = Number(value);
  if (!/^\d+$/.test(value) || !Number.isSafeInteger(n) || n < 1) throw new CommanderArgumentError('must be an integer >= 1.');
  return n;
}

/** PostgreSQL's largest `lock_timeout`, in ms; also the largest delay of Node's `setTimeout`. */
export const MAX_TIMEOUT_MS = 2_147_483_647;

/**
 * Commander argument parser of a timeout option (`--lock-timeout`, `--config-timeout`): ms from 0
 * (no limit) to PostgreSQL's and Node's maximum.
 */
export function timeoutMs(value: string): number {
  const n = Number(value);
  if (!/^\d+$/.test(value) || !Number.isSafeInteger(n) || n > MAX_TIMEOUT_MS)
    throw new CommanderArgumentError(`must be an integer from 0 to ${MAX_TIMEOUT_MS} (ms).`);
  return n;
}
