import type { ValueTransformer } from 'typeorm';

/**
 * A value kept as JSON in a `text` column, which reads the same on PostgreSQL, MySQL and MariaDB
 * (MySQL's JSON type and PostgreSQL's jsonb differ in what they give back). @internal
 */
export const JSON_TEXT: ValueTransformer = {
  to: (value: unknown) => (value === undefined ? value : JSON.stringify(value)),
  from: (value: string | null) => (value === null ? null : (JSON.parse(value) as unknown)),
};
