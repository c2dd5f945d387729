import { appendFileSync } from 'node:fs';
import type { EnvironmentContext, JestEnvironmentConfig } from '@jest/environment';
import { TestEnvironment } from 'jest-environment-node';

/**
 * An opt-in Jest environment that finds the spec file behind "A worker process has failed to exit
 * gracefully": run with `CELLS_LEAK_PROBE=<file>` (jest.config.js then uses it) and it appends to
 * `<file>`:
 * - per spec file, the resource types (`process.getActiveResourcesInfo()`) active at its teardown
 *   beyond those active at its setup, and how many ms they took to go (up to 3 s);
 * - per Jest worker that is still alive 300 ms after Jest asked it to end (Jest force-exits it at
 *   500 ms), the spec files it ran and the handles that keep it alive.
 * Nothing is written for a clean run but the per-file lines.
 */

/** jest-worker's CHILD_MESSAGE_END: the parent asks the worker to exit. */
const CHILD_MESSAGE_END = 2;
const SETTLE_MS = 3_000;
const ALIVE_AFTER_END_MS = 300;

type Counts = Map<string, number>;

function activeResources(): Counts {
  const counts: Counts = new Map();
  for (const type of process.getActiveResourcesInfo()) counts.set(type, (counts.get(type) ?? 0) + 1);
  return counts;
}

/** Resources in `after` beyond those in `before`, e.g. `{ TCPSocketWrap: 1 }`. */
function extra(before: Counts, after: Counts): Record<string, number> {
  const out: Record<string, number> = {};
  for (const [type, n] of after) if (n > (before.get(type) ?? 0)) out[type] = n - (before.get(type) ?? 0);
  return out;
}

/** A short description of a handle of `process._getActiveHandles()`: no URL, only addresses and ports. */
function describeHandle(handle: unknown): string {
  const name = (handle as { constructor?: { name?: string } } | null)?.constructor?.name ?? typeof handle;
  const h = handle as Record<string, unknown>;
  if (name === 'Socket') return `Socket ${String(h['localPort'])}->${String(h['remoteAddress'])}:${String(h['remotePort'])}`;
  if (name === 'Server') return `Server ${JSON.stringify((handle as { address(): unknown }).address())}`;
  if (name === 'ChildProcess') return `ChildProcess ${String(h['pid'])} ${String(h['spawnfile'])}`;
  if (name === 'Timeout') return `Timeout ${String(h['_idleTimeout'])} ms`;
  return name;
}

const probeFile = process.env['CELLS_LEAK_PROBE'];
const filesRun: string[] = [];

function record(line: string): void {
  if (probeFile) appendFileSync(probeFile, `${line}\n`);
}

// In a Jest worker (a child process with an IPC channel): report the worker if it outlives its end.
if (probeFile && process.send !== undefined) {
  const onMessage = (message: unknown): void => {
    if (!Array.isArray(message) || message[0] !== CHILD_MESSAGE_END) return;
    // Our own listener would keep the IPC channel referenced: drop it first.
    process.removeListener('message', onMessage);
    setTimeout(() => {
      const handles = (process as unknown as { _getActiveHandles(): unknown[] })._getActiveHandles().map(describeHandle);
      record(`worker ${process.pid} alive ${ALIVE_AFTER_END_MS} ms after END; ran ${JSON.stringify(filesRun)}; resources ${JSON.stringify(process.getActiveResourcesInfo())}; handles ${JSON.stringify(handles)}`);
    }, ALIVE_AFTER_END_MS).unref();
  };
  process.on('message', onMessage);
}

export default class LeakProbeEnvironment extends TestEnvironment {
  private readonly testPath: string;
  private before: Counts = new Map();

  constructor(config: JestEnvironmentConfig, context: EnvironmentContext) {
    super(config, context);
    this.testPath = context.testPath;
  }

  override async setup(): Promise<void> {
    filesRun.push(this.testPath);
    this.before = activeResources();
    await super.setup();
  }

  override async teardown(): Promise<void> {
    const atTeardown = extra(this.before, activeResources());
    const started = Date.now();
    let goneAfterMs = -1;
    while (Date.now() - started < SETTLE_MS) {
      if (Object.keys(extra(this.before, activeResources())).length === 0) {
        goneAfterMs = Date.now() - started;
        break;
      }
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    record(`${this.testPath}: at teardown ${JSON.stringify(atTeardown)}; ${goneAfterMs < 0 ? `still there after ${SETTLE_MS} ms: ${JSON.stringify(extra(this.before, activeResources()))}` : `gone after ${goneAfterMs} ms`}`);
    await super.teardown();
  }
}
