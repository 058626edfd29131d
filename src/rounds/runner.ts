/**
 * The iterative loop: open a run from a config, then run its rounds stage by stage, recording
 * each stage in SQLite. A stage is marked done only after its files are written, in the same
 * transaction that records their hashes; a process killed mid-stage leaves it `running`, and the
 * next `run` resets it, deletes its partial folder and does it again. Finished stages are never
 * repeated. One process writes a run at a time (a lock file naming the holder).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { initBackend } from '../backend.js';
import { loadConfig as loadConfigFile, validateConfig } from '../config/load.js';
import { RunConfigSchema, type RunConfig, type RunConfigInput } from './run-config.js';
import { acquireRunLock, type RunLock } from '../store/lock.js';
import { RunStore } from '../store/store.js';
import { artifactProblem, digestArtifact, sha256Json } from '../util/hash.js';
import { checkWorkers } from '../config/limits.js';
import { checkTrainingFits } from '../train/fits.js';
import { loadConfig as loadModelConfig } from '../model/pretrained.js';
import { modelDims, parseLlamaConfig, type ModelDims } from '../model/config.js';
import { readJsonFile } from '../model/checkpoint-io.js';
import { PretrainConfigSchema } from '../trainers/pretrain.js';
import { ensureDir } from '../util/atomic.js';
import type { RoundStageName, StageName } from '../store/stages.js';
import type { LogRecord } from '../train/loop.js';
import { RunLayout } from './layout.js';
import { loadJudge, type Judge } from './judge-loader.js';
import { writePromptSets } from './prompts.js';
import { BASE_MODEL_ARTIFACT, STAGES, stagesOf, type StageContext, type StageOutput } from './stages.js';
export const BASE_STAGE = 'build_base' as const;

export interface RunEvents {
  /** A stage starts / ends (for progress output). */
  onStage?: (event: { round: number; stage: string; status: 'start' | 'done' | 'skipped' | 'reset'; seconds?: number }) => void;
  /** Summary lines of stages. */
  onLine?: (line: string) => void;
  /** Per-step training records of the stage running. */
  onTrainLog?: (round: number, stage: string, record: LogRecord) => void;
}

export interface RunSelection {
  /** Run only this round (its earlier stages must be done, or are run first). */
  round?: number;
  /** Within `round`, only this stage (it is redone if already done). */
  stage?: RoundStageName;
}

/**
 * Reads and validates a run config file with `--set` overrides; every problem listed. Input
 * paths in the file (base model, architecture, judge module, prompt files) are relative to the
 * config file; `project` (where outputs go) is relative to the working directory.
 */
export function readRunConfig(file: string, sets: readonly string[] = []): RunConfig {
  const config = loadConfigFile(RunConfigSchema, { file, sets });
  const dir = path.dirname(path.resolve(file));
  const resolve = (p: string) => path.resolve(dir, p);
  if (config.base.model) config.base.model = resolve(config.base.model);
  if (config.base.fromScratch) config.base.fromScratch.architecture = resolve(config.base.fromScratch.architecture);
  if (config.preferences.judge) config.preferences.judge = resolve(config.preferences.judge);
  if (typeof config.prompts.train === 'string') config.prompts.train = resolve(config.prompts.train);
  if (typeof config.prompts.heldout === 'string') config.prompts.heldout = resolve(config.prompts.heldout);
  return config;
}

export class AlignmentRun {
  readonly layout: RunLayout;

  private constructor(
    readonly config: RunConfig,
    private readonly store: RunStore,
    private readonly lock: RunLock,
    private readonly judge: Judge | undefined,
    /** The config file, for the commands error messages suggest. */
    private readonly source: string | undefined,
  ) {
    // Absolute, so that every path a stage records (artifacts, the chosen policy) survives a change of directory.
    this.layout = new RunLayout(path.resolve(config.project), config.name);
  }

  /**
   * Opens (creating or resuming) the run a config describes. Validation happens first: an invalid
   * config writes nothing. `force` continues a run whose config changed. The database must know
   * the run when its folder already holds outputs (an emptied or replaced database is refused,
   * never re-initialised over them). The judge module — code that runs in this process with the
   * user's rights — is imported only once the run's lock is held.
   */
  static async open(input: RunConfigInput | RunConfig, opts: { force?: boolean; source?: string } = {}): Promise<AlignmentRun> {
    const source = opts.source ?? 'run config';
    const config = validateConfig(RunConfigSchema, input, source);
    for (const [section, options] of [['rewardModel', config.rewardModel], ['sampling', config.sampling], ['sft', config.sft], ['dpo', config.dpo]] as const) {
      checkWorkers(options.workers, options.forceWorkers, source, { field: `${section}.workers`, forceFlag: `${section}.forceWorkers: true` });
    }
    const layout = new RunLayout(path.resolve(config.project), config.name);
    ensureDir(layout.project);
    const databaseBytes = fs.statSync(layout.database, { throwIfNoEntry: false })?.size;
    if (folderHasEntries(layout.runDir) && (databaseBytes === undefined || databaseBytes === 0)) throw unrecordedRunFolder(layout, databaseBytes);
    const lock = acquireRunLock(layout.project, config.name);
    let store: RunStore | undefined;
    try {
      store = RunStore.open(layout.database);
      if (store.getRun(config.name) === null && folderHasEntries(layout.runDir)) throw unrecordedRunFolder(layout, databaseBytes);
      store.createRun(config.name, config, sha256Json(config), { force: opts.force });
      const judge = config.preferences.judge ? await loadJudge(config.preferences.judge, config.preferences.judgeOptions, source) : undefined;
      ensureDir(layout.runDir);
      return new AlignmentRun(config, store, lock, judge, opts.source);
    } catch (err) {
      store?.close();
      lock.release();
      throw err;
    }
  }

  close(): void {
    this.store.close();
    this.lock.release();
  }

  /** Runs what `selection` names (default: every round), resuming where the run stopped. */
  async run(selection: RunSelection = {}, events: RunEvents = {}): Promise<void> {
    const { config, store } = this;
    const backend = await initBackend(config.backend);
    this.checkStagesFit(backend.name);
    // Before anything is redone or reused: the files of finished stages must be the ones recorded.
    this.verifyFinishedStages(selection);
    if (this.lock.takeoverNotice) events.onLine?.(this.lock.takeoverNotice);
    store.setRunStatus(config.name, 'running');
    try {
      // A kill while the prompt sets were being written leaves temporary files beside them.
      const promptsDir = path.dirname(this.layout.trainPrompts);
      if (fs.existsSync(promptsDir)) for (const f of fs.readdirSync(promptsDir)) if (f.includes('.tmp-')) fs.rmSync(path.join(promptsDir, f), { force: true });
      // Stages a killed process left running: back to pending, their partial folders removed.
      for (const reset of store.resetRunningStages(config.name)) {
        fs.rmSync(this.layout.stageDir(reset.roundIndex, reset.stage), { recursive: true, force: true });
        events.onStage?.({ round: reset.roundIndex, stage: reset.stage, status: 'reset' });
      }
      await writePromptSets(config, { train: this.layout.trainPrompts, heldout: this.layout.heldoutPrompts });
      const basePolicy = await this.ensureBase(events);
      // From here on the base model is what round 0 chose.
      const rounds = selection.round !== undefined ? [selection.round] : Array.from({ length: config.rounds }, (_, i) => i + 1);
      const stageNames = stagesOf(config);
      if (selection.stage !== undefined && !stageNames.includes(selection.stage)) {
        throw new Error(`--stage: this run's rounds have no stage "${selection.stage}" (${stageNames.join(', ')})`);
      }
      for (const round of rounds) {
        if (round < 1 || round > config.rounds) throw new Error(`round ${round}: the run has rounds 1..${config.rounds}`);
        if (selection.stage !== undefined) this.redoFrom(round, selection.stage);
        for (const stage of stageNames) {
          if (selection.stage !== undefined && stage !== selection.stage && store.stageStatus(config.name, round, stage) !== 'done') {
            // `--stage X`: earlier stages must be done already; later ones wait for a full run.
            if (stageNames.indexOf(stage) < stageNames.indexOf(selection.stage)) {
              throw new Error(`round ${round} stage ${selection.stage}: earlier stage ${stage} is not done; run \`tfalign round ${round}\` first`);
            }
            continue;
          }
          await this.runStage(round, stage, { basePolicy, bestPolicy: this.bestPolicyAfter(round - 1, basePolicy) }, events);
        }
        if (stageNames.every((stage) => store.stageStatus(config.name, round, stage) === 'done')) store.completeRound(config.name, round);
      }
      const finished = store.firstUnfinishedStage(config.name, config.rounds, stageNames) === null;
      store.setRunStatus(config.name, finished ? 'done' : 'created');
    } catch (err) {
      store.setRunStatus(config.name, 'failed');
      throw err;
    }
  }

  /**
   * `round N --stage X` on a finished stage: X and the later stages of that round used its
   * outputs, so all of them go back to pending and their folders are removed.
   */
  private redoFrom(round: number, stage: RoundStageName): void {
    const stageNames = stagesOf(this.config);
    for (const later of stageNames.slice(stageNames.indexOf(stage))) {
      if (this.store.stageStatus(this.config.name, round, later) === 'pending') continue;
      this.store.resetStage(this.config.name, round, later);
      fs.rmSync(this.layout.stageDir(round, later), { recursive: true, force: true });
    }
  }

  /** The base model: given, or built from scratch once by round 0's build_base stage. */
  private async ensureBase(events: RunEvents): Promise<string> {
    const { config } = this;
    if (config.base.model) return config.base.model;
    await this.runStage(0, BASE_STAGE, { basePolicy: '', bestPolicy: '' }, events);
    return this.recordedArtifactPath(0, BASE_STAGE, BASE_MODEL_ARTIFACT)!;
  }

  /** Where the store says a done stage put its artifact `name` (stages find each other's outputs only this way). */
  private recordedArtifactPath(round: number, stage: StageName, name: string): string | undefined {
    if (this.store.stageStatus(this.config.name, round, stage) !== 'done') return undefined;
    return this.store.artifacts(this.config.name, { round, stage }).find((a) => a.name === name)?.path;
  }

  /**
   * Every stage's training fits the machine (`checkTrainingFits`), checked against the base
   * model's dimensions before the first stage runs, so a batch size that cannot fit fails in
   * seconds, not after hours of earlier stages.
   */
  private checkStagesFit(backend: string): void {
    const { config } = this;
    const source = this.source ?? 'run config';
    let dims: ModelDims;
    if (config.base.model !== undefined) {
      dims = modelDims(loadModelConfig(config.base.model));
    } else {
      const spec = config.base.fromScratch!;
      const architecture = readJsonFile(spec.architecture) as Record<string, unknown>;
      dims = modelDims(parseLlamaConfig({ ...architecture, vocab_size: spec.vocabSize }, spec.architecture));
      const p = PretrainConfigSchema.parse({ ...spec.pretrain, model: '-', corpus: '-', out: '-' });
      checkTrainingFits(p, dims, { backend, length: p.seqLen, lengthField: 'seqLen', sequencesPerRow: 1 }, `${source}: base.fromScratch.pretrain`);
    }
    const rm = config.rewardModel;
    checkTrainingFits(rm, { ...dims, isRewardModel: true, rewardHead: rm.head }, { backend, length: rm.maxLength, lengthField: 'maxLength', sequencesPerRow: 3 }, `${source}: rewardModel`);
    checkTrainingFits(config.sft, dims, { backend, length: config.sft.maxLength, lengthField: 'maxLength', sequencesPerRow: 1 }, `${source}: sft`);
    const frozenModels = config.dpo.referenceMode === 'resident' && config.dpo.lora === undefined ? 1 : 0;
    checkTrainingFits(config.dpo, dims, { backend, length: config.dpo.maxLength, lengthField: 'maxLength', sequencesPerRow: 2, frozenModels }, `${source}: dpo`);
  }

  /**
   * The quick integrity check of every finished stage's artifacts (size, file count, mtime; see
   * `artifactProblem`), except the stages `selection` is about to redo. A mismatch is an error
   * naming the artifact and the command that redoes its stage.
   */
  private verifyFinishedStages(selection: RunSelection): void {
    const { config, store } = this;
    const stageNames: readonly string[] = stagesOf(config);
    const redone = (round: number, stage: string) =>
      selection.stage !== undefined && round === selection.round && stageNames.indexOf(stage) >= stageNames.indexOf(selection.stage);
    const done = new Set(store.stages(config.name).filter((s) => s.status === 'done').map((s) => `${s.roundIndex}/${s.name}`));
    for (const a of store.artifacts(config.name)) {
      if (!done.has(`${a.roundIndex}/${a.stage}`) || redone(a.roundIndex, a.stage)) continue;
      const problem = artifactProblem(a, 'quick');
      if (problem === null) continue;
      const configFlag = this.source !== undefined ? ` --config ${this.source}` : '';
      const redo =
        a.roundIndex === 0
          ? 'every round was built on it: restore it, or start the run over under a new name'
          : `restore it, or redo the stage with \`tfalign round ${a.roundIndex}${configFlag} --stage ${a.stage}\` (its later stages in round ${a.roundIndex} are redone too)`;
      throw new Error(`artifact "${a.name}" of ${a.roundIndex === 0 ? 'the base model' : `round ${a.roundIndex}`} stage ${a.stage} (${a.path}) ${problem}; ${redo}`);
    }
  }

  /** The best policy after `round` (what its evaluate stage chose; the store is its one record), or the base before round 1. */
  bestPolicyAfter(round: number, basePolicy: string): string {
    return (round >= 1 ? this.store.bestPolicyAfter(this.config.name, round) : null) ?? basePolicy;
  }

  /**
   * One stage's lifecycle, the same for every stage: skipped when done; else its folder emptied,
   * marked running, run, and marked done in the transaction that records its artifacts, metrics
   * and (evaluate, build_base) the policy it chose — or marked failed with its error.
   */
  private async runStage(round: number, stage: StageName, policies: { basePolicy: string; bestPolicy: string }, events: RunEvents): Promise<void> {
    const { config, store } = this;
    if (store.stageStatus(config.name, round, stage) === 'done') {
      events.onStage?.({ round, stage, status: 'skipped' });
      return;
    }
    const outDir = this.layout.stageDir(round, stage);
    fs.rmSync(outDir, { recursive: true, force: true });
    ensureDir(outDir);
    events.onStage?.({ round, stage, status: 'start' });
    const started = performance.now();
    store.startStage(config.name, round, stage);
    const trainMetrics: { step: number; name: string; value: number }[] = [];
    const ctx: StageContext = {
      config,
      layout: this.layout,
      round,
      judge: this.judge,
      ...policies,
      outDir,
      artifactPath: (r, s, name) => this.recordedArtifactPath(r, s, name),
      log: (line) => events.onLine?.(line),
      onTrainLog: (record) => {
        trainMetrics.push(...trainRecordMetrics(stage, record));
        events.onTrainLog?.(round, stage, record);
      },
    };
    let output: StageOutput;
    try {
      output = await STAGES[stage](ctx);
      if (output.samples) {
        store.addSamples(config.name, output.samples.map((s) => ({ roundIndex: round, stage, promptId: s.promptId, prompt: s.prompt, sampleIndex: s.index, text: s.text, reward: s.reward, numTokens: s.numTokens, finishReason: s.finishReason, selected: s.selected })));
      }
      // Imported annotations are already in the store (unless a reset removed them with the stage).
      if (output.preferences && store.preferences(config.name, { round }).length === 0) {
        store.addPreferences(config.name, output.preferences.map((p) => ({
          roundIndex: round, stage, promptId: p.id ?? null, prompt: typeof p.prompt === 'string' ? p.prompt : JSON.stringify(p.prompt),
          chosen: p.chosen, rejected: p.rejected, edited: p.edited ?? null, strength: p.strength ?? 'better', source: config.preferences.source,
        })));
      }
      store.completeStage(
        config.name, round, stage,
        output.artifacts.map((a) => artifact(a.kind, a.name, a.path, a.numRows)),
        [...trainMetrics, ...metricRows(output.metrics)],
        output.bestPolicy !== undefined ? { bestPolicyPath: output.bestPolicy } : {},
      );
      if (round === 0) store.completeRound(config.name, 0);
    } catch (err) {
      store.failStage(config.name, round, stage, (err as Error).message);
      throw err;
    }
    events.onStage?.({ round, stage, status: 'done', seconds: (performance.now() - started) / 1000 });
  }
}

function artifact(kind: 'checkpoint' | 'dataset' | 'report', name: string, target: string, numRows?: number) {
  const { sha256, bytes, numFiles, mtimeMs } = digestArtifact(target);
  return { kind, name, path: target, sha256, bytes, numFiles, mtimeMs, ...(numRows !== undefined ? { numRows } : {}) };
}

/** True when `dir` exists and holds anything. */
function folderHasEntries(dir: string): boolean {
  try {
    return fs.readdirSync(dir).length > 0;
  } catch {
    return false;
  }
}

/** The error for a run folder with outputs that the database does not know (emptied, deleted or replaced). */
function unrecordedRunFolder(layout: RunLayout, databaseBytes: number | undefined): Error {
  const database = databaseBytes === undefined ? `there is no ${layout.database}` : databaseBytes === 0 ? `${layout.database} is empty (0 bytes)` : `${layout.database} has no run "${layout.name}"`;
  return new Error(
    `${layout.runDir} holds the outputs of run "${layout.name}", but ${database}: the database was deleted, emptied or replaced. ` +
      `Restore it from a backup, or move ${layout.runDir} aside to start the run over; nothing was changed`,
  );
}

/** A trainer's log record as step metrics named `<stage>/<split>/<name>`. */
function trainRecordMetrics(stage: string, record: LogRecord): { step: number; name: string; value: number }[] {
  return Object.entries(record)
    .filter(([name, value]) => typeof value === 'number' && name !== 'step' && name !== 'total_steps')
    .map(([name, value]) => ({ step: record.step, name: `${stage}/${record.split}/${name}`, value: value as number }));
}

function metricRows(metrics: Record<string, number>): { name: string; value: number; step: null }[] {
  return Object.entries(metrics).map(([name, value]) => ({ name, value, step: null }));
}

export type { StageName };
