import 'reflect-metadata';
import { randomUUID } from 'node:crypto';
import { Column, CreateDateColumn, DataSource, DeleteDateColumn, Entity, PrimaryColumn } from 'typeorm';

/** An entity whose column types both engines have (`timestamptz`, say, is refused by TypeORM on MySQL). */
@Entity({ name: 'gadgets' })
export class Gadget {
  @PrimaryColumn({ type: 'varchar', length: 36 })
  uuid!: string;

  @Column({ type: 'varchar', length: 255 })
  name!: string;

  @Column({ name: 'intended_cell', type: 'varchar', length: 64 })
  intendedCell!: string;

  @Column({ type: 'int', default: 0 })
  size!: number;

  @CreateDateColumn({ name: 'created_at' })
  createdAt!: Date;

  @DeleteDateColumn({ name: 'deleted_at', nullable: true })
  deletedAt!: Date | null;
}

/** A gadget row meant for `cellUuid`. */
export function gadgetFor(cellUuid: string, name = `g-${randomUUID().slice(0, 8)}`): Pick<Gadget, 'uuid' | 'name' | 'intendedCell'> {
  return { uuid: randomUUID(), name, intendedCell: cellUuid };
}

/** Creates the gadgets table in the database at `url` (PostgreSQL, MySQL or MariaDB). */
export async function createGadgetTable(url: string): Promise<void> {
  const ds = new DataSource({ url, type: url.startsWith('postgres') ? 'postgres' : 'mysql', entities: [Gadget], synchronize: true } as never);
  await ds.initialize();
  await ds.destroy();
}

