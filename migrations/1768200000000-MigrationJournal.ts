import type { MigrationInterface, QueryRunner } from 'typeorm';
import { MYSQL_TABLE_OPTIONS, onMysql } from './engine';

/**
 * Adds the journal of fleet migrations (`db migrate --all`): `cell_migration_runs`, one row per
 * run, and `cell_migration_run_cells`, one row per cell of a run (entities/MigrationRun.ts,
 * entities/MigrationRunCell.ts). Cells are named by uuid with no foreign key, so a run's record
 * outlives a deleted cell; no connection string is stored.
 */
export class MigrationJournal1768200000000 implements MigrationInterface {
  name = 'MigrationJournal1768200000000';

  async up(queryRunner: QueryRunner): Promise<void> {
    if (onMysql(queryRunner)) return upMysql(queryRunner);
    await queryRunner.query(`
      CREATE TABLE "cell_migration_runs" (
        "id" SERIAL PRIMARY KEY,
        "state" varchar(16) NOT NULL,
        "options" text NOT NULL,
        "started_at" timestamptz NOT NULL DEFAULT now(),
        "ended_at" timestamptz
      )`);
    await queryRunner.query(`
      CREATE TABLE "cell_migration_run_cells" (
        "id" SERIAL PRIMARY KEY,
        "run_id" integer NOT NULL REFERENCES "cell_migration_runs" ("id") ON DELETE CASCADE,
        "cell_uuid" uuid NOT NULL,
        "cell_name" varchar(255) NOT NULL,
        "position" integer NOT NULL,
        "wave" integer NOT NULL,
        "state" varchar(16) NOT NULL,
        "attempts" integer NOT NULL DEFAULT 0,
        "applied" text NOT NULL,
        "error" text,
        "started_at" timestamptz,
        "ended_at" timestamptz,
        CONSTRAINT "uq_cell_migration_run_cells_run_cell" UNIQUE ("run_id", "cell_uuid")
      )`);
    await queryRunner.query(`CREATE INDEX "ix_cell_migration_run_cells_cell_uuid" ON "cell_migration_run_cells" ("cell_uuid")`);
  }

  async down(queryRunner: QueryRunner): Promise<void> {
    const q = onMysql(queryRunner) ? '`' : '"';
    for (const table of ['cell_migration_run_cells', 'cell_migration_runs']) {
      await queryRunner.query(`DROP TABLE ${q}${table}${q}`);
    }
  }
}

/** The same tables on MySQL and MariaDB: uuids as ASCII CHAR(36), dates as DATETIME(6). */
async function upMysql(queryRunner: QueryRunner): Promise<void> {
  await queryRunner.query(`
    CREATE TABLE \`cell_migration_runs\` (
      \`id\` INT NOT NULL AUTO_INCREMENT PRIMARY KEY,
      \`state\` VARCHAR(16) NOT NULL,
      \`options\` TEXT NOT NULL,
      \`started_at\` DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
      \`ended_at\` DATETIME(6) NULL
    ) ${MYSQL_TABLE_OPTIONS}`);
  await queryRunner.query(`
    CREATE TABLE \`cell_migration_run_cells\` (
      \`id\` INT NOT NULL AUTO_INCREMENT PRIMARY KEY,
      \`run_id\` INT NOT NULL,
      \`cell_uuid\` CHAR(36) CHARACTER SET ascii NOT NULL,
      \`cell_name\` VARCHAR(255) NOT NULL,
      \`position\` INT NOT NULL,
      \`wave\` INT NOT NULL,
      \`state\` VARCHAR(16) NOT NULL,
      \`attempts\` INT NOT NULL DEFAULT 0,
      \`applied\` TEXT NOT NULL,
      \`error\` TEXT NULL,
      \`started_at\` DATETIME(6) NULL,
      \`ended_at\` DATETIME(6) NULL,
      CONSTRAINT \`uq_cell_migration_run_cells_run_cell\` UNIQUE (\`run_id\`, \`cell_uuid\`),
      INDEX \`ix_cell_migration_run_cells_cell_uuid\` (\`cell_uuid\`),
      CONSTRAINT \`fk_cell_migration_run_cells_run_id\` FOREIGN KEY (\`run_id\`) REFERENCES \`cell_migration_runs\` (\`id\`) ON DELETE CASCADE
    ) ${MYSQL_TABLE_OPTIONS}`);
}
