/**
 * The database schema as an ordered list of migrations. Migration i (0-based) takes a database
 * from `PRAGMA user_version` i to i + 1; it runs inside one `BEGIN IMMEDIATE` transaction together
 * with the version bump, so a crash mid-migration leaves the previous version intact, and two
 * processes opening a fresh database at once do not both migrate it (the second sees the new
 * version once it gets the write lock). Never edit a shipped migration: append a new one.
 *
 * Tables (rounds count from 1 as users see them; round 0 holds records about the base model):
 *
 * | table         | one row per                                        | key                                        |
 * |---------------|----------------------------------------------------|--------------------------------------------|
 * | `runs`        | run: its resolved config and the config's hash     | `id`, `name` unique                        |
 * | `rounds`      | round of a run, with the policy chosen after it    | (`run_id`, `round_index`)                  |
 * | `stages`      | stage of a round: status, times, error, attempts   | (`run_id`, `round_index`, `name`)          |
 * | `artifacts`   | file or folder a stage produced, with its sha256, size, file count and mtime; its path relative to the project folder (or absolute) | (`run_id`, `round_index`, `stage`, `name`) |
 * | `samples`     | sampled response to a prompt, its reward and pick  | (`run_id`, `round_index`, `stage`, `prompt_id`, `sample_index`) |
 * | `preferences` | preference pair recorded in a round                | `id`                                       |
 * | `metrics`     | scalar logged by a stage (at a training step)      | `id`; insertion order is time order        |
 *
 * Every record of a round references its `rounds` row (ON DELETE CASCADE), and every row names the
 * stage that wrote it, so the partial output of an interrupted stage can be removed exactly.
 * Metric values are REAL and nullable: SQLite has no NaN (it stores NaN as NULL), so NULL is NaN.
 */
import * as path from 'node:path';
import type Database from 'better-sqlite3';

/** One schema step: SQL, or a function for changes SQL cannot express (rewriting paths). */
export type Migration = string | ((db: Database.Database) => void);

export const MIGRATIONS: readonly Migration[] = [
  // 1: the initial schema.
  `
  CREATE TABLE runs (
    id          INTEGER PRIMARY KEY,
    name        TEXT    NOT NULL UNIQUE,
    created_at  TEXT    NOT NULL,
    updated_at  TEXT    NOT NULL,
    config_json TEXT    NOT NULL,
    config_hash TEXT    NOT NULL,
    status      TEXT    NOT NULL DEFAULT 'created' CHECK (status IN ('created', 'running', 'done', 'failed'))
  );

  CREATE TABLE rounds (
    run_id           INTEGER NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    round_index      INTEGER NOT NULL CHECK (round_index >= 0),
    status           TEXT    NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'running', 'done', 'failed')),
    started_at       TEXT,
    ended_at         TEXT,
    best_policy_path TEXT,
    PRIMARY KEY (run_id, round_index)
  );

  CREATE TABLE stages (
    run_id      INTEGER NOT NULL,
    round_index INTEGER NOT NULL,
    name        TEXT    NOT NULL,
    status      TEXT    NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'running', 'done', 'failed')),
    attempts    INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    started_at  TEXT,
    ended_at    TEXT,
    error       TEXT,
    PRIMARY KEY (run_id, round_index, name),
    FOREIGN KEY (run_id, round_index) REFERENCES rounds (run_id, round_index) ON DELETE CASCADE
  );

  CREATE TABLE artifacts (
    id          INTEGER PRIMARY KEY,
    run_id      INTEGER NOT NULL,
    round_index INTEGER NOT NULL,
    stage       TEXT    NOT NULL,
    kind        TEXT    NOT NULL,
    name        TEXT    NOT NULL,
    path        TEXT    NOT NULL,
    sha256      TEXT    NOT NULL CHECK (length(sha256) = 64),
    num_rows    INTEGER CHECK (num_rows >= 0),
    bytes       INTEGER NOT NULL CHECK (bytes >= 0),
    created_at  TEXT    NOT NULL,
    UNIQUE (run_id, round_index, stage, name),
    FOREIGN KEY (run_id, round_index) REFERENCES rounds (run_id, round_index) ON DELETE CASCADE
  );

  CREATE TABLE samples (
    id            INTEGER PRIMARY KEY,
    run_id        INTEGER NOT NULL,
    round_index   INTEGER NOT NULL,
    stage         TEXT    NOT NULL,
    prompt_id     TEXT    NOT NULL,
    prompt        TEXT    NOT NULL,
    sample_index  INTEGER NOT NULL CHECK (sample_index >= 0),
    text          TEXT    NOT NULL,
    reward        REAL,
    num_tokens    INTEGER NOT NULL CHECK (num_tokens >= 0),
    finish_reason TEXT    NOT NULL,
    selected      INTEGER NOT NULL CHECK (selected IN (0, 1)),
    UNIQUE (run_id, round_index, stage, prompt_id, sample_index),
    FOREIGN KEY (run_id, round_index) REFERENCES rounds (run_id, round_index) ON DELETE CASCADE
  );

  CREATE TABLE preferences (
    id          INTEGER PRIMARY KEY,
    run_id      INTEGER NOT NULL,
    round_index INTEGER NOT NULL,
    stage       TEXT    NOT NULL,
    prompt_id   TEXT,
    prompt      TEXT    NOT NULL,
    chosen      TEXT    NOT NULL,
    rejected    TEXT    NOT NULL,
    edited      TEXT,
    strength    TEXT    NOT NULL,
    source      TEXT    NOT NULL,
    created_at  TEXT    NOT NULL,
    FOREIGN KEY (run_id, round_index) REFERENCES rounds (run_id, round_index) ON DELETE CASCADE
  );
  CREATE INDEX preferences_by_round ON preferences (run_id, round_index, stage);

  CREATE TABLE metrics (
    id          INTEGER PRIMARY KEY,
    run_id      INTEGER NOT NULL,
    round_index INTEGER NOT NULL,
    stage       TEXT    NOT NULL,
    step        INTEGER,
    name        TEXT    NOT NULL,
    value       REAL,
    created_at  TEXT    NOT NULL,
    FOREIGN KEY (run_id, round_index) REFERENCES rounds (run_id, round_index) ON DELETE CASCADE
  );
  -- metrics(run, {round, stage, name}) and the latest value per (round, name) for summaries.
  CREATE INDEX metrics_by_round_name ON metrics (run_id, round_index, name, id);
  CREATE INDEX metrics_by_stage ON metrics (run_id, round_index, stage, step);
  -- metrics(run, {name}) across rounds: one chart per metric.
  CREATE INDEX metrics_by_name ON metrics (run_id, name, round_index);
  `,
  // 2: the quick integrity check's file count and mtime; paths relative to the project folder.
  (db) => {
    db.exec('ALTER TABLE artifacts ADD COLUMN num_files INTEGER; ALTER TABLE artifacts ADD COLUMN mtime_ms REAL;');
    // Version 1 stored paths as the writing process saw them: relative to its working directory,
    // under the run config's `project` (itself relative to that directory). Relative to the
    // project folder they are `path.relative(project, p)`, computed lexically (one common base).
    const runs = db.prepare('SELECT id, config_json FROM runs').all() as { id: number; config_json: string }[];
    const updateArtifact = db.prepare('UPDATE artifacts SET path = ? WHERE id = ?');
    const updateRound = db.prepare('UPDATE rounds SET best_policy_path = ? WHERE run_id = ? AND round_index = ?');
    for (const run of runs) {
      let project: unknown;
      try {
        project = (JSON.parse(run.config_json) as { project?: unknown }).project;
      } catch {
        project = undefined;
      }
      if (typeof project !== 'string' || path.isAbsolute(project)) continue;
      const rebase = (p: string): string => (path.isAbsolute(p) ? p : path.relative(project, p) || '.');
      for (const a of db.prepare('SELECT id, path FROM artifacts WHERE run_id = ?').all(run.id) as { id: number; path: string }[]) updateArtifact.run(rebase(a.path), a.id);
      for (const r of db.prepare('SELECT round_index, best_policy_path FROM rounds WHERE run_id = ? AND best_policy_path IS NOT NULL').all(run.id) as { round_index: number; best_policy_path: string }[]) {
        updateRound.run(rebase(r.best_policy_path), run.id, r.round_index);
      }
    }
  },
];

/** The schema version this code writes: the number of migrations. */
export const SCHEMA_VERSION = MIGRATIONS.length;

export function schemaVersion(db: Database.Database): number {
  return db.pragma('user_version', { simple: true }) as number;
}

/**
 * Refuses a database written by a newer tfalign: its tables may mean things this code does not
 * know, and writing to it could corrupt them.
 */
export function assertKnownVersion(db: Database.Database, file: string): number {
  const version = schemaVersion(db);
  if (version > SCHEMA_VERSION) {
    throw new Error(
      `${file}: database schema version ${version} is newer than this tfalign's (${SCHEMA_VERSION}); upgrade tfalign to open it`,
    );
  }
  return version;
}

/**
 * Brings the database to `SCHEMA_VERSION`, one migration per transaction. Returns the version
 * it found, 0 for a new database.
 */
export function migrate(db: Database.Database, file: string): number {
  const found = assertKnownVersion(db, file);
  for (let target = found + 1; target <= SCHEMA_VERSION; target++) {
    db.transaction(() => {
      // Re-read under the write lock: another process may have migrated since we looked.
      const current = assertKnownVersion(db, file);
      if (current >= target) return;
      const migration = MIGRATIONS[target - 1]!;
      if (typeof migration === 'string') db.exec(migration);
      else migration(db);
      db.pragma(`user_version = ${target}`);
    }).immediate();
  }
  return found;
}
