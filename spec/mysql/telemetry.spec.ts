import { SpanKind } from '@opentelemetry/api';
import { targetCell } from '../../lib';
import { createMixedFleet, Gadget, type MixedFleet } from '../support/mixed-fleet';
import { describeMysql } from '../support/mysql';
import { createTestSdk, enableContext, pointsOf, type TestSdk } from '../support/telemetry';

let sdk: TestSdk;
let disableContext: () => void;
let fleet: MixedFleet;

describeMysql('telemetry of a MariaDB cell', () => {
  beforeAll(async () => {
    disableContext = enableContext();
    sdk = createTestSdk();
    fleet = await createMixedFleet('otel_my', {
      pgCells: 0,
      mariadbCells: 1,
      cells: { telemetry: { tracerProvider: sdk.tracerProvider, meterProvider: sdk.meterProvider } },
    });
  });
  afterAll(async () => {
    await fleet?.destroy();
    await sdk?.shutdown();
    disableContext?.();
  });

  it('names the engine, database and server of its spans, and the ER_ code of a failed statement', async () => {
    const cell = fleet.mariadb[0]!;
    const gadgets = fleet.lib.getRepository(Gadget);
    await targetCell(cell.mapping, () => gadgets.count());
    await expect(targetCell(cell.mapping, () => gadgets.query('SELECT * FROM no_such_table'))).rejects.toThrow();
    const [count, failed] = sdk.spans().filter((s) => s.kind === SpanKind.CLIENT);
    expect(count!.name).toBe('count gadgets');
    expect(count!.attributes).toMatchObject({
      'db.system.name': 'mariadb',
      'db.namespace': cell.db.name,
      'server.port': 3306,
      'typeorm_cells.cell.uuid': cell.mapping.uuid,
    });
    expect(failed!.attributes).toMatchObject({ 'db.response.status_code': 'ER_NO_SUCH_TABLE', 'error.type': 'QueryFailedError' });
    const waits = pointsOf((await sdk.metrics()).get('db.client.connection.wait_time'));
    expect(waits.map((p) => p.attributes['db.client.connection.pool.name'])).toContain(cell.mapping.uuid);
  });
});
