/**
 * `RunStore`: the SQLite database of a project folder (`tfalign.db`), the one place that writes SQL.
 *
 * Why the pieces are as they are:
 * - WAL journal: readers (`tfalign status`, the report) never block the writer and never see a
 *   half-written transaction; a `kill -9` loses at most the transaction in flight.
 * - Every write is one `BEGIN IMMEDIATE` transaction: it takes the write lock before reading, so
 *   a second connection waits (`busy_timeout`) instead of failing with SQLITE_BUSY mid-transaction.
 * - A stage is marked `done` in the same transaction that records its artifacts and their sha256:
 *   after a crash a stage is either done with all its artifacts, or not done with none.
 * - Stage resume: a killed process leaves its stage `running`; `resetRunningStages` puts it back to
 *   `pending` and deletes the rows it had written (samples, preferences, metrics), so that running
 *   it again neither duplicates nor mixes outputs. Deleting its files is the caller's job.
 * - One writing process per run is the job of `lock.ts`, not of SQLite (which only serializes
 *   transactions, not whole stages).
 *
 * All methods are synchronous (better-sqlite3) and take the run by name; statements are prepared
 * once when the store opens.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { ensureDir } from '../util/atomic.js';
import { createRequire } from 'node:module';
import type Database from 'better-sqlite3';

// better-sqlite3 (a native module) loads when a store opens, not with the command line (`tfalign --help`).
const require = createRequire(import.meta.url);
const openDatabase = (file: string, options: Database.Options): Database.Database => new (require('better-sqlite3') as typeof Database)(file, options);
import type { Strength } from '../../data/rows.js';
import { STRENGTHS } from '../../data/rows.js';
import { SCHEMA_VERSION, assertKnownVersion, migrate, schemaVersion } from './schema.js';
import { parseStageName, stageRank, validateStageOrder, type StageName } from './stages.js';
import {
  ArtifactInputSchema,
  MetricInputSchema,
  PreferenceInputSchema,
  RUN_STATUSES,
  SampleInputSchema,
  StageMetricInputSchema,
  parseRows,
  parseRunName,
  type ArtifactInput,
  type ArtifactKind,
  type ArtifactRecord,
  type MetricInput,
  type MetricRecord,
  type PreferenceInput,
  type PreferenceRecord,
  type PreferenceSource,
  type ResetStage,
  type RoundRecord,
  type RoundSummary,
  type RunRecord,
  type RunStatus,
  type SampleInput,
  type SampleRecord,
  type StageMetricInput,
  type StagePosition,
  type StageRecord,
  type StageStatus,
} from './records.js';

/** The database file of a project folder. */
export const DEFAULT_DB_FILE = 'tfalign.db';

export function defaultStorePath(projectDir: string): string {
  return path.join(projectDir, DEFAULT_DB_FILE);
}

export interface OpenStoreOptions {
  /** Open for reading only (`tfalign status`, reports): never migrates, never writes; the file must exist. */
  readonly?: boolean;
  /** How long a statement waits for another connection's write lock before failing; default 5000 ms. */
  busyTimeoutMs?: number;
}

export interface CreateRunOptions {
  /** Continue an existing run under a changed config (its config and hash are replaced; finished stages stay done). */
  force?: boolean;
}

/** What `createRun` did: made a new run, found the same one (resume), or replaced its config (`force`). */
export interface CreateRunResult {
  run: RunRecord;
  outcome: 'created' | 'resumed' | 'config_replaced';
  /** The config hash the run had before, when `outcome` is `config_replaced`. */
  previousConfigHash?: string;
}

export interface PreferenceQuery {
  /** Only this round. */
  round?: number;
  /** Rounds 0..uptoRound (the reward model trains on all preferences so far). */
  uptoRound?: number;
  /** Only pairs of these strengths (Llama 3's RM and DPO: significantly_better and better). */
  strengths?: readonly Strength[];
}

export interface MetricQuery {
  round?: number;
  stage?: StageName;
  name?: string;
}

export interface ResetOptions {
  /**
   * Keep the metrics the interrupted attempt logged, for a stage that resumes from its last
   * checkpoint rather than starting over (it then calls `deleteMetrics` with `afterStep`).
   */
  keepMetrics?: boolean;
}

// Rows as SQLite returns them.
interface RunRow { id: number; name: string; created_at: string; updated_at: string; config_json: string; config_hash: string; status: RunStatus }
interface RoundRow { round_index: number; status: StageStatus; started_at: string | null; ended_at: string | null; best_policy_path: string | null }
interface StageRow { round_index: number; name: StageName; status: StageStatus; attempts: number; started_at: string | null; ended_at: string | null; error: string | null }
interface ArtifactRow { round_index: number; stage: StageName; kind: ArtifactKind; name: string; path: string; sha256: string; num_rows: number | null; bytes: number; num_files: number | null; mtime_ms: number | null; created_at: string }
interface SampleRow { round_index: number; stage: StageName; prompt_id: string; prompt: string; sample_index: number; text: string; reward: number | null; num_tokens: number; finish_reason: string; selected: 0 | 1 }
interface PreferenceRow { round_index: number; stage: StageName; prompt_id: string | null; prompt: string; chosen: string; rejected: string; edited: string | null; strength: Strength; source: PreferenceSource; created_at: string }
interface MetricRow { round_index: number; stage: StageName; step: number | null; name: string; value: number | null; created_at: string }

const toRun = (r: RunRow): RunRecord => ({
  id: r.id,
  name: r.name,
  createdAt: r.created_at,
  updatedAt: r.updated_at,
  config: JSON.parse(r.config_json) as unknown,
  configHash: r.config_hash,
  status: r.status,
});
/** Stored paths are relative to the project folder (or absolute); records carry them absolute. */
type PathResolver = (stored: string) => string;

const toRound = (r: RoundRow, resolve: PathResolver): RoundRecord => ({
  roundIndex: r.round_index,
  status: r.status,
  startedAt: r.started_at,
  endedAt: r.ended_at,
  bestPolicyPath: r.best_policy_path === null ? null : resolve(r.best_policy_path),
});
const toStage = (r: StageRow): StageRecord => ({
  roundIndex: r.round_index,
  name: r.name,
  status: r.status,
  attempts: r.attempts,
  startedAt: r.started_at,
  endedAt: r.ended_at,
  error: r.error,
});
const toArtifact = (r: ArtifactRow, resolve: PathResolver): ArtifactRecord => ({
  roundIndex: r.round_index,
  stage: r.stage,
  kind: r.kind,
  name: r.name,
  path: resolve(r.path),
  sha256: r.sha256,
  numRows: r.num_rows,
  bytes: r.bytes,
  numFiles: r.num_files ?? null,
  mtimeMs: r.mtime_ms ?? null,
  createdAt: r.created_at,
});
const toSample = (r: SampleRow): SampleRecord => ({
  roundIndex: r.round_index,
  stage: r.stage,
  promptId: r.prompt_id,
  prompt: r.prompt,
  sampleIndex: r.sample_index,
  text: r.text,
  reward: r.reward,
  numTokens: r.num_tokens,
  finishReason: r.finish_reason,
  selected: r.selected === 1,
});
const toPreference = (r: PreferenceRow): PreferenceRecord => ({
  roundIndex: r.round_index,
  stage: r.stage,
  promptId: r.prompt_id,
  prompt: r.prompt,
  chosen: r.chosen,
  rejected: r.rejected,
  edited: r.edited,
  strength: r.strength,
  source: r.source,
  createdAt: r.created_at,
});
// SQLite stores NaN as NULL; the value column is nullable for exactly that.
const toMetric = (r: MetricRow): MetricRecord => ({
  roundIndex: r.round_index,
  stage: r.stage,
  step: r.step,
  name: r.name,
  value: r.value ?? Number.NaN,
  createdAt: r.created_at,
});

function now(): string {
  return new Date().toISOString();
}

function assertRoundIndex(round: number, where: string): void {
  if (!Number.isInteger(round) || round < 0) throw new Error(`${where}: round must be an integer >= 0, got ${round}`);
}

/** Prepares every statement once; `StoreStatements` is its return type. */
function prepareStatements(db: Database.Database) {
  const stageKey = 'run_id = @runId AND round_index = @round AND name = @stage';
  const recordKey = 'run_id = @runId AND round_index = @round AND stage = @stage';
  return {
    runByName: db.prepare<[string], RunRow>('SELECT * FROM runs WHERE name = ?'),
    runIdByName: db.prepare<[string], { id: number }>('SELECT id FROM runs WHERE name = ?'),
    listRuns: db.prepare<[], RunRow>('SELECT * FROM runs ORDER BY id'),
    insertRun: db.prepare(
      `INSERT INTO runs (name, created_at, updated_at, config_json, config_hash, status)
       VALUES (@name, @now, @now, @configJson, @configHash, 'created')`,
    ),
    replaceRunConfig: db.prepare('UPDATE runs SET config_json = @configJson, config_hash = @configHash, updated_at = @now WHERE id = @runId'),
    setRunStatus: db.prepare('UPDATE runs SET status = @status, updated_at = @now WHERE id = @runId'),

    ensureRound: db.prepare('INSERT OR IGNORE INTO rounds (run_id, round_index) VALUES (@runId, @round)'),
    rounds: db.prepare<[number], RoundRow>('SELECT * FROM rounds WHERE run_id = ? ORDER BY round_index'),
    markRoundRunning: db.prepare(
      `UPDATE rounds SET status = 'running', started_at = COALESCE(started_at, @now), ended_at = NULL
       WHERE run_id = @runId AND round_index = @round`,
    ),
    markRoundFailed: db.prepare(`UPDATE rounds SET status = 'failed', ended_at = @now WHERE run_id = @runId AND round_index = @round`),
    completeRound: db.prepare(`UPDATE rounds SET status = 'done', ended_at = @now WHERE run_id = @runId AND round_index = @round`),
    setBestPolicy: db.prepare('UPDATE rounds SET best_policy_path = @bestPolicyPath WHERE run_id = @runId AND round_index = @round'),

    stage: db.prepare<[{ runId: number; round: number; stage: string }], StageRow>(`SELECT * FROM stages WHERE ${stageKey}`),
    stages: db.prepare<[{ runId: number; round: number | null }], StageRow>(
      'SELECT * FROM stages WHERE run_id = @runId AND (@round IS NULL OR round_index = @round) ORDER BY round_index',
    ),
    runningStages: db.prepare<[number], StageRow>(`SELECT * FROM stages WHERE run_id = ? AND status = 'running' ORDER BY round_index`),
    startStage: db.prepare(
      `INSERT INTO stages (run_id, round_index, name, status, attempts, started_at)
       VALUES (@runId, @round, @stage, 'running', 1, @now)
       ON CONFLICT (run_id, round_index, name) DO UPDATE SET
         status = 'running', attempts = attempts + 1, started_at = @now, ended_at = NULL, error = NULL`,
    ),
    markStageDone: db.prepare(`UPDATE stages SET status = 'done', ended_at = @now, error = NULL WHERE ${stageKey} AND status = 'running'`),
    markStageFailed: db.prepare(`UPDATE stages SET status = 'failed', ended_at = @now, error = @error WHERE ${stageKey} AND status = 'running'`),
    markStagePending: db.prepare(`UPDATE stages SET status = 'pending', ended_at = NULL, error = @error WHERE ${stageKey}`),

    insertArtifact: db.prepare(
      `INSERT INTO artifacts (run_id, round_index, stage, kind, name, path, sha256, num_rows, bytes, num_files, mtime_ms, created_at)
       VALUES (@runId, @round, @stage, @kind, @name, @path, @sha256, @numRows, @bytes, @numFiles, @mtimeMs, @now)`,
    ),
    artifacts: db.prepare<[{ runId: number; round: number | null; stage: string | null }], ArtifactRow>(
      `SELECT * FROM artifacts WHERE run_id = @runId AND (@round IS NULL OR round_index = @round) AND (@stage IS NULL OR stage = @stage)
       ORDER BY round_index, id`,
    ),
    deleteStageArtifacts: db.prepare(`DELETE FROM artifacts WHERE ${recordKey}`),
    deleteStageSamples: db.prepare(`DELETE FROM samples WHERE ${recordKey}`),
    deleteStagePreferences: db.prepare(`DELETE FROM preferences WHERE ${recordKey}`),
    deleteStageMetrics: db.prepare(`DELETE FROM metrics WHERE ${recordKey} AND (@afterStep IS NULL OR step > @afterStep)`),

    insertSample: db.prepare(
      `INSERT INTO samples (run_id, round_index, stage, prompt_id, prompt, sample_index, text, reward, num_tokens, finish_reason, selected)
       VALUES (@runId, @roundIndex, @stage, @promptId, @prompt, @sampleIndex, @text, @reward, @numTokens, @finishReason, @selected)`,
    ),
    samples: db.prepare<[{ runId: number; round: number; stage: string | null; selected: number | null }], SampleRow>(
      `SELECT * FROM samples WHERE run_id = @runId AND round_index = @round AND (@stage IS NULL OR stage = @stage)
       AND (@selected IS NULL OR selected = @selected) ORDER BY id`,
    ),
    insertPreference: db.prepare(
      `INSERT INTO preferences (run_id, round_index, stage, prompt_id, prompt, chosen, rejected, edited, strength, source, created_at)
       VALUES (@runId, @roundIndex, @stage, @promptId, @prompt, @chosen, @rejected, @edited, @strength, @source, @now)`,
    ),
    preferences: db.prepare<[{ runId: number; round: number | null; uptoRound: number | null; strengths: string | null }], PreferenceRow>(
      `SELECT * FROM preferences WHERE run_id = @runId AND (@round IS NULL OR round_index = @round)
       AND (@uptoRound IS NULL OR round_index <= @uptoRound)
       AND (@strengths IS NULL OR strength IN (SELECT value FROM json_each(@strengths))) ORDER BY round_index, id`,
    ),
    insertMetric: db.prepare(
      `INSERT INTO metrics (run_id, round_index, stage, step, name, value, created_at)
       VALUES (@runId, @roundIndex, @stage, @step, @name, @value, @now)`,
    ),
    metrics: db.prepare<[{ runId: number; round: number | null; stage: string | null; name: string | null }], MetricRow>(
      `SELECT * FROM metrics WHERE run_id = @runId AND (@round IS NULL OR round_index = @round)
       AND (@stage IS NULL OR stage = @stage) AND (@name IS NULL OR name = @name) ORDER BY id`,
    ),
    // The last recorded value of each metric name in each round (max id = latest insert).
    latestMetrics: db.prepare<[number], { round_index: number; name: string; value: number | null }>(
      `SELECT m.round_index, m.name, m.value FROM metrics m
       JOIN (SELECT max(id) AS id FROM metrics WHERE run_id = ? GROUP BY round_index, name) latest ON latest.id = m.id
       ORDER BY m.round_index, m.name`,
    ),
  };
}
type StoreStatements = ReturnType<typeof prepareStatements>;

export class RunStore {
  private readonly stmts: StoreStatements;
  /** Run ids by name; runs are never deleted, so a found id stays valid. */
  private readonly runIds = new Map<string, number>();

  /** The project folder (the database's folder), absolute: stored paths are relative to it. */
  readonly projectDir: string;

  private constructor(
    /** The database file. */
    readonly file: string,
    private readonly db: Database.Database,
    readonly readonly: boolean,
    /** A temporary copy this store reads instead of `file` (a read-only project), removed on close. */
    private readonly snapshotDir: string | undefined,
  ) {
    this.stmts = withPathInErrors(prepareStatements(db), file);
    this.projectDir = path.dirname(path.resolve(file));
  }

  /** A stored path as an absolute one. */
  private readonly resolve: PathResolver = (stored) => path.resolve(this.projectDir, stored);

  /** A path to store: relative to the project folder when inside it, else absolute. */
  private toStored(target: string): string {
    const absolute = path.resolve(target);
    const relative = path.relative(this.projectDir, absolute);
    if (relative === '') return '.';
    return relative.startsWith('..') || path.isAbsolute(relative) ? absolute : relative;
  }

  /**
   * Opens (and for writing, creates and migrates) the database at `file`. A database written by a
   * newer tfalign is refused; a read-only open also refuses one that still needs migrating.
   */
  static open(file: string, options: OpenStoreOptions = {}): RunStore {
    const readonly = options.readonly === true;
    const busyTimeoutMs = options.busyTimeoutMs ?? 5000;
    if (readonly && !fs.existsSync(file)) throw new Error(`${file}: no tfalign database here (no run has been started in this folder)`);
    if (!readonly) ensureDir(path.dirname(path.resolve(file)));
    try {
      return RunStore.openAt(file, file, readonly, busyTimeoutMs, undefined);
    } catch (err) {
      // A read-only project: SQLite cannot create the WAL index (`-shm`) beside the database. Read a
      // private copy of the database and its WAL instead (nobody can be writing: nobody can write).
      if (!readonly || !isReadOnlyPlaceError(err)) throw err;
      const snapshotDir = fs.mkdtempSync(path.join(os.tmpdir(), 'tfalign-readonly-'));
      try {
        const copy = path.join(snapshotDir, path.basename(file));
        fs.copyFileSync(file, copy);
        if (fs.existsSync(`${file}-wal`)) fs.copyFileSync(`${file}-wal`, `${copy}-wal`);
        return RunStore.openAt(file, copy, true, busyTimeoutMs, snapshotDir);
      } catch (copyErr) {
        fs.rmSync(snapshotDir, { recursive: true, force: true });
        throw copyErr;
      }
    }
  }

  /** Opens the SQLite file `actual` (the database itself, or a read-only copy of it) as the store of `file`. */
  private static openAt(file: string, actual: string, readonly: boolean, busyTimeoutMs: number, snapshotDir: string | undefined): RunStore {
    let db: Database.Database;
    try {
      db = openDatabase(actual, { readonly, fileMustExist: readonly, timeout: busyTimeoutMs });
    } catch (err) {
      throw sqliteError(file, err, 'cannot open the tfalign database: ');
    }
    try {
      db.pragma(`busy_timeout = ${busyTimeoutMs}`);
      db.pragma('foreign_keys = ON');
      if (readonly) {
        const version = assertKnownVersion(db, file);
        if (version < SCHEMA_VERSION) {
          throw new Error(
            version === 0
              ? `${file}: not a tfalign database (schema version 0)`
              : `${file}: database schema version ${version} is older than this tfalign's (${SCHEMA_VERSION}); open it for writing once (any run command) to migrate it`,
          );
        }
      } else {
        // An SQLite file with tables but no tfalign version is someone else's database: never add ours to it.
        if (schemaVersion(db) === 0) {
          const tables = (db.prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name").all() as { name: string }[]).map((t) => t.name);
          if (tables.length > 0) throw new Error(`${file}: not a tfalign database (it holds the tables ${tables.slice(0, 5).join(', ')}${tables.length > 5 ? ', …' : ''}); use another project folder`);
        }
        const mode = db.pragma('journal_mode = WAL', { simple: true }) as string;
        if (mode !== 'wal') throw new Error(`${file}: cannot switch the database to WAL journal mode (got ${mode}); is it on a network filesystem?`);
        migrate(db, file);
      }
      return new RunStore(file, db, readonly, snapshotDir);
    } catch (err) {
      db.close();
      if ((err as { code?: string }).code === 'SQLITE_NOTADB') throw new Error(`${file}: not a tfalign database (not an SQLite file)`, { cause: err });
      throw sqliteError(file, err);
    }
  }

  close(): void {
    if (this.db.open) this.db.close();
    if (this.snapshotDir !== undefined) fs.rmSync(this.snapshotDir, { recursive: true, force: true });
  }

  /** The schema version of the open database (`PRAGMA user_version`). */
  get schemaVersion(): number {
    return schemaVersion(this.db);
  }

  /** The journal mode SQLite reports: `wal` for every store this code opens for writing. */
  get journalMode(): string {
    return this.db.pragma('journal_mode', { simple: true }) as string;
  }

  // ---- runs ----

  /**
   * Creates the run `name` with its resolved config, or returns it if it exists with the same
   * config hash (a resume). A different hash is refused, naming both, unless `force` is set: then
   * the run keeps its progress and takes the new config.
   */
  createRun(name: string, config: unknown, configHash: string, options: CreateRunOptions = {}): CreateRunResult {
    parseRunName(name);
    if (configHash.length === 0) throw new Error(`createRun: run "${name}": config hash is empty`);
    const configJson = JSON.stringify(config);
    if (configJson === undefined) throw new Error(`createRun: run "${name}": config is not JSON-serializable`);
    return this.immediate((): CreateRunResult => {
      const existing = this.stmts.runByName.get(name);
      const stamp = now();
      if (existing === undefined) {
        this.stmts.insertRun.run({ name, now: stamp, configJson, configHash });
        return { run: toRun(this.stmts.runByName.get(name)!), outcome: 'created' };
      }
      if (existing.config_hash === configHash) return { run: toRun(existing), outcome: 'resumed' };
      if (options.force !== true) {
        throw new Error(
          `run "${name}" exists with config hash ${existing.config_hash}, but this config hashes to ${configHash}; ` +
            'choose a new run name, or force to continue the run under the new config',
        );
      }
      this.stmts.replaceRunConfig.run({ runId: existing.id, configJson, configHash, now: stamp });
      return { run: toRun(this.stmts.runByName.get(name)!), outcome: 'config_replaced', previousConfigHash: existing.config_hash };
    });
  }

  getRun(name: string): RunRecord | null {
    const row = this.stmts.runByName.get(name);
    return row === undefined ? null : toRun(row);
  }

  listRuns(): RunRecord[] {
    return this.stmts.listRuns.all().map(toRun);
  }

  setRunStatus(run: string, status: RunStatus): void {
    if (!(RUN_STATUSES as readonly string[]).includes(status)) throw new Error(`setRunStatus: run "${run}": unknown status "${status}"`);
    this.stmts.setRunStatus.run({ runId: this.runId(run), status, now: now() });
  }

  // ---- rounds ----

  rounds(run: string): RoundRecord[] {
    return this.stmts.rounds.all(this.runId(run)).map((r) => toRound(r, this.resolve));
  }

  /**
   * Marks a round done. The policy the round chose is recorded by the stage that chose it
   * (`completeStage(…, { bestPolicyPath })`); `bestPolicyPath` here sets it directly (imports, tests).
   */
  completeRound(run: string, round: number, bestPolicyPath?: string | null): void {
    assertRoundIndex(round, 'completeRound');
    const runId = this.runId(run);
    this.immediate(() => {
      this.stmts.ensureRound.run({ runId, round });
      this.stmts.completeRound.run({ runId, round, now: now() });
      if (bestPolicyPath !== undefined) this.stmts.setBestPolicy.run({ runId, round, bestPolicyPath: bestPolicyPath === null ? null : this.toStored(bestPolicyPath) });
    });
  }

  /**
   * The policy chosen after `round`: the latest round ≤ `round` whose stage recorded a choice
   * (round 0: the base model built from scratch), or null. The store is the one source of truth
   * for it; `rounds()[].bestPolicyPath` shows the same records.
   */
  bestPolicyAfter(run: string, round: number): string | null {
    const chosen = this.rounds(run).filter((r) => r.roundIndex <= round && r.bestPolicyPath !== null);
    return chosen.length === 0 ? null : chosen[chosen.length - 1]!.bestPolicyPath;
  }

  // ---- stage lifecycle ----

  /**
   * Marks a pending or failed stage running and counts the attempt. A running stage is refused
   * (another process, or a killed one: `resetRunningStages` first), and so is a done one
   * (`resetStage` first, to run it again).
   */
  startStage(run: string, round: number, stage: StageName): StageRecord {
    const key = this.stageKey(run, round, stage, 'startStage');
    return this.immediate((): StageRecord => {
      const current = this.stmts.stage.get(key);
      if (current?.status === 'running') {
        throw new Error(
          `startStage: ${describeStage(run, round, stage)} is already running (attempt ${current.attempts} since ${current.started_at}); ` +
            'if its process was killed, reset running stages first',
        );
      }
      if (current?.status === 'done') throw new Error(`startStage: ${describeStage(run, round, stage)} is already done; reset it to run it again`);
      const stamp = now();
      this.stmts.ensureRound.run(key);
      this.stmts.markRoundRunning.run({ ...key, now: stamp });
      this.stmts.startStage.run({ ...key, now: stamp });
      return toStage(this.stmts.stage.get(key)!);
    });
  }

  /**
   * Marks a running stage done and records its artifacts (and optional final metrics, and the
   * policy the round chose when this stage chose one) in ONE transaction: if any insert fails,
   * the stage stays running and nothing of it is recorded.
   */
  completeStage(
    run: string,
    round: number,
    stage: StageName,
    artifacts: readonly ArtifactInput[],
    metrics: readonly StageMetricInput[] = [],
    options: { bestPolicyPath?: string } = {},
  ): StageRecord {
    const key = this.stageKey(run, round, stage, 'completeStage');
    const where = `completeStage: ${describeStage(run, round, stage)}`;
    const parsedArtifacts = parseRows(ArtifactInputSchema, artifacts, `${where}: artifacts`);
    const parsedMetrics = parseRows(StageMetricInputSchema, metrics, `${where}: metrics`);
    return this.immediate((): StageRecord => {
      const stamp = now();
      if (this.stmts.markStageDone.run({ ...key, now: stamp }).changes !== 1) {
        const status = this.stmts.stage.get(key)?.status ?? 'pending';
        throw new Error(`${where}: the stage is ${status}, not running; start it before completing it`);
      }
      parsedArtifacts.forEach((a, i) => {
        try {
          this.stmts.insertArtifact.run({
            ...key, kind: a.kind, name: a.name, path: this.toStored(a.path), sha256: a.sha256, numRows: a.numRows ?? null, bytes: a.bytes,
            numFiles: a.numFiles ?? null, mtimeMs: a.mtimeMs ?? null, now: stamp,
          });
        } catch (err) {
          const sqliteMessage = ((err as Error).cause as Error | undefined)?.message ?? (err as Error).message;
          throw new Error(`${where}: artifact ${i + 1} ("${a.name}"): ${sqliteMessage}`, { cause: err });
        }
      });
      for (const m of parsedMetrics) {
        this.stmts.insertMetric.run({ runId: key.runId, roundIndex: round, stage, step: m.step ?? null, name: m.name, value: m.value, now: stamp });
      }
      if (options.bestPolicyPath !== undefined) this.stmts.setBestPolicy.run({ runId: key.runId, round, bestPolicyPath: this.toStored(options.bestPolicyPath) });
      return toStage(this.stmts.stage.get(key)!);
    });
  }

  /** Marks a running stage failed with its error; the round is marked failed too. */
  failStage(run: string, round: number, stage: StageName, error: string): StageRecord {
    const key = this.stageKey(run, round, stage, 'failStage');
    return this.immediate((): StageRecord => {
      const stamp = now();
      if (this.stmts.markStageFailed.run({ ...key, error, now: stamp }).changes !== 1) {
        const status = this.stmts.stage.get(key)?.status ?? 'pending';
        throw new Error(`failStage: ${describeStage(run, round, stage)} is ${status}, not running`);
      }
      this.stmts.markRoundFailed.run({ ...key, now: stamp });
      return toStage(this.stmts.stage.get(key)!);
    });
  }

  /** The stage's status; `pending` for a stage never started. */
  stageStatus(run: string, round: number, stage: StageName): StageStatus {
    return this.stmts.stage.get(this.stageKey(run, round, stage, 'stageStatus'))?.status ?? 'pending';
  }

  /** Stage rows of a run (or of one round), by round and then round order. */
  stages(run: string, options: { round?: number } = {}): StageRecord[] {
    if (options.round !== undefined) assertRoundIndex(options.round, 'stages');
    return this.stmts.stages
      .all({ runId: this.runId(run), round: options.round ?? null })
      .map(toStage)
      .sort((a, b) => a.roundIndex - b.roundIndex || stageRank(a.name) - stageRank(b.name));
  }

  /**
   * Where a run resumes: the first (round, stage) not done, scanning rounds 1..numRounds and in each
   * the stages in the given order; null when all are done.
   */
  firstUnfinishedStage(run: string, numRounds: number, stageNames: readonly string[]): StagePosition | null {
    if (!Number.isInteger(numRounds) || numRounds < 1) throw new Error(`firstUnfinishedStage: numRounds must be an integer >= 1, got ${numRounds}`);
    const order = validateStageOrder(stageNames, 'firstUnfinishedStage: stages');
    const statuses = new Map<string, StageStatus>();
    for (const row of this.stmts.stages.all({ runId: this.runId(run), round: null })) statuses.set(`${row.round_index}/${row.name}`, row.status);
    for (let round = 1; round <= numRounds; round++) {
      for (const stage of order) {
        const status = statuses.get(`${round}/${stage}`) ?? 'pending';
        if (status !== 'done') return { roundIndex: round, stage, status };
      }
    }
    return null;
  }

  /**
   * On resume: stages left `running` by a killed process go back to `pending`, and the rows they
   * had written (samples, preferences, metrics unless `keepMetrics`, artifacts) are deleted, in one
   * transaction. Returns them so that the caller deletes their output folders.
   */
  resetRunningStages(run: string, options: ResetOptions = {}): ResetStage[] {
    const runId = this.runId(run);
    return this.immediate((): ResetStage[] =>
      this.stmts.runningStages
        .all(runId)
        .map((row) => this.resetStageRow(runId, row, options, `interrupted: attempt ${row.attempts} stopped while running and was reset on resume`)),
    );
  }

  /**
   * Puts a done or failed stage back to pending so that it runs again (e.g. `tfalign round N
   * --stage NAME` on a finished stage), deleting its rows and artifact records; a running stage is
   * refused. Later stages that used its outputs are the caller's to reset.
   */
  resetStage(run: string, round: number, stage: StageName): ResetStage {
    const key = this.stageKey(run, round, stage, 'resetStage');
    return this.immediate((): ResetStage => {
      const row = this.stmts.stage.get(key);
      if (row === undefined) throw new Error(`resetStage: ${describeStage(run, round, stage)} was never started`);
      if (row.status === 'running') throw new Error(`resetStage: ${describeStage(run, round, stage)} is running; reset running stages on resume instead`);
      return this.resetStageRow(key.runId, row, {}, null);
    });
  }

  private resetStageRow(runId: number, row: StageRow, options: ResetOptions, error: string | null): ResetStage {
    const key = { runId, round: row.round_index, stage: row.name };
    const removedArtifacts = this.stmts.artifacts.all(key).map((r) => toArtifact(r, this.resolve));
    this.stmts.deleteStageArtifacts.run(key);
    this.stmts.deleteStageSamples.run(key);
    this.stmts.deleteStagePreferences.run(key);
    // The round's choice of policy rested on this stage's outputs (or on earlier ones it used).
    this.stmts.setBestPolicy.run({ runId, round: row.round_index, bestPolicyPath: null });
    if (options.keepMetrics !== true) this.stmts.deleteStageMetrics.run({ ...key, afterStep: null });
    this.stmts.markStagePending.run({ ...key, error });
    return { roundIndex: row.round_index, stage: row.name, previousStatus: row.status, attempts: row.attempts, startedAt: row.started_at, removedArtifacts };
  }

  // ---- records ----

  /** Inserts sampled responses in one transaction; returns how many. */
  addSamples(run: string, rows: readonly SampleInput[]): number {
    const runId = this.runId(run);
    const parsed = parseRows(SampleInputSchema, rows, 'addSamples');
    this.insertBatch(runId, parsed, (row) => this.stmts.insertSample.run({ runId, ...row, selected: row.selected ? 1 : 0 }));
    return parsed.length;
  }

  /** Inserts preference pairs in one transaction; returns how many. */
  addPreferences(run: string, rows: readonly PreferenceInput[]): number {
    const runId = this.runId(run);
    const parsed = parseRows(PreferenceInputSchema, rows, 'addPreferences');
    const stamp = now();
    this.insertBatch(runId, parsed, (row) =>
      this.stmts.insertPreference.run({ runId, ...row, promptId: row.promptId ?? null, edited: row.edited ?? null, now: stamp }),
    );
    return parsed.length;
  }

  /** Inserts metrics in one transaction (a training loop calls this once per logging interval); returns how many. */
  addMetrics(run: string, rows: readonly MetricInput[]): number {
    const runId = this.runId(run);
    const parsed = parseRows(MetricInputSchema, rows, 'addMetrics');
    const stamp = now();
    this.insertBatch(runId, parsed, (row) => this.stmts.insertMetric.run({ runId, ...row, step: row.step ?? null, now: stamp }));
    return parsed.length;
  }

  /**
   * Deletes a stage's metrics, or only those after `afterStep` (a stage resuming from the
   * checkpoint at that step). Returns how many.
   */
  deleteMetrics(run: string, round: number, stage: StageName, options: { afterStep?: number } = {}): number {
    const key = this.stageKey(run, round, stage, 'deleteMetrics');
    return this.stmts.deleteStageMetrics.run({ ...key, afterStep: options.afterStep ?? null }).changes;
  }

  /** Samples of a round, in insertion order. */
  samples(run: string, round: number, options: { stage?: StageName; selected?: boolean } = {}): SampleRecord[] {
    assertRoundIndex(round, 'samples');
    const stage = options.stage === undefined ? null : parseStageName(options.stage, 'samples');
    const selected = options.selected === undefined ? null : options.selected ? 1 : 0;
    return this.stmts.samples.all({ runId: this.runId(run), round, stage, selected }).map(toSample);
  }

  /** Preference pairs, by round then insertion order. */
  preferences(run: string, query: PreferenceQuery = {}): PreferenceRecord[] {
    if (query.round !== undefined) assertRoundIndex(query.round, 'preferences');
    if (query.uptoRound !== undefined) assertRoundIndex(query.uptoRound, 'preferences: uptoRound');
    for (const s of query.strengths ?? []) {
      if (!(STRENGTHS as readonly string[]).includes(s)) throw new Error(`preferences: unknown strength "${s}"; expected one of ${STRENGTHS.join(', ')}`);
    }
    return this.stmts.preferences
      .all({
        runId: this.runId(run),
        round: query.round ?? null,
        uptoRound: query.uptoRound ?? null,
        strengths: query.strengths === undefined ? null : JSON.stringify(query.strengths),
      })
      .map(toPreference);
  }

  /** Metrics in insertion order, filtered by round, stage and name. */
  metrics(run: string, query: MetricQuery = {}): MetricRecord[] {
    if (query.round !== undefined) assertRoundIndex(query.round, 'metrics');
    const stage = query.stage === undefined ? null : parseStageName(query.stage, 'metrics');
    return this.stmts.metrics.all({ runId: this.runId(run), round: query.round ?? null, stage, name: query.name ?? null }).map(toMetric);
  }

  /** Artifact records, by round then insertion order. */
  artifacts(run: string, query: { round?: number; stage?: StageName } = {}): ArtifactRecord[] {
    if (query.round !== undefined) assertRoundIndex(query.round, 'artifacts');
    const stage = query.stage === undefined ? null : parseStageName(query.stage, 'artifacts');
    return this.stmts.artifacts.all({ runId: this.runId(run), round: query.round ?? null, stage }).map((r) => toArtifact(r, this.resolve));
  }

  /**
   * Per round: its status, its stages, and the latest value of every metric recorded in it
   * (`rm/accuracy`, `sample/best_of_k_gain`, `eval/judge_score`, …) — the rows of `tfalign status`.
   */
  roundSummaries(run: string): RoundSummary[] {
    const runId = this.runId(run);
    const summaries = new Map<number, RoundSummary>();
    for (const round of this.stmts.rounds.all(runId)) summaries.set(round.round_index, { ...toRound(round, this.resolve), stages: [], metrics: {} });
    for (const stage of this.stages(run)) summaries.get(stage.roundIndex)?.stages.push(stage);
    for (const m of this.stmts.latestMetrics.all(runId)) {
      const summary = summaries.get(m.round_index);
      if (summary !== undefined) summary.metrics[m.name] = m.value ?? Number.NaN;
    }
    return [...summaries.values()];
  }

  // ---- helpers ----

  /** Runs `fn` in one `BEGIN IMMEDIATE` transaction; SQLite errors (a busy database) name the file. */
  private immediate<T>(fn: () => T): T {
    try {
      return this.db.transaction(fn).immediate();
    } catch (err) {
      throw sqliteError(this.file, err);
    }
  }

  private runId(name: string): number {
    const cached = this.runIds.get(name);
    if (cached !== undefined) return cached;
    const row = this.stmts.runIdByName.get(name);
    if (row === undefined) throw new Error(`run "${name}" not found in ${this.file}`);
    this.runIds.set(name, row.id);
    return row.id;
  }

  private stageKey(run: string, round: number, stage: StageName, where: string): { runId: number; round: number; stage: StageName } {
    assertRoundIndex(round, where);
    return { runId: this.runId(run), round, stage: parseStageName(stage, where) };
  }

  /** Runs `insert` over the rows in one transaction, creating the rounds they reference first. */
  private insertBatch<T extends { roundIndex: number }>(runId: number, rows: readonly T[], insert: (row: T) => void): void {
    this.immediate(() => {
      for (const round of new Set(rows.map((r) => r.roundIndex))) this.stmts.ensureRound.run({ runId, round });
      rows.forEach(insert);
    });
  }
}

function describeStage(run: string, round: number, stage: StageName): string {
  return `stage ${stage} of round ${round} of run "${run}"`;
}

/** Errors of a read-only open that a private copy of the database avoids (no `-shm` can be made). */
function isReadOnlyPlaceError(err: unknown): boolean {
  const code = (err as { code?: string } | undefined)?.code ?? '';
  const cause = ((err as { cause?: { code?: string } } | undefined)?.cause?.code) ?? '';
  return [code, cause].some((c) => c.startsWith('SQLITE_READONLY') || c === 'SQLITE_CANTOPEN');
}

/**
 * An SQLite error as `FILE: message` (`tfalign.db: database disk image is malformed`), keeping its
 * `code`; other errors, and messages already naming the file, pass through.
 */
function sqliteError(file: string, err: unknown, prefix = ''): unknown {
  const code = (err as { code?: string } | undefined)?.code;
  if (!(err instanceof Error) || typeof code !== 'string' || !code.startsWith('SQLITE_') || err.message.startsWith(file)) return err;
  return Object.assign(new Error(`${file}: ${prefix}${err.message}`, { cause: err }), { code });
}

/** The statements with every call's SQLite error naming the database file. */
function withPathInErrors<T extends Record<string, object>>(statements: T, file: string): T {
  const wrapped: Record<string, object> = {};
  for (const [name, statement] of Object.entries(statements)) {
    wrapped[name] = new Proxy(statement, {
      get(target, property) {
        const value = Reflect.get(target, property, target) as unknown;
        if (typeof value !== 'function') return value;
        return (...args: unknown[]) => {
          try {
            return (value as (...a: unknown[]) => unknown).apply(target, args);
          } catch (err) {
            throw sqliteError(file, err);
          }
        };
      },
    });
  }
  return wrapped as T;
}
