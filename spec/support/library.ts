import {
  BeforeInsert,
  Column,
  DeleteDateColumn,
  Entity,
  EventSubscriber,
  JoinTable,
  ManyToMany,
  ManyToOne,
  OneToMany,
  PrimaryColumn,
  type DataSource,
  type EntitySubscriberInterface,
  type InsertEvent,
  type MigrationInterface,
  type QueryRunner,
} from 'typeorm';

// A small library model for the specs of cell DataSources' entity metadata: a lazy one-to-many
// (Author.books), an eager many-to-one (Book.author), a many-to-many through a join table
// (Book.genres), soft delete, an entity listener (Book.slug) and a subscriber (BOOK_INSERTS).

/** A genre; books and genres are many-to-many through `book_genres`. */
@Entity({ name: 'genres' })
export class Genre {
  @PrimaryColumn({ type: 'integer' })
  id!: number;

  @Column({ type: 'varchar', length: 64 })
  name!: string;
}

/** An author, whose books load lazily. */
@Entity({ name: 'authors' })
export class Author {
  @PrimaryColumn({ type: 'integer' })
  id!: number;

  @Column({ type: 'varchar', length: 64 })
  name!: string;

  @OneToMany(() => Book, (book) => book.author)
  books!: Promise<Book[]>;
}

/** A book: its author loads eagerly, its genres on request; soft-deletable. */
@Entity({ name: 'books' })
export class Book {
  @PrimaryColumn({ type: 'integer' })
  id!: number;

  @Column({ type: 'varchar', length: 64 })
  title!: string;

  /** Set by the BeforeInsert listener from the title. */
  @Column({ type: 'varchar', length: 64 })
  slug!: string;

  @ManyToOne(() => Author, (author) => author.books, { eager: true, nullable: true })
  author!: Author | null;

  @ManyToMany(() => Genre)
  @JoinTable({
    name: 'book_genres',
    joinColumn: { name: 'book_id' },
    inverseJoinColumn: { name: 'genre_id' },
  })
  genres!: Genre[];

  @DeleteDateColumn({ name: 'deleted_at', type: 'timestamptz' })
  deletedAt!: Date | null;

  @BeforeInsert()
  setSlug(): void {
    this.slug = this.title.toLowerCase().replace(/[^a-z0-9]+/g, '-');
  }
}

/** Every book insert any subscriber instance saw: the DataSource it ran on and the book's title. */
export const BOOK_INSERTS: { dataSource: DataSource; title: string }[] = [];

/** Records each book insert in BOOK_INSERTS. */
@EventSubscriber()
export class BookSubscriber implements EntitySubscriberInterface<Book> {
  listenTo(): typeof Book {
    return Book;
  }

  afterInsert(event: InsertEvent<Book>): void {
    BOOK_INSERTS.push({ dataSource: event.connection, title: event.entity.title });
  }
}

/** The entities of this fixture. */
export const LIBRARY_ENTITIES = [Author, Book, Genre];

/** Creates the authors, books, genres and book_genres tables in a cell database. */
export class CreateLibrary1764072300000 implements MigrationInterface {
  name = 'CreateLibrary1764072300000';

  async up(queryRunner: QueryRunner): Promise<void> {
    await queryRunner.query(
      `CREATE TABLE "authors" ("id" integer PRIMARY KEY, "name" varchar(64) NOT NULL)`,
    );
    await queryRunner.query(
      `CREATE TABLE "genres" ("id" integer PRIMARY KEY, "name" varchar(64) NOT NULL)`,
    );
    await queryRunner.query(`
      CREATE TABLE "books" (
        "id" integer PRIMARY KEY,
        "title" varchar(64) NOT NULL,
        "slug" varchar(64) NOT NULL,
        "authorId" integer REFERENCES "authors" ("id"),
        "deleted_at" timestamptz
      )`);
    await queryRunner.query(`
      CREATE TABLE "book_genres" (
        "book_id" integer NOT NULL REFERENCES "books" ("id") ON DELETE CASCADE,
        "genre_id" integer NOT NULL REFERENCES "genres" ("id") ON DELETE CASCADE,
        PRIMARY KEY ("book_id", "genre_id")
      )`);
  }

  async down(queryRunner: QueryRunner): Promise<void> {
    await queryRunner.query(`DROP TABLE "book_genres", "books", "genres", "authors"`);
  }
}
