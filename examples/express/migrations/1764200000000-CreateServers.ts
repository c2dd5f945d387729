import type { MigrationInterface, QueryRunner } from 'typeorm';

/** Creates the servers table in a cell database (PostgreSQL, or MySQL/MariaDB). */
export class CreateServers1764200000000 implements MigrationInterface {
  name = 'CreateServers1764200000000';

  async up(queryRunner: QueryRunner): Promise<void> {
    if (queryRunner.connection.driver.options.type !== 'postgres') {
      await queryRunner.query(`
        CREATE TABLE \`servers\` (
          \`uuid\` char(36) NOT NULL PRIMARY KEY,
          \`name\` varchar(255) NOT NULL,
          \`project_id\` varchar(255) NOT NULL,
          \`status\` varchar(16) NOT NULL DEFAULT 'ACTIVE',
          \`created_at\` datetime(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
          \`deleted_at\` datetime(3) NULL,
          INDEX \`ix_servers_created_at_uuid\` (\`created_at\`, \`uuid\`)
        ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4`);
      return;
    }
    await queryRunner.query(`
      CREATE TABLE "servers" (
        "uuid" uuid PRIMARY KEY,
        "name" varchar(255) NOT NULL,
        "project_id" varchar(255) NOT NULL,
        "status" varchar(16) NOT NULL DEFAULT 'ACTIVE',
        "created_at" timestamptz(3) NOT NULL DEFAULT now(),
        "deleted_at" timestamptz(3)
      )`);
    // The listing pages newest first by (created_at, uuid) in every cell.
    await queryRunner.query(`CREATE INDEX "ix_servers_created_at_uuid" ON "servers" ("created_at", "uuid")`);
  }

  async down(queryRunner: QueryRunner): Promise<void> {
    await queryRunner.query(queryRunner.connection.driver.options.type === 'postgres' ? `DROP TABLE "servers"` : 'DROP TABLE `servers`');
  }
}
