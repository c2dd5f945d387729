import { access, chmod, mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/** Prefix of a run's temporary root in the OS temp directory; the pid lets a later run clean up. */
const ROOT_PREFIX = 'typeorm-cells-test-';
const TMPDIR_VARIABLES = ['TMPDIR', 'TMP', 'TEMP'] as const;
const COMPILE_CACHE_VARIABLE = 'NODE_COMPILE_CACHE';
/** Key under which global setup leaves the run's root and the variables it replaced. */
const TEMP_ROOT_KEY = Symbol.for('typeorm-cells.spec.temp-root');

interface TempRoot {
  root: string;
  saved: Record<string, string | undefined>;
}
type GlobalWithRoot = typeof globalThis & { [TEMP_ROOT_KEY]?: TempRoot };

/**
 * Gives the run its own folder in the OS temp directory and points TMPDIR (TMP, TEMP) at it, so
 * everything the specs, their workers and the processes they start (CLI, embedded PostgreSQL, npm)
 * put in `os.tmpdir()` lands there, apart from other runs on the machine. First removes the roots
 * of runs that were killed (their Jest process is gone and no PostgreSQL still runs in them).
 */
export async function enterTempRoot(): Promise<void> {
  const osTmpdir = tmpdir();
  for (const name of await readdir(osTmpdir).catch(() => [])) {
    if (!name.startsWith(ROOT_PREFIX)) continue;
    const pid = Number(name.slice(ROOT_PREFIX.length).split('-')[0]);
    if (!Number.isInteger(pid) || pid <= 0 || isAlive(pid)) continue;
    const dir = join(osTmpdir, name);
    if (!(await holdsRunningServer(dir))) await rm(dir, { recursive: true, force: true });
  }
  const root = await mkdtemp(join(osTmpdir, `${ROOT_PREFIX}${process.pid}-`));
  // Like /tmp itself (sticky, everyone may create files): embedded PostgreSQL, run as root,
  // initialises its data directory as the unprivileged postgres user.
  await chmod(root, 0o1777);
  const saved = Object.fromEntries(
    [...TMPDIR_VARIABLES, COMPILE_CACHE_VARIABLE].map((name) => [name, process.env[name]]),
  );
  (globalThis as GlobalWithRoot)[TEMP_ROOT_KEY] = { root, saved };
  for (const name of TMPDIR_VARIABLES) process.env[name] = root;
  // tsc (the build in global setup) turns on Node's compile cache, kept in os.tmpdir() by default
  // on Node 22+: keep it with the other caches, where it also speeds up the next run.
  process.env[COMPILE_CACHE_VARIABLE] ??= join(
    __dirname,
    '..',
    '..',
    'node_modules',
    '.cache',
    'node-compile-cache',
  );
}

/**
 * Removes the run's temporary root and points TMPDIR back at the OS temp directory. Returns what
 * was still in the root (paths relative to it, two levels deep): files some spec did not remove.
 */
export async function leaveTempRoot(): Promise<string[]> {
  const holder = globalThis as GlobalWithRoot;
  const entered = holder[TEMP_ROOT_KEY];
  if (entered === undefined) return [];
  delete holder[TEMP_ROOT_KEY];
  const { root, saved } = entered;
  const left: string[] = [];
  for (const entry of await readdir(root, { withFileTypes: true }).catch(() => [])) {
    const inside = entry.isDirectory() ? await readdir(join(root, entry.name)).catch(() => []) : [];
    left.push(entry.name, ...inside.slice(0, 5).map((name) => join(entry.name, name)));
  }
  await rm(root, { recursive: true, force: true });
  for (const [name, value] of Object.entries(saved)) {
    if (value === undefined) delete process.env[name];
    else process.env[name] = value;
  }
  return left;
}

/** Whether process `pid` exists (one of another user counts). */
export function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Whether `dir` is a PostgreSQL data directory with a running postmaster (it keeps `postmaster.pid`). */
export function isRunningDataDir(dir: string): Promise<boolean> {
  return access(join(dir, 'postmaster.pid')).then(
    () => true,
    () => false,
  );
}

/** Whether a PostgreSQL data directory directly inside `dir` has a running postmaster. */
async function holdsRunningServer(dir: string): Promise<boolean> {
  for (const name of await readdir(dir).catch(() => [])) {
    if (await isRunningDataDir(join(dir, name))) return true;
  }
  return false;
}
