import { EventEmitter } from 'node:events';
import { inspect } from 'node:util';
import {
  InvalidArgumentError,
  NoContextError,
  RequestContext,
  bindContext,
  getContext,
  readFromPrimary,
  readFromReplica,
  runWithContext,
  setTargetCell,
  targetCell,
  tryGetContext,
} from '../lib';
import { sleep } from '../dev/wait';

const A = '11111111-1111-4111-8111-111111111111';
const B = '22222222-2222-4222-8222-222222222222';

describe('RequestContext', () => {
  it('defaults to an untargeted context that hides soft-deleted rows', () => {
    const ctx = new RequestContext();
    expect(ctx.requestId).toMatch(/^req-/);
    expect(ctx.readDeleted).toBe('no');
    expect(ctx.dbConnection).toBeNull();
    expect(ctx.cellUuid).toBeNull();
    expect(ctx.isAdmin).toBe(false);
  });

  it('rejects an unknown readDeleted mode with a typed error', () => {
    expect(() => new RequestContext({ readDeleted: 'maybe' as never })).toThrow(InvalidArgumentError);
    const ctx = new RequestContext();
    expect(() => {
      ctx.readDeleted = 'YES' as never;
    }).toThrow(expect.objectContaining({ code: 'CELLS_INVALID_ARGUMENT' }));
    expect(ctx.readDeleted).toBe('no');
  });

  it('rejects a malformed cell uuid without echoing more than a prefix', () => {
    const long = `x${'a'.repeat(500)}`;
    expect(() => new RequestContext({ cell: long })).toThrow(InvalidArgumentError);
    try {
      new RequestContext({ cell: long });
    } catch (error) {
      expect((error as Error).message.length).toBeLessThan(200);
    }
  });

  it('serialises without anything but the routing key', () => {
    const ctx = new RequestContext({ requestId: 'r1', projectId: 'p1', cell: { uuid: A, name: 'cell1' } });
    expect(JSON.parse(JSON.stringify(ctx))).toEqual({
      requestId: 'r1',
      userId: null,
      projectId: 'p1',
      isAdmin: false,
      readDeleted: 'no',
      readFrom: 'primary',
      dbConnection: A,
      cellUuid: A,
      cellName: 'cell1',
    });
    expect(String(ctx)).toBe('RequestContext(r1, cell cell1)');
    expect(inspect(ctx)).toContain(A);
  });
});

describe('readFrom', () => {
  it('defaults to the primary and rejects anything but primary or replica with a typed error', () => {
    expect(new RequestContext().readFrom).toBe('primary');
    expect(new RequestContext({ readFrom: 'replica' }).readFrom).toBe('replica');
    expect(() => new RequestContext({ readFrom: 'slave' as never })).toThrow(InvalidArgumentError);
    const ctx = new RequestContext();
    expect(() => {
      ctx.readFrom = 'REPLICA' as never;
    }).toThrow(expect.objectContaining({ code: 'CELLS_INVALID_ARGUMENT' }));
    expect(ctx.readFrom).toBe('primary');
    expect(ctx.clone().readFrom).toBe('primary');
    ctx.readFrom = 'replica';
    expect(ctx.clone().readFrom).toBe('replica');
  });

  it('scopes readFromReplica and readFromPrimary to their callback, also when it throws, keeping the target', async () => {
    const outer = new RequestContext({ cell: A });
    await runWithContext(outer, async () => {
      await readFromReplica(async () => {
        await sleep(1);
        expect(getContext().readFrom).toBe('replica');
        expect(getContext().cellUuid).toBe(A);
        expect(readFromPrimary(() => getContext().readFrom)).toBe('primary');
        expect(getContext().readFrom).toBe('replica');
      });
      await expect(readFromReplica(() => Promise.reject(new Error('boom')))).rejects.toThrow('boom');
      expect(getContext().readFrom).toBe('primary');
    });
    expect(outer.readFrom).toBe('primary');
    expect(readFromReplica(() => tryGetContext()?.readFrom)).toBe('replica');
    expect(tryGetContext()).toBeUndefined();
    expect(() => readFromReplica('x' as never)).toThrow(InvalidArgumentError);
  });

  it('keeps 1,000 interleaved tasks each in their own readFrom mode', async () => {
    const seen = await Promise.all(
      Array.from({ length: 1000 }, (_, i) => {
        const run = i % 2 === 0 ? readFromReplica : readFromPrimary;
        return run(async () => {
          await sleep(i % 7);
          return getContext().readFrom === (i % 2 === 0 ? 'replica' : 'primary');
        });
      }),
    );
    expect(seen.filter((ok) => !ok)).toHaveLength(0);
  });
});

describe('context scope', () => {
  it('throws NoContextError from getContext outside any context', () => {
    expect(() => getContext()).toThrow(NoContextError);
    expect(tryGetContext()).toBeUndefined();
  });

  it('nests targetCell and restores each outer target', async () => {
    await runWithContext(new RequestContext(), async () => {
      expect(getContext().cellUuid).toBeNull();
      await targetCell(A, async () => {
        expect(getContext().cellUuid).toBe(A);
        await targetCell(B, async () => {
          await sleep(1);
          expect(getContext().cellUuid).toBe(B);
        });
        expect(getContext().cellUuid).toBe(A);
        await targetCell(null, async () => expect(getContext().cellUuid).toBeNull());
        expect(getContext().cellUuid).toBe(A);
      });
      expect(getContext().cellUuid).toBeNull();
    });
  });

  it('restores the outer cell when the callback throws', async () => {
    await targetCell(A, async () => {
      await expect(
        targetCell(B, async () => {
          await Promise.resolve();
          throw new Error('boom');
        }),
      ).rejects.toThrow('boom');
      expect(getContext().cellUuid).toBe(A);
      expect(() =>
        targetCell(B, () => {
          throw new Error('sync boom');
        }),
      ).toThrow('sync boom');
      expect(getContext().cellUuid).toBe(A);
    });
  });

  it('leaves the outer context object untouched', async () => {
    const outer = new RequestContext({ cell: A, projectId: 'p' });
    await runWithContext(outer, () => targetCell(B, async () => expect(getContext()).not.toBe(outer)));
    expect(outer.cellUuid).toBe(A);
  });

  it('creates a fresh context for targetCell outside any context', () => {
    const seen = targetCell(A, () => getContext().cellUuid);
    expect(seen).toBe(A);
    expect(tryGetContext()).toBeUndefined();
  });

  it('retargets the active context for good with setTargetCell, and untargets with null', async () => {
    const ctx = new RequestContext();
    await runWithContext(ctx, async () => {
      setTargetCell(ctx, { uuid: B, name: 'cell2' });
      await Promise.resolve();
      expect(getContext().dbConnection).toBe(B);
      expect(getContext().cellName).toBe('cell2');
      setTargetCell(ctx, null);
      expect(getContext().dbConnection).toBeNull();
    });
  });

  it('keeps 1,000 interleaved tasks each in their own target', async () => {
    const cells = [A, B, null];
    const results = await Promise.all(
      Array.from({ length: 1000 }, (_, i) =>
        targetCell(cells[i % 3]!, async () => {
          const seen: Array<string | null> = [];
          for (let step = 0; step < 5; step++) {
            await new Promise((r) => (step % 2 ? setImmediate(r) : setTimeout(r, i % 3)));
            seen.push(getContext().cellUuid);
          }
          return seen.every((s) => s === cells[i % 3]);
        }),
      ),
    );
    expect(results.every(Boolean)).toBe(true);
  });
});

describe('bindContext', () => {
  it('carries the context into an event listener fired from another context', async () => {
    const emitter = new EventEmitter();
    const seen: Array<string | null | undefined> = [];
    targetCell(A, () => emitter.on('tick', bindContext(() => seen.push(tryGetContext()?.cellUuid))));
    emitter.on('tick', () => seen.push(tryGetContext()?.cellUuid));
    await targetCell(B, async () => {
      emitter.emit('tick');
    });
    expect(seen).toEqual([A, B]);
  });

  it('runs a function bound outside any context outside any context', async () => {
    const fn = bindContext(() => tryGetContext());
    await targetCell(B, async () => {
      expect(fn()).toBeUndefined();
    });
  });
});
