import {
  Column,
  CreateDateColumn,
  Entity,
  Index,
  JoinColumn,
  ManyToOne,
  PrimaryGeneratedColumn,
  UpdateDateColumn,
} from 'typeorm';
import { CellMapping } from './CellMapping';

/** Which cell holds an instance (a record of the cell databases), stored in the API database. */
@Entity({ name: 'instance_mappings' })
export class InstanceMapping {
  @PrimaryGeneratedColumn({ type: 'integer' })
  id!: number;

  @Index({ unique: true })
  @Column({ name: 'instance_uuid', type: 'varchar', length: 36 })
  instanceUuid!: string;

  /** Null while the instance is not yet placed in a cell. */
  @ManyToOne(() => CellMapping, { nullable: true, onDelete: 'RESTRICT' })
  @JoinColumn({ name: 'cell_id' })
  cell!: CellMapping | null;

  @Index()
  @Column({ name: 'cell_id', type: 'integer', nullable: true })
  cellId!: number | null;

  @Index()
  @Column({ name: 'project_id', type: 'varchar', length: 255 })
  projectId!: string;

  @Column({ name: 'user_id', type: 'varchar', length: 255, nullable: true })
  userId!: string | null;

  @Column({ name: 'queued_for_delete', type: 'boolean', default: false })
  queuedForDelete!: boolean;

  @CreateDateColumn({ name: 'created_at' })
  createdAt!: Date;

  @UpdateDateColumn({ name: 'updated_at' })
  updatedAt!: Date;
}
