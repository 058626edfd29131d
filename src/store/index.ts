/** The SQLite store of runs, rounds, stages and their records, the run write lock, and artifact hashes. */
export { RunStore, DEFAULT_DB_FILE, defaultStorePath } from './store.js';
export type { OpenStoreOptions, CreateRunOptions, CreateRunResult, PreferenceQuery, MetricQuery, ResetOptions } from './store.js';
export { MIGRATIONS, SCHEMA_VERSION } from './schema.js';
export { ROUND_STAGES, STAGE_NAMES, isStageName, parseStageName, roundStages, validateStageOrder } from './stages.js';
export type { StageName } from './stages.js';
export {
  ARTIFACT_KINDS,
  PREFERENCE_SOURCES,
  RUN_STATUSES,
  STAGE_STATUSES,
  ArtifactInputSchema,
  MetricInputSchema,
  PreferenceInputSchema,
  RunNameSchema,
  SampleInputSchema,
  StageMetricInputSchema,
  parseRunName,
} from './records.js';
export type {
  ArtifactInput,
  ArtifactKind,
  ArtifactRecord,
  MetricInput,
  MetricRecord,
  PreferenceInput,
  PreferenceRecord,
  PreferenceSource,
  ResetStage,
  RoundRecord,
  RoundSummary,
  RunRecord,
  RunStatus,
  SampleInput,
  SampleRecord,
  StageMetricInput,
  StagePosition,
  StageRecord,
  StageStatus,
} from './records.js';
export { LOCK_DIR, RunLockedError, acquireRunLock, describeHeldLock, readRunLock, runLockPath } from './lock.js';
export type { LockHolder, RunLock } from './lock.js';
export { artifactProblem, canonicalJson, digestArtifact, digestPath, listFilesSorted, sha256Dir, sha256File, sha256Json, statPath } from '../util/hash.js';
export type { ArtifactDigest, PathDigest, PathStat, RecordedDigest } from '../util/hash.js';
