import type { MigrationInterface, QueryRunner } from 'typeorm';
import { onMysql } from './engine';

/**
 * Replaces `cell_mappings.disabled` (a boolean) by `cell_mappings.state`: `'disabled'` where the flag
 * was set, `'active'` elsewhere; a CHECK constraint keeps the column to the four states. Down
 * converts back: `'disabled'` sets the flag, every other state (read-only and draining included,
 * which the old schema cannot say) clears it.
 */
export class CellStates1768000000000 implements MigrationInterface {
  name = 'CellStates1768000000000';

  async up(queryRunner: QueryRunner): Promise<void> {
    const q = quoteOf(queryRunner);
    const table = `${q}cell_mappings${q}`;
    await queryRunner.query(`ALTER TABLE ${table} ADD COLUMN ${q}state${q} varchar(16) NOT NULL DEFAULT 'active'`);
    // On MySQL the flag is TINYINT(1): compared with 0 rather than read as a boolean.
    const isDisabled = onMysql(queryRunner) ? `${q}disabled${q} <> 0` : `${q}disabled${q}`;
    await queryRunner.query(`UPDATE ${table} SET ${q}state${q} = CASE WHEN ${isDisabled} THEN 'disabled' ELSE 'active' END`);
    await queryRunner.query(
      `ALTER TABLE ${table} ADD CONSTRAINT ${q}ck_cell_mappings_state${q} ` +
        `CHECK (${q}state${q} IN ('active', 'read-only', 'draining', 'disabled'))`,
    );
    await queryRunner.query(`ALTER TABLE ${table} DROP COLUMN ${q}disabled${q}`);
  }

  async down(queryRunner: QueryRunner): Promise<void> {
    const q = quoteOf(queryRunner);
    const table = `${q}cell_mappings${q}`;
    const flag = onMysql(queryRunner) ? 'TINYINT(1) NOT NULL DEFAULT 0' : 'boolean NOT NULL DEFAULT false';
    await queryRunner.query(`ALTER TABLE ${table} ADD COLUMN ${q}disabled${q} ${flag}`);
    await queryRunner.query(`UPDATE ${table} SET ${q}disabled${q} = (${q}state${q} = 'disabled')`);
    // MariaDB drops a CHECK constraint with DROP CONSTRAINT, as PostgreSQL and MySQL 8.0.19+ do.
    await queryRunner.query(`ALTER TABLE ${table} DROP CONSTRAINT ${q}ck_cell_mappings_state${q}`);
    await queryRunner.query(`ALTER TABLE ${table} DROP COLUMN ${q}state${q}`);
  }
}

function quoteOf(queryRunner: QueryRunner): string {
  return onMysql(queryRunner) ? '`' : '"';
}
