import { fork } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { REPO_ROOT } from '../../dev/repo-root';
import type { CellState } from '../../lib';

/**
 * A second OS process running the built library (dist/, as a deployed app does) with its own Cells,
 * API pool and listener, watching how its routed calls to one cell behave: the cell-state spec asks
 * it to wait for a state and it answers with the wall-clock time (performance.timeOrigin +
 * performance.now(), comparable across processes of one machine) at which a call it started first
 * behaved so.
 */
const CHILD_PROGRAM = `
const { randomUUID } = require('node:crypto');
const { EntitySchema } = require('typeorm');
const [libPath, apiUrl, cellUuid, table] = process.argv.slice(2);
const { Cells, CellDisabledError, CellReadOnlyError, targetCell } = require(libPath);
const Widget = new EntitySchema({
  name: 'Widget',
  tableName: table,
  columns: { uuid: { type: 'uuid', primary: true }, name: { type: 'varchar' } },
});
const cells = new Cells({ api: { url: apiUrl, poolSize: 2 }, poolSize: 3, entities: [Widget] });
const widgets = cells.getRepository(Widget);
const now = () => performance.timeOrigin + performance.now();
async function behaviour() {
  try {
    await targetCell(cellUuid, () => widgets.update({ uuid: randomUUID() }, { name: 'probe' }));
    return 'writable';
  } catch (error) {
    if (error instanceof CellReadOnlyError) return 'read-only';
    if (error instanceof CellDisabledError) return 'disabled';
    throw error;
  }
}
const wanted = { active: 'writable', draining: 'writable', 'read-only': 'read-only', disabled: 'disabled' };
process.on('message', async ({ id, state }) => {
  try {
    const deadline = now() + 5000;
    for (;;) {
      const started = now();
      if ((await behaviour()) === wanted[state]) return process.send({ id, ok: true, at: started });
      if (now() > deadline) throw new Error('cell still not ' + state + ' after 5000 ms');
      await new Promise((resolve) => setTimeout(resolve, 2));
    }
  } catch (error) {
    process.send({ id, ok: false, error: String(error) });
  }
});
process.on('disconnect', () => { cells.destroy().finally(() => process.exit(0)); });
cells.initialize().then(() => process.send({ ready: true }), (error) => { console.error(String(error)); process.exit(1); });
`;

/** The watcher process; `stop()` ends it and removes its script. */
export interface StateWatcher {
  /** Resolves with the wall-clock ms at which a call the watcher started first behaved as `state`. */
  seen(state: CellState): Promise<number>;
  stop(): Promise<void>;
}

/** Wall-clock milliseconds, comparable with a watcher's. */
export function wallClockMs(): number {
  return performance.timeOrigin + performance.now();
}

/**
 * Starts a watcher of `cellUuid` over the API database at `apiUrl`; resolves once its Cells is
 * initialized. Its probe updates no row of `table` (a table with `uuid` and `name` columns).
 */
export async function startStateWatcher(apiUrl: string, cellUuid: string, table = 'widgets'): Promise<StateWatcher> {
  const dir = await mkdtemp(join(tmpdir(), 'cells-state-watcher-'));
  const script = join(dir, 'watcher.cjs');
  await writeFile(script, CHILD_PROGRAM);
  const libPath = join(REPO_ROOT, 'dist', 'lib', 'index.js');
  // Run from the repository, so the child resolves typeorm and pg from its node_modules.
  const child = fork(script, [libPath, apiUrl, cellUuid, table], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'], cwd: REPO_ROOT, env: { ...process.env, NODE_PATH: join(REPO_ROOT, 'node_modules') } });
  const pending = new Map<number, { resolve(at: number): void; reject(error: Error): void }>();
  let nextId = 0;
  await new Promise<void>((resolve, reject) => {
    child.once('exit', (code) => reject(new Error(`state watcher exited with ${code} before it was ready`)));
    child.on('message', (message: { ready?: boolean; id?: number; ok?: boolean; at?: number; error?: string }) => {
      if (message.ready) return resolve();
      const waiter = pending.get(message.id!);
      pending.delete(message.id!);
      if (message.ok) waiter?.resolve(message.at!);
      else waiter?.reject(new Error(message.error));
    });
  });
  return {
    seen(state) {
      const id = nextId++;
      return new Promise((resolve, reject) => {
        pending.set(id, { resolve, reject });
        child.send({ id, state });
      });
    },
    async stop() {
      const exited = new Promise((resolve) => child.once('exit', resolve));
      child.disconnect();
      await exited;
      await rm(dir, { recursive: true, force: true });
    },
  };
}
