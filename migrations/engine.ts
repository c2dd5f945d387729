import type { QueryRunner } from 'typeorm';

/**
 * True when a migration runs on MySQL or MariaDB, whose DDL differs from PostgreSQL's; every API
 * migration branches on it, so `cells_api_migrations` keeps one history of one set of names.
 */
export function onMysql(queryRunner: QueryRunner): boolean {
  const { type } = queryRunner.connection.driver.options;
  return type === 'mysql' || type === 'mariadb';
}

/** Table options of every API table on MySQL and MariaDB: transactional, full Unicode. */
export const MYSQL_TABLE_OPTIONS = 'ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin';
