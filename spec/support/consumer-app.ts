// A user's program, compiled and run by spec/package.spec.ts in a project that installed the
// packed tarball, once as CommonJS and once as ESM. It imports only the public entry point, so in
// this repository it type-checks against lib/index.ts. It prints one JSON line: the spec's evidence.
import 'reflect-metadata';
import { Column, Entity, PrimaryGeneratedColumn } from 'typeorm';
import {
  Cells,
  NoTargetCellError,
  RequestContext,
  getContext,
  runWithContext,
  targetCell,
} from 'typeorm-cells';

@Entity()
class Note {
  @PrimaryGeneratedColumn()
  id!: number;

  @Column()
  text!: string;
}

function env(name: string): string {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set.`);
  return value;
}

async function main(): Promise<void> {
  const cells = new Cells({
    api: env('API_DATABASE_URL'),
    entities: [Note],
    migrateApi: true,
    cellDataSourceOptions: { synchronize: true },
  });
  await cells.initialize();
  try {
    const a = await cells.mappings.createCell({ name: 'a', databaseConnection: env('CELL_A_URL') });
    const b = await cells.mappings.createCell({ name: 'b', databaseConnection: env('CELL_B_URL') });
    const notes = cells.getRepository(Note);
    const context = new RequestContext({ requestId: 'consumer-1', projectId: 'p1' });
    const report = await runWithContext(context, async () => {
      await targetCell(a, () => notes.save(notes.create({ text: 'in a' })));
      await targetCell(b, () => notes.save([{ text: 'in b' }, { text: 'also in b' }]));
      const untargeted = await notes.count().then(
        (count) => `counted ${count}`,
        (error: unknown) => (error instanceof NoTargetCellError ? error.code : String(error)),
      );
      const texts = (rows: Note[]): string[] => rows.map((row) => row.text);
      return {
        requestId: getContext().requestId,
        a: texts(await targetCell(a, () => notes.find({ order: { id: 'ASC' } }))),
        b: texts(await targetCell(b.uuid, () => notes.find({ order: { id: 'ASC' } }))),
        untargeted,
      };
    });
    console.log(JSON.stringify(report));
  } finally {
    await cells.destroy();
  }
}

main().catch((error: unknown) => {
  console.error(error);
  process.exitCode = 1;
});
