import { execFile } from 'node:child_process';
import { pbkdf2 } from 'node:crypto';
import { constants, closeSync, openSync } from 'node:fs';
import { mkdtemp, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { SecretResolutionError } from '../lib';
import { SecretSource } from '../lib/secret-reference';

/**
 * A `file:` secret reference reads a regular file only: a FIFO, a socket, a device or a directory
 * is refused at once, naming the kind of file and never its content. A FIFO with no writer would
 * otherwise hold a libuv threadpool thread in open() for ever; four of them starve pbkdf2, DNS and
 * fs of the whole process.
 */

const OWNER = { label: "cell 'c1' (uuid-1)" };
let dir: string;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'cells-secret-kinds-'));
});

afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

function sourceOf(path: string, timeoutMs = 2_000): SecretSource {
  return new SecretSource({ kind: 'file', reference: path }, OWNER, { timeoutMs });
}

/** Frees a reader blocked in open() of `fifo` (before the fix), so the worker can exit. */
function unblock(fifo: string): void {
  try {
    closeSync(openSync(fifo, constants.O_WRONLY | constants.O_NONBLOCK));
  } catch {
    // no reader waiting: nothing to free
  }
}

it('refuses a FIFO at once, and the threadpool still answers afterwards', async () => {
  const fifos = [0, 1, 2, 3, 4, 5].map((i) => join(dir, `fifo-${i}`));
  for (const fifo of fifos) await promisify(execFile)('mkfifo', [fifo]);
  try {
    const outcomes = await Promise.allSettled(fifos.map((fifo) => sourceOf(fifo, 300).resolve()));
    for (const outcome of outcomes) {
      expect(outcome.status).toBe('rejected');
      const reason = (outcome as PromiseRejectedResult).reason as SecretResolutionError;
      expect(reason).toBeInstanceOf(SecretResolutionError);
      expect(reason.message).toMatch(/not a regular file \(a FIFO\)/);
    }
    // A second resolution of the same reference while nothing is pending: refused again, quickly.
    await expect(sourceOf(fifos[0]!, 300).resolve()).rejects.toThrow(/not a regular file/);
    const derived = await Promise.race([
      promisify(pbkdf2)('pw', 'salt', 1, 16, 'sha256').then(() => 'done'),
      new Promise((done) => setTimeout(() => done('starved'), 2_000).unref()),
    ]);
    expect(derived).toBe('done');
    await expect(readFile(__filename)).resolves.toBeInstanceOf(Buffer);
  } finally {
    fifos.forEach(unblock);
  }
});

it.each([
  ['a directory', () => dir, /not a regular file \(a directory\)/],
  ['a character device', () => '/dev/zero', /not a regular file \(a character device\)/],
])('refuses %s, naming its kind', async (_name, path, message) => {
  await expect(sourceOf(path()).resolve()).rejects.toThrow(message);
});

it('reads a regular file through a symbolic link, as Kubernetes mounts secrets', async () => {
  const file = join(dir, 'secret-target');
  await writeFile(file, 'through-the-link\n');
  const link = join(dir, 'secret-link');
  await symlink(file, link);
  await expect(sourceOf(link).resolve()).resolves.toBe('through-the-link');
});

describe('an env: reference naming no variable of the environment', () => {
  it.each(['toString', 'constructor', 'hasOwnProperty', '__proto__'])(
    "'%s' (a property every object has) is an unset variable, not a password",
    async (name) => {
      expect(Object.prototype.hasOwnProperty.call(process.env, name)).toBe(false);
      const error = await new SecretSource({ kind: 'env', reference: name }, OWNER, { timeoutMs: 2_000 }).resolve().catch((e: unknown) => e);
      expect(error).toBeInstanceOf(SecretResolutionError);
      expect((error as Error).message).toMatch(/environment variable is not set or empty/);
    },
  );
});
