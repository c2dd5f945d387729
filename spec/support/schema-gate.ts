import type { MigrationInterface, QueryRunner } from 'typeorm';
import { createProject, type CliProject } from './cli';

/**
 * The second cell migration of the schema-gate specs: a side table `widget_notes` that records,
 * by the server's clock, when the migration ran (to time how soon processes see it).
 */
export class AddWidgetNotes1769500000000 implements MigrationInterface {
  name = 'AddWidgetNotes1769500000000';

  async up(queryRunner: QueryRunner): Promise<void> {
    await queryRunner.query(`CREATE TABLE "widget_notes" ("note" text NOT NULL, "at" timestamptz NOT NULL DEFAULT clock_timestamp())`);
    await queryRunner.query(`INSERT INTO "widget_notes" ("note") VALUES ('migrated')`);
  }

  async down(queryRunner: QueryRunner): Promise<void> {
    await queryRunner.query(`DROP TABLE "widget_notes"`);
  }
}

/** Undoes AddWidgetNotes1769500000000 in the cell database at `url` by hand: the cell is one migration behind. */
export const UNDO_NOTES = [`DROP TABLE "widget_notes"`, `DELETE FROM "migrations" WHERE "name" = 'AddWidgetNotes1769500000000'`];

/**
 * A project whose CommonJS `cells.config.js` names the API database `apiUrl` and the two cell
 * migrations of the schema-gate specs, in JavaScript (the widgets table's never runs: every cell
 * has it), as the application's `migrations` option names them.
 */
export function createGateProject(apiUrl: string): Promise<CliProject> {
  const config = `
class CreateWidgets1764072100000 {
  name = 'CreateWidgets1764072100000';
  async up() { throw new Error('every cell of the spec has the widgets table'); }
  async down() {}
}
class AddWidgetNotes1769500000000 {
  name = 'AddWidgetNotes1769500000000';
  async up(q) {
    await q.query('CREATE TABLE "widget_notes" ("note" text NOT NULL, "at" timestamptz NOT NULL DEFAULT clock_timestamp())');
    await q.query("INSERT INTO widget_notes (note) VALUES ('migrated')");
  }
  async down(q) { await q.query('DROP TABLE "widget_notes"'); }
}
module.exports = {
  api: ${JSON.stringify(apiUrl)},
  entities: [],
  migrations: [CreateWidgets1764072100000, AddWidgetNotes1769500000000],
  connectTimeoutMs: 3000,
};
`;
  return createProject({ 'cells.config.js': config });
}
