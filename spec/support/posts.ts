import {
  Column,
  DeleteDateColumn,
  Entity,
  JoinTable,
  ManyToMany,
  ManyToOne,
  OneToMany,
  PrimaryColumn,
  type MigrationInterface,
  type QueryRunner,
} from 'typeorm';

// Three related cell-database entities, each with a @DeleteDateColumn, for the specs of relations:
// readDeleted across joins, and relation query builders (`relation(Post, 'tags').of(id).add(...)`).
// Keys are given by the tests, so two databases fed the same operations hold the same rows.

/** A tag; posts and tags are many-to-many through `post_tags`. */
@Entity({ name: 'tags' })
export class Tag {
  @PrimaryColumn({ type: 'integer' })
  id!: number;

  @Column({ type: 'varchar', length: 64 })
  label!: string;

  @DeleteDateColumn({ name: 'deleted_at', type: 'timestamptz' })
  deletedAt!: Date | null;
}

/** A post: many comments (one-to-many) and many tags (many-to-many). */
@Entity({ name: 'posts' })
export class Post {
  @PrimaryColumn({ type: 'integer' })
  id!: number;

  @Column({ type: 'varchar', length: 64 })
  title!: string;

  @OneToMany(() => Comment, (comment) => comment.post)
  comments!: Comment[];

  @ManyToMany(() => Tag)
  @JoinTable({ name: 'post_tags', joinColumn: { name: 'post_id' }, inverseJoinColumn: { name: 'tag_id' } })
  tags!: Tag[];

  @DeleteDateColumn({ name: 'deleted_at', type: 'timestamptz' })
  deletedAt!: Date | null;
}

/** A comment on at most one post. */
@Entity({ name: 'comments' })
export class Comment {
  @PrimaryColumn({ type: 'integer' })
  id!: number;

  @Column({ type: 'varchar', length: 64 })
  body!: string;

  @ManyToOne(() => Post, (post) => post.comments, { nullable: true, onDelete: 'SET NULL' })
  post!: Post | null;

  @DeleteDateColumn({ name: 'deleted_at', type: 'timestamptz' })
  deletedAt!: Date | null;
}

/** The entities of this fixture, for `Cells`' and a plain DataSource's `entities`. */
export const POST_ENTITIES = [Post, Comment, Tag];

/** Creates the posts, comments, tags and post_tags tables in a cell database. */
export class CreatePosts1764072200000 implements MigrationInterface {
  name = 'CreatePosts1764072200000';

  async up(queryRunner: QueryRunner): Promise<void> {
    await queryRunner.query(`
      CREATE TABLE "posts" (
        "id" integer PRIMARY KEY,
        "title" varchar(64) NOT NULL,
        "deleted_at" timestamptz
      )`);
    await queryRunner.query(`
      CREATE TABLE "tags" (
        "id" integer PRIMARY KEY,
        "label" varchar(64) NOT NULL,
        "deleted_at" timestamptz
      )`);
    await queryRunner.query(`
      CREATE TABLE "comments" (
        "id" integer PRIMARY KEY,
        "body" varchar(64) NOT NULL,
        "postId" integer REFERENCES "posts" ("id") ON DELETE SET NULL,
        "deleted_at" timestamptz
      )`);
    await queryRunner.query(`
      CREATE TABLE "post_tags" (
        "post_id" integer NOT NULL REFERENCES "posts" ("id") ON DELETE CASCADE,
        "tag_id" integer NOT NULL REFERENCES "tags" ("id") ON DELETE CASCADE,
        PRIMARY KEY ("post_id", "tag_id")
      )`);
    await queryRunner.query(`CREATE INDEX "post_tags_tag" ON "post_tags" ("tag_id")`);
  }

  async down(queryRunner: QueryRunner): Promise<void> {
    await queryRunner.query(`DROP TABLE "post_tags", "comments", "tags", "posts"`);
  }
}
