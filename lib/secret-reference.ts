import { constants, type Stats } from 'node:fs';
import { open, stat } from 'node:fs/promises';
import { isAbsolute } from 'node:path';
import { BadConnectionUrlError, SecretResolutionError } from './errors';

/**
 * Secret references: a connection URL may name where its password is kept instead of carrying it,
 * as `?password=<kind>:<reference>` (`postgres://app@db1/cell1?password=env:CELL1_PW`,
 * `?password=file:/run/secrets/cell1`). The reference is parsed with the URL; the password is
 * resolved when the DataSource opens (`SecretSource`), kept in memory only for that DataSource, and
 * resolved again once when the server refuses it (a rotated secret).
 */

/** Where a password is kept: `?password=<kind>:<reference>` of a connection URL. Holds no secret. */
export interface SecretReference {
  /** `env`, `file`, or a kind of your own that the `resolveSecret` option reads (lower case). */
  readonly kind: string;
  /** The environment variable, the absolute file path, or what your resolver reads. */
  readonly reference: string;
}

/** The database whose password is being resolved, as `resolveSecret` receives it. */
export interface SecretOwner {
  /** How errors name it: `cell 'name' (uuid)`, `the API database`... */
  readonly label: string;
  /** The cell's uuid; none for the API and main databases. */
  readonly uuid?: string;
  /** The cell's name; none for the API and main databases. */
  readonly name?: string;
}

/**
 * Resolves a secret reference to the password: a string, or `undefined` to let the built-in
 * resolvers answer (`env`, `file`). May be async. What it throws or rejects with becomes
 * SecretResolutionError (its message is not kept: it could hold the secret).
 */
export type ResolveSecret = (ref: SecretReference, cell: SecretOwner) => string | undefined | Promise<string | undefined>;

/** How a DataSource's secret is resolved; not exported from the package. */
export interface SecretSettings {
  resolveSecret?: ResolveSecret | undefined;
  /** Bound of each resolution, in ms (the connect timeout). */
  timeoutMs: number;
}

/** A kind: a lower-case word, as URL schemes are written. */
const KIND = /^[a-z][a-z0-9+.-]{0,31}$/;
/** An environment variable name, as POSIX shells accept it. */
const ENV_NAME = /^[A-Za-z_][A-Za-z0-9_]{0,255}$/;
/** Largest secret file read: a password, a token or a certificate key, never more. */
const MAX_FILE_BYTES = 65_536;
/** The kinds read without a `resolveSecret` option. */
export const BUILT_IN_KINDS: readonly string[] = ['env', 'file'];

/**
 * The reference of a URL's `?password=` value. Never echoes the value: it may be a literal password.
 * @throws BadConnectionUrlError when it is not `<kind>:<reference>`, or an `env:` reference names no
 * valid variable, or a `file:` reference no absolute path.
 */
export function parseSecretReference(value: string, label: string): SecretReference {
  const colon = value.indexOf(':');
  const kind = colon > 0 ? value.slice(0, colon) : '';
  const reference = value.slice(colon + 1);
  if (!KIND.test(kind) || reference === '') {
    throw new BadConnectionUrlError(
      label,
      'its password query parameter is not a secret reference (env:NAME, file:/path or kind:reference); a literal password goes after the user name',
    );
  }
  if (kind === 'env' && !ENV_NAME.test(reference)) {
    throw new BadConnectionUrlError(label, 'its env secret reference is not an environment variable name (letters, digits, _)');
  }
  if (kind === 'file' && !isAbsolute(reference)) {
    throw new BadConnectionUrlError(label, 'its file secret reference is not an absolute path');
  }
  return { kind, reference };
}

/**
 * The reference of a built-in kind (an environment variable's name, a file's path: where the secret
 * is, not the secret), which errors may name; undefined for a `resolveSecret` kind, whose reference
 * may mean anything to its resolver.
 */
export function builtInReference(ref: SecretReference): string | undefined {
  return BUILT_IN_KINDS.includes(ref.kind) ? ref.reference : undefined;
}

/** A built-in resolution failure: SecretResolutionError gets the reason, never the value. */
class Unresolved extends Error {}

/**
 * The password of a built-in reference: `env:NAME` reads `process.env.NAME`; `file:/path` reads the
 * file (UTF-8, at most 64 KiB, a regular file only) without one trailing newline, as Docker and
 * Kubernetes secrets end. Undefined for another kind.
 */
async function resolveBuiltIn(ref: SecretReference): Promise<string | undefined> {
  if (ref.kind === 'env') {
    // Own variables only: `process.env.toString` and the like are Object.prototype's functions.
    const value = Object.prototype.hasOwnProperty.call(process.env, ref.reference) ? process.env[ref.reference] : undefined;
    if (typeof value !== 'string' || value === '') throw new Unresolved('its environment variable is not set or empty');
    return value;
  }
  if (ref.kind !== 'file') return undefined;
  // One read of a path at a time: a second SecretSource of the same file shares it.
  let reading = fileReads.get(ref.reference);
  if (reading === undefined) {
    reading = readSecretFile(ref.reference).finally(() => fileReads.delete(ref.reference));
    fileReads.set(ref.reference, reading);
  }
  return reading;
}

/** The reads of `file:` references under way, by path. */
const fileReads = new Map<string, Promise<string>>();

/** What a path is, when it is not a regular file: the reason names it, never its content. */
function notRegular(stats: Stats): string | undefined {
  if (stats.isFile()) return undefined;
  const kind = stats.isFIFO()
    ? 'a FIFO'
    : stats.isSocket()
      ? 'a socket'
      : stats.isDirectory()
        ? 'a directory'
        : stats.isCharacterDevice()
          ? 'a character device'
          : stats.isBlockDevice()
            ? 'a block device'
            : 'another kind of file';
  return `its file is not a regular file (${kind})`;
}

/**
 * Reads a secret file: a regular file only (symbolic links followed, as Kubernetes mounts them). A
 * FIFO without a writer would hold a libuv threadpool thread in open() for ever (four of them
 * starve the process's fs, DNS and crypto), so the path is checked first and opened non-blocking,
 * and the opened descriptor is checked again (the path may have been swapped in between).
 */
async function readSecretFile(path: string): Promise<string> {
  let text: string;
  try {
    const refused = notRegular(await stat(path));
    if (refused !== undefined) throw new Unresolved(refused);
    const file = await open(path, constants.O_RDONLY | constants.O_NONBLOCK);
    try {
      const swapped = notRegular(await file.stat());
      if (swapped !== undefined) throw new Unresolved(swapped);
      const buffer = Buffer.alloc(MAX_FILE_BYTES + 1);
      const { bytesRead } = await file.read(buffer, 0, buffer.length, 0);
      if (bytesRead > MAX_FILE_BYTES) throw new Unresolved(`its file is larger than ${MAX_FILE_BYTES} bytes`);
      text = buffer.subarray(0, bytesRead).toString('utf8');
    } finally {
      await file.close();
    }
  } catch (error) {
    if (error instanceof Unresolved) throw error;
    const code = (error as { code?: unknown }).code;
    throw new Unresolved(`its file cannot be read${typeof code === 'string' ? ` (${code})` : ''}`);
  }
  const value = text.replace(/\r?\n$/, '');
  if (value === '') throw new Unresolved('its file is empty');
  return value;
}

/** Marks a password function that a SecretSource answers. */
const kSecretSource = Symbol('typeorm-cells.secretSource');

/** The resolved password of each SecretSource. */
const resolvedPasswords = new WeakMap<SecretSource, string>();

/** A password function of TypeORM options (pg calls it per new connection; mysql-pool.ts reads it). */
export type SecretPassword = (() => string) & { readonly [kSecretSource]: SecretSource };

/**
 * The password of one DataSource: resolved before it opens (`resolve`), then answered from memory
 * to every new connection (`password`); resolved again by `refresh` when the server refused it.
 * `util.inspect` and JSON show its reference's kind only. (Not exported from the package.)
 */
export class SecretSource {
  /** What TypeORM's `password` option gets: the resolved password, read per new connection. */
  readonly password: SecretPassword;
  private pending: Promise<string> | undefined;

  constructor(
    readonly ref: SecretReference,
    private readonly owner: SecretOwner,
    private readonly settings: SecretSettings,
  ) {
    const password = (): string => {
      const value = this.value;
      if (value === undefined) {
        throw new SecretResolutionError(this.owner.label, this.ref.kind, 'it was not resolved before connecting', builtInReference(this.ref));
      }
      return value;
    };
    Object.defineProperty(password, kSecretSource, { value: this, enumerable: false });
    this.password = password as SecretPassword;
  }

  /** Kept outside the object, so that no inspect option (not even `customInspect: false`) shows it. */
  private get value(): string | undefined {
    return resolvedPasswords.get(this);
  }

  private set value(value: string | undefined) {
    if (value === undefined) resolvedPasswords.delete(this);
    else resolvedPasswords.set(this, value);
  }

  /** The resolved password, or undefined before the first resolution. */
  current(): string | undefined {
    return this.value;
  }

  /** Resolves once (concurrent calls share it); later calls answer from memory. */
  resolve(): Promise<string> {
    if (this.value !== undefined) return Promise.resolve(this.value);
    return this.resolveAgain();
  }

  /**
   * Resolves again after the server refused the password (concurrent calls share one resolution).
   * @returns true when the password changed, so that a new connection attempt may succeed.
   * @throws SecretResolutionError when the resolution fails.
   */
  async refresh(): Promise<boolean> {
    const before = this.value;
    return (await this.resolveAgain()) !== before;
  }

  private resolveAgain(): Promise<string> {
    this.pending ??= this.resolveWithin().finally(() => (this.pending = undefined));
    return this.pending;
  }

  private async resolveWithin(): Promise<string> {
    const { timeoutMs } = this.settings;
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Unresolved(`no answer within ${timeoutMs} ms`)), timeoutMs);
      timer.unref();
    });
    try {
      this.value = await Promise.race([this.resolveOnce(), late]);
      return this.value;
    } catch (error) {
      const reason = error instanceof Unresolved ? error.message : 'resolveSecret failed';
      throw new SecretResolutionError(this.owner.label, this.ref.kind, reason, builtInReference(this.ref));
    } finally {
      clearTimeout(timer);
    }
  }

  private async resolveOnce(): Promise<string> {
    const { resolveSecret } = this.settings;
    const given = resolveSecret === undefined ? undefined : await resolveSecret({ ...this.ref }, { ...this.owner });
    const value = given ?? (await resolveBuiltIn(this.ref));
    if (value === undefined) {
      throw new Unresolved(`no resolver reads this kind (${BUILT_IN_KINDS.join(' and ')} are built in; pass the resolveSecret option for others)`);
    }
    if (typeof value !== 'string' || value === '') throw new Unresolved('resolveSecret answered with no password (a non-empty string)');
    return value;
  }

  /** No password: the reference's kind only. */
  toJSON(): Record<string, unknown> {
    return { kind: this.ref.kind, resolved: this.value !== undefined };
  }

  [Symbol.for('nodejs.util.inspect.custom')](): string {
    return `SecretSource ${JSON.stringify(this.toJSON())}`;
  }
}

/** The SecretSource answering a `password` option, if it is one's. @internal */
export function secretSourceOf(password: unknown): SecretSource | undefined {
  if (typeof password !== 'function') return undefined;
  return (password as Partial<SecretPassword>)[kSecretSource];
}

/**
 * True when the server refused the password itself: PostgreSQL's 28P01 (invalid_password), MySQL's
 * and MariaDB's ER_ACCESS_DENIED_ERROR. A stale secret fails so; a missing role (28000) does not.
 * @internal
 */
export function isPasswordRefused(error: unknown): boolean {
  const { code } = (error ?? {}) as { code?: unknown };
  return code === '28P01' || code === 'ER_ACCESS_DENIED_ERROR';
}

/**
 * Opens a connection with `connect` (callback style: pg-pool's and mysql2's); when the server
 * refuses the password of `source`, resolves it again once (unless another connection already
 * did) and, if it changed, opens once more.
 * What `callback` gets is the outcome of the last attempt (or the SecretResolutionError).
 * @returns the callback handed to `connect` first, so a caller can find it in the pool's queue.
 * @internal
 */
export function connectWithFreshSecret<E, A extends unknown[]>(
  source: SecretSource | undefined,
  connect: (callback: (error: E, ...results: A) => void) => void,
  callback: (error: E, ...results: A) => void,
): (error: E, ...results: A) => void {
  if (source === undefined) {
    connect(callback);
    return callback;
  }
  // A connection that started before another's refusal was answered may fail with the old
  // password after the new one arrived: it tries again with that one, resolving nothing.
  const used = source.current();
  const first = (error: E, ...results: A): void => {
    if (error == null || !isPasswordRefused(error)) return callback(error, ...results);
    if (source.current() !== used) return connect(callback);
    source.refresh().then(
      (changed) => (changed ? connect(callback) : callback(error, ...results)),
      (resolutionError: unknown) => callback(resolutionError as E, ...results),
    );
  };
  connect(first);
  return first;
}
