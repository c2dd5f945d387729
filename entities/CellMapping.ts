import { inspect } from 'node:util';
import {
  Column,
  CreateDateColumn,
  Entity,
  Index,
  PrimaryGeneratedColumn,
  UpdateDateColumn,
} from 'typeorm';
import { redactUrl } from '../lib/connection-url';

/** The uuid Nova reserves for cell0, the cell of records that never reached a real cell. */
export const CELL0_UUID = '00000000-0000-0000-0000-000000000000';

/**
 * One cell: its name, uuid and database connection, stored in the API database.
 * `toJSON()` and `util.inspect` mask the password of `databaseConnection` and `transportUrl`.
 */
@Entity({ name: 'cell_mappings' })
export class CellMapping {
  @PrimaryGeneratedColumn({ type: 'integer' })
  id!: number;

  @Index({ unique: true })
  @Column({ type: 'uuid' })
  uuid!: string;

  @Index({ unique: true })
  @Column({ type: 'varchar', length: 255 })
  name!: string;

  /** A postgres:// URL; it carries a password, so never log or return it unmasked. */
  @Column({ name: 'database_connection', type: 'text' })
  databaseConnection!: string;

  @Column({ name: 'transport_url', type: 'text', nullable: true })
  transportUrl!: string | null;

  @Column({ type: 'boolean', default: false })
  disabled!: boolean;

  @CreateDateColumn({ name: 'created_at', type: 'timestamptz' })
  createdAt!: Date;

  @UpdateDateColumn({ name: 'updated_at', type: 'timestamptz' })
  updatedAt!: Date;

  /** True for cell0 (uuid `00000000-0000-0000-0000-000000000000`). */
  get isCell0(): boolean {
    return this.uuid === CELL0_UUID;
  }

  toJSON(): Record<string, unknown> {
    return {
      id: this.id,
      uuid: this.uuid,
      name: this.name,
      databaseConnection: this.databaseConnection === undefined ? undefined : redactUrl(this.databaseConnection),
      transportUrl: this.transportUrl ? redactUrl(this.transportUrl) : this.transportUrl,
      disabled: this.disabled,
      createdAt: this.createdAt,
      updatedAt: this.updatedAt,
    };
  }

  [inspect.custom](): string {
    return `CellMapping ${inspect(this.toJSON())}`;
  }
}
