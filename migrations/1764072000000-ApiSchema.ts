import type { MigrationInterface, QueryRunner } from 'typeorm';

/** Creates the API database schema: cell, instance and host mappings. */
export class ApiSchema1764072000000 implements MigrationInterface {
  name = 'ApiSchema1764072000000';

  async up(queryRunner: QueryRunner): Promise<void> {
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
    await queryRunner.query(`DROP TABLE "host_mappings"`);
    await queryRunner.query(`DROP TABLE "instance_mappings"`);
    await queryRunner.query(`DROP TABLE "cell_mappings"`);
  }
}
