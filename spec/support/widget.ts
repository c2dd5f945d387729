import {
  Column,
  CreateDateColumn,
  DeleteDateColumn,
  Entity,
  PrimaryColumn,
  type MigrationInterface,
  type QueryRunner,
} from 'typeorm';

/** The cell-database entity of the tests: each row records the cell it was meant for. */
@Entity({ name: 'widgets' })
export class Widget {
  @PrimaryColumn({ type: 'uuid' })
  uuid!: string;

  @Column({ type: 'varchar', length: 255 })
  name!: string;

  /** The cell the writer targeted; a row whose value differs from its database's cell is misrouted. */
  @Column({ name: 'intended_cell', type: 'varchar', length: 64 })
  intendedCell!: string;

  @Column({ type: 'integer', default: 0 })
  size!: number;

  @CreateDateColumn({ name: 'created_at', type: 'timestamptz' })
  createdAt!: Date;

  @DeleteDateColumn({ name: 'deleted_at', type: 'timestamptz' })
  deletedAt!: Date | null;
}

/** Creates the widgets table in a cell database. */
export class CreateWidgets1764072100000 implements MigrationInterface {
  name = 'CreateWidgets1764072100000';

  async up(queryRunner: QueryRunner): Promise<void> {
    await queryRunner.query(`
      CREATE TABLE "widgets" (
        "uuid" uuid PRIMARY KEY,
        "name" varchar(255) NOT NULL,
        "intended_cell" varchar(64) NOT NULL,
        "size" integer NOT NULL DEFAULT 0,
        "created_at" timestamptz NOT NULL DEFAULT now(),
        "deleted_at" timestamptz
      )`);
  }

  async down(queryRunner: QueryRunner): Promise<void> {
    await queryRunner.query(`DROP TABLE "widgets"`);
  }
}
