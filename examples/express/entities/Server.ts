import { Column, CreateDateColumn, DeleteDateColumn, Entity, Index, PrimaryColumn } from 'typeorm';

/** Longest server name the API accepts (the column's length). */
export const MAX_SERVER_NAME = 255;

/** A server record of the example app; it lives in one cell database, named by its InstanceMapping. */
@Entity({ name: 'servers' })
@Index('ix_servers_created_at_uuid', ['createdAt', 'uuid'])
export class Server {
  @PrimaryColumn({ type: 'uuid' })
  uuid!: string;

  @Column({ type: 'varchar', length: MAX_SERVER_NAME })
  name!: string;

  @Column({ name: 'project_id', type: 'varchar', length: 255 })
  projectId!: string;

  @Column({ type: 'varchar', length: 16, default: 'ACTIVE' })
  status!: string;

  /**
   * Millisecond precision, so a JavaScript Date round-trips exactly and can serve as a paging marker.
   * No column type: the same entity runs on PostgreSQL cells (the column is `timestamptz(3)`) and
   * MariaDB cells (`DATETIME(3)`), and TypeORM has no `timestamptz` on MySQL.
   */
  @CreateDateColumn({ name: 'created_at', precision: 3 })
  createdAt!: Date;

  @DeleteDateColumn({ name: 'deleted_at', precision: 3 })
  deletedAt!: Date | null;
}
