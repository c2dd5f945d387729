import type { MigrationInterface, QueryRunner } from 'typeorm';
import { MYSQL_TABLE_OPTIONS, onMysql } from './engine';

/**
 * Adds `cell_mapping_changes` on MySQL and MariaDB, which have no LISTEN/NOTIFY: each mapping write
 * inserts its change (uuids and names, never a connection string) in its own transaction, and every
 * process polls the table (lib/mapping-change-log.ts). Old rows are pruned by the pollers, so the
 * `created_at` index serves the prune. Nothing on PostgreSQL, where NOTIFY carries the changes.
 */
export class MappingChangeLog1767000000000 implements MigrationInterface {
  name = 'MappingChangeLog1767000000000';

  async up(queryRunner: QueryRunner): Promise<void> {
    if (!onMysql(queryRunner)) return;
    await queryRunner.query(`
      CREATE TABLE \`cell_mapping_changes\` (
        \`id\` BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
        \`payload\` TEXT NOT NULL,
        \`created_at\` DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
        INDEX \`ix_cell_mapping_changes_created_at\` (\`created_at\`)
      ) ${MYSQL_TABLE_OPTIONS}`);
  }

  async down(queryRunner: QueryRunner): Promise<void> {
    if (onMysql(queryRunner)) await queryRunner.query('DROP TABLE `cell_mapping_changes`');
  }
}
