import { In } from 'typeorm';
import { RequestContext, runWithContext, targetCell, type ReadDeleted } from '../../lib';
import { createMixedFleet, Gadget, gadgetFor, type MixedFleet } from '../support/mixed-fleet';
import { describeMysql } from '../support/mysql';

describeMysql('MariaDB cells in the registry', () => {
  describe('readDeleted', () => {
    let fleet: MixedFleet;
    const live = gadgetFor('', 'live');
    const gone = gadgetFor('', 'gone');

    beforeAll(async () => {
      fleet = await createMixedFleet('my_rd', { pgCells: 0, mariadbCells: 1 });
      const cell = fleet.mariadb[0]!.mapping;
      const gadgets = fleet.lib.getRepository(Gadget);
      await targetCell(cell, async () => {
        await gadgets.insert([
          { ...live, intendedCell: cell.uuid },
          { ...gone, intendedCell: cell.uuid },
        ]);
        await gadgets.softDelete({ uuid: gone.uuid });
      });
    }, 60_000);
    afterAll(async () => {
      await fleet?.destroy();
    }, 60_000);

    it.each([
      ['no', ['live']],
      ['yes', ['gone', 'live']],
      ['only', ['gone']],
    ] as Array<[ReadDeleted, string[]]>)("applies readDeleted '%s' to finds, counts and builders", async (mode, expected) => {
      const gadgets = fleet.lib.getRepository(Gadget);
      const both = { uuid: In([live.uuid, gone.uuid]) };
      await runWithContext(new RequestContext({ readDeleted: mode, cell: fleet.mariadb[0]!.mapping }), async () => {
        expect((await gadgets.findBy(both)).map((g) => g.name).sort()).toEqual(expected);
        expect(await gadgets.countBy(both)).toBe(expected.length);
        expect(await gadgets.existsBy({ uuid: gone.uuid })).toBe(expected.includes('gone'));
        const built = await gadgets.createQueryBuilder('g').where('g.uuid IN (:...ids)', { ids: [live.uuid, gone.uuid] }).getMany();
        expect(built.map((g) => g.name).sort()).toEqual(expected);
      });
    });

    it('keeps the soft-deleted row in the MariaDB database', async () => {
      const rows = await fleet.mariadb[0]!.gadgets();
      expect(rows.find((r) => r.uuid === gone.uuid)?.deleted_at).toBeInstanceOf(Date);
    });
  });

  describe('single flight', () => {
    let fleet: MixedFleet;
    beforeAll(async () => {
      fleet = await createMixedFleet('my_flight', { pgCells: 0, mariadbCells: 1 });
    }, 60_000);
    afterAll(async () => {
      await fleet?.destroy();
    }, 60_000);

    it('opens one DataSource for 100 concurrent first calls to a never-opened MariaDB cell', async () => {
      const cell = fleet.mariadb[0]!.mapping;
      const before = fleet.lib.stats();
      const gadgets = fleet.lib.getRepository(Gadget);
      const counts = await Promise.all(Array.from({ length: 100 }, () => targetCell(cell, () => gadgets.count())));
      expect(counts).toEqual(Array.from({ length: 100 }, () => 0));
      const after = fleet.lib.stats();
      expect(after.opened - before.opened).toBe(1);
      expect(after.failedOpens).toBe(before.failedOpens);
      expect(after.open).toBe(1);
    }, 30_000);
  });

  describe('eviction with drain', () => {
    let fleet: MixedFleet;
    beforeAll(async () => {
      fleet = await createMixedFleet('my_evict', { pgCells: 1, mariadbCells: 1, cells: { maxOpenCells: 1, acquireTimeoutMs: 10_000 } });
    }, 60_000);
    afterAll(async () => {
      await fleet?.destroy();
    }, 60_000);

    it('alternates a PostgreSQL and a MariaDB cell under one open slot: 50 interleaved calls, 0 errors, each row in its cell', async () => {
      const gadgets = fleet.lib.getRepository(Gadget);
      const written = new Map(fleet.cells.map((c) => [c.mapping.uuid, [] as string[]]));
      const settled = await Promise.allSettled(
        Array.from({ length: 50 }, (_, i) => {
          const cell = fleet.cells[i % 2]!.mapping;
          return targetCell(cell, async () => {
            const row = gadgetFor(cell.uuid);
            if (i % 5 === 0) {
              await fleet.lib.transaction(async () => {
                await gadgets.insert(row);
                await gadgets.countBy({ intendedCell: cell.uuid });
              });
            } else {
              await gadgets.insert(row);
            }
            written.get(cell.uuid)!.push(row.uuid);
          });
        }),
      );
      expect(settled.filter((s) => s.status === 'rejected').map((s) => String((s as PromiseRejectedResult).reason))).toEqual([]);
      const stats = fleet.lib.stats();
      expect(stats.evictions).toBeGreaterThan(0);
      expect(stats.open + stats.draining + stats.opening).toBeLessThanOrEqual(1);
      for (const cell of fleet.cells) {
        const rows = await cell.gadgets();
        expect(rows.filter((r) => r.intended_cell !== cell.mapping.uuid)).toEqual([]);
        expect(rows.map((r) => r.uuid).sort()).toEqual([...written.get(cell.mapping.uuid)!].sort());
        expect(rows).toHaveLength(25);
      }
    }, 60_000);
  });
});
