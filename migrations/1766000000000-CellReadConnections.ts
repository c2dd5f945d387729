import type { MigrationInterface, QueryRunner } from 'typeorm';
import { onMysql } from './engine';

/**
 * Adds `cell_mappings.read_connections`: a cell's reader connections (read replicas), a JSON array
 * of URLs in a nullable text column. Existing cells get NULL: no readers, reads stay on the primary.
 */
export class CellReadConnections1766000000000 implements MigrationInterface {
  name = 'CellReadConnections1766000000000';

  async up(queryRunner: QueryRunner): Promise<void> {
    if (onMysql(queryRunner)) await queryRunner.query('ALTER TABLE `cell_mappings` ADD COLUMN `read_connections` TEXT NULL');
    else await queryRunner.query(`ALTER TABLE "cell_mappings" ADD COLUMN "read_connections" text`);
  }

  async down(queryRunner: QueryRunner): Promise<void> {
    if (onMysql(queryRunner)) await queryRunner.query('ALTER TABLE `cell_mappings` DROP COLUMN `read_connections`');
    else await queryRunner.query(`ALTER TABLE "cell_mappings" DROP COLUMN "read_connections"`);
  }
}
