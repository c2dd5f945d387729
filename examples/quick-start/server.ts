import { Column, Entity, PrimaryGeneratedColumn } from 'typeorm';

/** A row of a cell database: each cell has its own `server` table. */
@Entity()
export class Server {
  @PrimaryGeneratedColumn('uuid')
  id!: string;

  @Column()
  name!: string;
}
