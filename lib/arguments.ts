import { CELL_STATES, type CellState } from '../entities/CellMapping';
import { InvalidArgumentError } from './errors';

/** A uuid in its canonical textual form, in either case. */
export const UUID_PATTERN = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/**
 * `value` in lower case when it is a uuid (see UUID_PATTERN).
 * @throws InvalidArgumentError otherwise, naming `what` (`cell uuid`, `instance uuid`).
 */
export function uuidArg(value: unknown, what: string): string {
  if (typeof value !== 'string' || !UUID_PATTERN.test(value)) {
    const shown = typeof value === 'string' ? `'${value.slice(0, 60)}'` : typeof value;
    throw new InvalidArgumentError(`The ${what} must be a uuid, got ${shown}.`);
  }
  return value.toLowerCase();
}

/** Longest name, host, project or user id accepted: the width of their API-database columns. */
export const MAX_NAME = 255;

/** Node fires a timer set for longer than this (2^31 - 1 ms, about 24.8 days) at once. */
export const MAX_TIMER_MS = 2_147_483_647;

/**
 * Checks an optional integer option or argument against its documented range.
 * @throws InvalidArgumentError when `value` is not an integer from `min` to `max`.
 */
export function integerArg(value: number | undefined, name: string, min: number, max: number): void {
  if (value === undefined) return;
  if (!Number.isInteger(value) || value < min || value > max) {
    throw new InvalidArgumentError(`${name} must be an integer from ${min} to ${max}, got ${String(value).slice(0, 20)}.`);
  }
}
/** A UTF-16 surrogate without its pair: PostgreSQL would store U+FFFD instead of what was given. */
const LONE_SURROGATE = /\p{Cs}/u;
const NOT_BLANK = /\S/;

/**
 * `value` when it is a non-empty string of at most `max` characters that PostgreSQL stores as
 * given: no NUL byte (text cannot hold one) and no lone surrogate (stored as U+FFFD, so the value
 * would no longer be found by what was passed).
 * @throws InvalidArgumentError otherwise; the message names `what`, never echoes the value.
 */
export function nameArg(value: unknown, what: string, max = MAX_NAME): string {
  // Regex tests, not trim(): RequestContext.clone() runs this on every targeted call; no allocation.
  if (typeof value !== 'string' || value.length > max || !NOT_BLANK.test(value)) {
    const shown = typeof value === 'string' ? `a string of length ${value.length}` : describeType(value);
    throw new InvalidArgumentError(
      `The ${what} must be a non-empty string of at most ${max} characters, got ${shown}.`,
    );
  }
  if (value.includes('\u0000')) throw new InvalidArgumentError(`The ${what} must not contain a NUL byte.`);
  if (LONE_SURROGATE.test(value)) {
    throw new InvalidArgumentError(`The ${what} must be well-formed unicode: it holds a lone surrogate.`);
  }
  return value;
}

/** `nameArg`, or `null` for null; `undefined` stays undefined (not given). */
export function optionalNameArg(value: unknown, what: string, max = MAX_NAME): string | null | undefined {
  return value === undefined || value === null ? value : nameArg(value, what, max);
}

/**
 * `value` when it is a boolean, `fallback` when it is undefined. A string such as `'false'` or
 * `'no'` is refused, not read as truthy.
 * @throws InvalidArgumentError otherwise.
 */
export function booleanArg(value: unknown, what: string, fallback: boolean): boolean;
export function booleanArg(value: unknown, what: string): boolean | undefined;
export function booleanArg(value: unknown, what: string, fallback?: boolean): boolean | undefined {
  if (value === undefined) return fallback;
  if (typeof value !== 'boolean') {
    const hint = typeof value === 'string' ? ` (a string such as 'false' is not read as a boolean)` : '';
    throw new InvalidArgumentError(`${what} must be true or false, got ${describeType(value)}${hint}.`);
  }
  return value;
}

/**
 * `value` when it is a plain object (not null, not an array), `{}` when it is undefined.
 * @throws InvalidArgumentError otherwise.
 */
export function objectArg<T extends object>(value: T | undefined, what: string): T | Partial<T> {
  if (value === undefined) return {};
  if (value === null || typeof value !== 'object' || Array.isArray(value)) {
    throw new InvalidArgumentError(`${what} must be an object, got ${describeType(value)}.`);
  }
  return value;
}

/**
 * `value` as a function.
 * @throws InvalidArgumentError naming `what` for anything else.
 */
export function functionArg<T extends (...args: never[]) => unknown>(value: T, what: string): T {
  if (typeof value !== 'function') {
    throw new InvalidArgumentError(`${what} must be a function, got ${describeType(value)}.`);
  }
  return value;
}

/** How a message names a value's type without echoing it: `'a string'`, `'null'`, `'an array'`. */
export function describeType(value: unknown): string {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'an array';
  if (typeof value === 'string') return `a string of length ${value.length}`;
  return typeof value;
}

/**
 * `value` as a cell state, `undefined` staying undefined.
 * @throws InvalidArgumentError listing the valid states for anything else.
 */
export function cellStateArg(value: unknown, what = 'cell state'): CellState | undefined {
  if (value === undefined) return undefined;
  if (typeof value === 'string' && (CELL_STATES as readonly string[]).includes(value)) return value as CellState;
  const given = typeof value === 'string' ? `'${value.slice(0, 40)}'` : describeType(value);
  throw new InvalidArgumentError(`${what} must be one of ${CELL_STATES.map((s) => `'${s}'`).join(', ')}; got ${given}.`);
}
