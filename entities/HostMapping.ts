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

/** Which cell a compute host belongs to, stored in the API database. */
@Entity({ name: 'host_mappings' })
export class HostMapping {
  @PrimaryGeneratedColumn({ type: 'integer' })
  id!: number;

  @Index({ unique: true })
  @Column({ type: 'varchar', length: 255 })
  host!: string;

  @ManyToOne(() => CellMapping, { nullable: false, onDelete: 'RESTRICT' })
  @JoinColumn({ name: 'cell_id' })
  cell!: CellMapping;

  @Index()
  @Column({ name: 'cell_id', type: 'integer' })
  cellId!: number;

  @CreateDateColumn({ name: 'created_at' })
  createdAt!: Date;

  @UpdateDateColumn({ name: 'updated_at' })
  updatedAt!: Date;
}
