import { Column, CreateDateColumn, DataSource, DeleteDateColumn, Entity, PrimaryColumn } from 'typeorm';

/** An entity whose column types every engine has: the cell entity of the MySQL specs. */
@Entity({ name: 'gadgets' })
export class Gadget {
  @PrimaryColumn({ type: 'varchar', length: 36 })
  uuid!: string;

  @Column({ type: 'varchar', length: 255 })
  name!: string;

  @Column({ name: 'intended_cell', type: 'varchar', length: 64 })
  intendedCell!: string;

  @CreateDateColumn({ name: 'created_at' })
  createdAt!: Date;

  @DeleteDateColumn({ name: 'deleted_at', nullable: true })
  deletedAt!: Date | null;
}

/** Creates the `gadgets` table in the PostgreSQL, MySQL or MariaDB database `url` names. */
export async function createGadgets(url: string): Promise<void> {
  const ds = new DataSource({ url, type: url.startsWith('postgres') ? 'postgres' : 'mysql', entities: [Gadget], synchronize: true } as never);
  await ds.initialize();
  await ds.destroy();
}
