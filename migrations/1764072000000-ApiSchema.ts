import type { MigrationInterface, QueryRunner } from 'typeorm';
import { MYSQL_TABLE_OPTIONS, onMysql } from './engine';

/** Creates the API database schema: cell, instance and host mappings. */
export class ApiSchema1764072000000 implements MigrationInterface {
  name = 'ApiSchema1764072000000';

  async up(queryRunner: QueryRunner): Promise<void> {
    if (onMysql(queryRunner)) return upMysql(queryRunner);
    await queryRunner.query(`
      CREATE TABLE "cell_mappings" (
        "id" SERIAL PRIMARY KEY,
        "uuid" uuid NOT NULL,
        "name" varchar(255) NOT NULL,
        "database_connection" text NOT NULL,
        "transport_url" text,
        "disabled" boolean NOT NULL DEFAULT false,
        "created_at" timestamptz NOT NULL DEFAULT now(),
        "updated_at" timestamptz NOT NULL DEFAULT now(),
        CONSTRAINT "uq_cell_mappings_uuid" UNIQUE ("uuid"),
        CONSTRAINT "uq_cell_mappings_name" UNIQUE ("name")
      )`);
    await queryRunner.query(`
      CREATE TABLE "instance_mappings" (
        "id" SERIAL PRIMARY KEY,
        "instance_uuid" uuid NOT NULL,
        "cell_id" integer REFERENCES "cell_mappings" ("id") ON DELETE RESTRICT,
        "project_id" varchar(255) NOT NULL,
        "user_id" varchar(255),
        "queued_for_delete" boolean NOT NULL DEFAULT false,
        "created_at" timestamptz NOT NULL DEFAULT now(),
        "updated_at" timestamptz NOT NULL DEFAULT now(),
        CONSTRAINT "uq_instance_mappings_instance_uuid" UNIQUE ("instance_uuid")
      )`);
    await queryRunner.query(`CREATE INDEX "ix_instance_mappings_cell_id" ON "instance_mappings" ("cell_id")`);
    await queryRunner.query(`CREATE INDEX "ix_instance_mappings_project_id" ON "instance_mappings" ("project_id")`);
    await queryRunner.query(`
      CREATE TABLE "host_mappings" (
        "id" SERIAL PRIMARY KEY,
        "host" varchar(255) NOT NULL,
        "cell_id" integer NOT NULL REFERENCES "cell_mappings" ("id") ON DELETE RESTRICT,
        "created_at" timestamptz NOT NULL DEFAULT now(),
        "updated_at" timestamptz NOT NULL DEFAULT now(),
        CONSTRAINT "uq_host_mappings_host" UNIQUE ("host")
      )`);
    await queryRunner.query(`CREATE INDEX "ix_host_mappings_cell_id" ON "host_mappings" ("cell_id")`);
  }

  async down(queryRunner: QueryRunner): Promise<void> {
    const q = onMysql(queryRunner) ? '`' : '"';
    for (const table of ['host_mappings', 'instance_mappings', 'cell_mappings']) {
      await queryRunner.query(`DROP TABLE ${q}${table}${q}`);
    }
  }
}

/**
 * The same schema on MySQL and MariaDB: uuids as CHAR(36) (ASCII, so an index entry is 36 bytes),
 * dates as DATETIME(6) (microseconds, as timestamptz keeps), booleans as TINYINT(1), InnoDB foreign keys.
 */
async function upMysql(queryRunner: QueryRunner): Promise<void> {
  const now = 'DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6)';
  const updated = `${now} ON UPDATE CURRENT_TIMESTAMP(6)`;
  await queryRunner.query(`
    CREATE TABLE \`cell_mappings\` (
      \`id\` INT NOT NULL AUTO_INCREMENT PRIMARY KEY,
      \`uuid\` CHAR(36) CHARACTER SET ascii NOT NULL,
      \`name\` VARCHAR(255) NOT NULL,
      \`database_connection\` TEXT NOT NULL,
      \`transport_url\` TEXT NULL,
      \`disabled\` TINYINT(1) NOT NULL DEFAULT 0,
      \`created_at\` ${now},
      \`updated_at\` ${updated},
      CONSTRAINT \`uq_cell_mappings_uuid\` UNIQUE (\`uuid\`),
      CONSTRAINT \`uq_cell_mappings_name\` UNIQUE (\`name\`)
    ) ${MYSQL_TABLE_OPTIONS}`);
  await queryRunner.query(`
    CREATE TABLE \`instance_mappings\` (
      \`id\` INT NOT NULL AUTO_INCREMENT PRIMARY KEY,
      \`instance_uuid\` CHAR(36) CHARACTER SET ascii NOT NULL,
      \`cell_id\` INT NULL,
      \`project_id\` VARCHAR(255) NOT NULL,
      \`user_id\` VARCHAR(255) NULL,
      \`queued_for_delete\` TINYINT(1) NOT NULL DEFAULT 0,
      \`created_at\` ${now},
      \`updated_at\` ${updated},
      CONSTRAINT \`uq_instance_mappings_instance_uuid\` UNIQUE (\`instance_uuid\`),
      INDEX \`ix_instance_mappings_cell_id\` (\`cell_id\`),
      INDEX \`ix_instance_mappings_project_id\` (\`project_id\`),
      CONSTRAINT \`fk_instance_mappings_cell_id\` FOREIGN KEY (\`cell_id\`) REFERENCES \`cell_mappings\` (\`id\`) ON DELETE RESTRICT
    ) ${MYSQL_TABLE_OPTIONS}`);
  await queryRunner.query(`
    CREATE TABLE \`host_mappings\` (
      \`id\` INT NOT NULL AUTO_INCREMENT PRIMARY KEY,
      \`host\` VARCHAR(255) NOT NULL,
      \`cell_id\` INT NOT NULL,
      \`created_at\` ${now},
      \`updated_at\` ${updated},
      CONSTRAINT \`uq_host_mappings_host\` UNIQUE (\`host\`),
      INDEX \`ix_host_mappings_cell_id\` (\`cell_id\`),
      CONSTRAINT \`fk_host_mappings_cell_id\` FOREIGN KEY (\`cell_id\`) REFERENCES \`cell_mappings\` (\`id\`) ON DELETE RESTRICT
    ) ${MYSQL_TABLE_OPTIONS}`);
}
