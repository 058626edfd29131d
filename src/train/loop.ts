/**
 * The step loop every trainer runs: schedule → step (compute, reduce, clip, apply) → log →
 * evaluate → checkpoint, with resume from the latest checkpoint of the run folder. It knows
 * nothing of the model's task: a trainer supplies micro-batches and a loss function. Like
 * minGPT's trainer, extensions hook in by callbacks (`onLog`).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { LlamaModel } from '../model/llama.js';
import { loadPretrained } from '../model/pretrained.js';
import { attachedAdapters } from '../model/lora.js';
import { restoreAdapterWeights } from '../model/peft.js';
import { quantizationOf } from '../model/quantization/quantize-model.js';
import type { TrainingOptions } from '../config/training.js';
import { learningRateAt } from './schedule.js';
import { Rng } from '../util/rng.js';
import type { StepEngine } from './step-engine.js';
import { claimRunFolder, saveFinalModel, listCheckpoints, loadCheckpointState, saveCheckpoint, type RunFolderOwner } from './checkpoint.js';
import { ensureDir } from '../util/atomic.js';

/**
 * A quantized model trains only as QLoRA (Dettmers et al. 2023): LoRA adapters over frozen 8-bit
 * weights, with weight-only quantization (per-token activation quantization has no gradient).
 */
function checkQuantizedTraining(model: LlamaModel): void {
  const quantization = quantizationOf(model);
  if (!quantization) return;
  if (!attachedAdapters(model)) throw new Error('train: the model is quantized (8-bit weights are frozen); set lora to train adapters over it (QLoRA), or train the full-precision model and quantize the result');
  if (quantization.options.activations !== 'none') {
    throw new Error(`train: the model's activations are quantized too (${quantization.options.scheme}, activations ${quantization.options.activations}), which has no gradient; LoRA over 8-bit weights needs weight-only quantization (tfalign quantize --weights-only)`);
  }
}

export const METRICS_FILE = 'metrics.jsonl';

export interface LogRecord {
  step: number;
  split: 'train' | 'eval';
  [name: string]: number | string;
}

export interface TrainingLoopArgs<B> {
  /** Run folder: the final model itself (its HF files), beside checkpoint-N/ and metrics.jsonl. */
  runDir: string;
  model: LlamaModel;
  options: TrainingOptions;
  /** Total optimizer steps. */
  numSteps: number;
  /** The micro-batches of optimizer step `step`; a pure function of the step, so resume replays nothing. */
  batchesAt: (step: number) => B[];
  /** Tokens a micro-batch feeds through the model (for tokens/s). */
  numTokensOf: (batch: B) => number;
  /** Held-out metrics (names without prefix; logged as eval). */
  evaluate?: () => Record<string, number>;
  /** Tokenizer files to copy into checkpoints and the final model. */
  tokenizerDir?: string;
  /** Continue from the latest checkpoint in runDir. */
  resume?: boolean;
  /** Called for every log record (progress bars, rounds' SQLite metrics). */
  onLog?: (record: LogRecord) => void;
  /**
   * Where the objective's gradients are computed and applied (`createStepEngine`: this thread or
   * data-parallel workers, both running the trainer's task). The caller closes it.
   */
  engine: StepEngine<B>;
  /**
   * The trainer and starting model that own `runDir` (`claimRunFolder`): the folder is claimed
   * before anything is written into it. Left out by callers that own the folder already.
   */
  owner?: RunFolderOwner;
}

export interface TrainingResult {
  /** The final model folder: runDir itself (its HF files beside checkpoint-N/ and metrics.jsonl). */
  modelDir: string;
  /** Last train record and last eval metrics. */
  lastTrain?: LogRecord;
  lastEval?: LogRecord;
  numSteps: number;
  /** Mean tokens/s over the steps this process ran. */
  tokensPerSecond: number;
}

/** Number of optimizer steps for `numRows` rows under the options (epochs or maxSteps). */
export function numTrainingSteps(numRows: number, o: TrainingOptions): number {
  if (o.maxSteps !== undefined) return o.maxSteps;
  return Math.max(1, Math.ceil((numRows / o.batchSize) * o.epochs));
}

/** Splits a global batch of rows into micro-batches of `microBatchSize`. */
export function microBatches<R>(rows: R[], o: TrainingOptions): R[][] {
  const size = o.microBatchSize ?? o.batchSize;
  const out: R[][] = [];
  for (let i = 0; i < rows.length; i += size) out.push(rows.slice(i, i + size));
  return out;
}

/**
 * Row indices of optimizer step `step`: epochs are seeded shuffles of all rows, laid end to end,
 * so any step's batch is known without replaying the ones before it.
 */
export function batchIndicesAt(step: number, numRows: number, batchSize: number, seed: number): number[] {
  const out: number[] = [];
  let cursor = step * batchSize;
  let epoch = -1;
  let order: number[] = [];
  while (out.length < batchSize) {
    const e = Math.floor(cursor / numRows);
    if (e !== epoch) {
      epoch = e;
      order = Array.from({ length: numRows }, (_, i) => i);
      new Rng(seed).fork(e).shuffle(order);
    }
    out.push(order[cursor % numRows]);
    cursor++;
  }
  return out;
}

function appendMetrics(runDir: string, record: LogRecord): void {
  fs.appendFileSync(path.join(runDir, METRICS_FILE), JSON.stringify(record) + '\n');
}

/** On resume, drops metric lines after the checkpoint's step (they will be produced again). */
function truncateMetrics(runDir: string, step: number): void {
  const file = path.join(runDir, METRICS_FILE);
  if (!fs.existsSync(file)) return;
  const kept = fs
    .readFileSync(file, 'utf8')
    .split('\n')
    .filter((line) => line.trim() !== '')
    .filter((line) => {
      try {
        return (JSON.parse(line) as LogRecord).step <= step;
      } catch {
        return false;
      }
    });
  fs.writeFileSync(file, kept.map((l) => l + '\n').join(''));
}

/** Copies a checkpoint's weights into the model's variables (with LoRA: the adapters and a score head). */
async function restoreWeights(model: LlamaModel, dir: string): Promise<void> {
  const adapters = attachedAdapters(model);
  if (adapters) return restoreAdapterWeights(model, adapters, dir);
  const saved = await loadPretrained(dir);
  for (const [name, variable] of model.params) variable.assign(saved.params.get(name)!);
  saved.dispose();
}

export async function runTrainingLoop<B>(args: TrainingLoopArgs<B>): Promise<TrainingResult> {
  const { runDir, model, options: o, numSteps } = args;
  // 8-bit weights have no gradient (they live outside tfjs) and per-token activation quantization cuts the tape.
  checkQuantizedTraining(model);
  if ((o.microBatchSize ?? o.batchSize) > o.batchSize || o.batchSize % (o.microBatchSize ?? o.batchSize) !== 0) {
    throw new Error(`train: microBatchSize ${o.microBatchSize} must divide batchSize ${o.batchSize}`);
  }
  if (args.owner !== undefined) claimRunFolder(runDir, args.owner, { resume: args.resume === true, overwrite: o.overwrite === true });
  else ensureDir(runDir);
  const { engine } = args;
  const schedule = { lr: o.lr, warmupSteps: Math.round(o.warmupRatio * numSteps), totalSteps: numSteps, decay: o.lrDecay, minLrRatio: o.minLrRatio };

  // With LoRA the checkpoints and the final model are PEFT adapter folders over this base.
  const baseModel = args.owner?.model ?? args.tokenizerDir;
  const adapters = attachedAdapters(model);
  if (adapters && baseModel === undefined) throw new Error('train: a LoRA run needs its base model folder (owner.model) to write adapter folders');

  // 1) resume: weights, optimizer moments and step from the latest complete checkpoint
  let startStep = 0;
  const existing = listCheckpoints(runDir);
  if (args.resume && existing.length > 0) {
    const latest = existing[existing.length - 1];
    await restoreWeights(model, latest.dir);
    startStep = loadCheckpointState(latest.dir, engine.optimizer, model).globalStep;
    truncateMetrics(runDir, startStep);
  } else if (!args.resume) {
    fs.rmSync(path.join(runDir, METRICS_FILE), { force: true });
  }

  const log = (record: LogRecord) => {
    appendMetrics(runDir, record);
    args.onLog?.(record);
  };
  const runEval = (step: number): LogRecord | undefined => {
    if (!args.evaluate) return undefined;
    const record: LogRecord = { step, split: 'eval', ...args.evaluate() };
    log(record);
    return record;
  };
  const save = (step: number) =>
    saveCheckpoint(runDir, {
      model,
      optimizer: engine.optimizer,
      state: { globalStep: step, epoch: 0, samplesSeen: step * o.batchSize, rngState: new Rng(o.seed).state() },
      tokenizerDir: args.tokenizerDir,
      saveTotalLimit: o.saveTotalLimit,
      baseModel,
    });

  // 2) train
  let lastTrain: LogRecord | undefined;
  let lastEval: LogRecord | undefined;
  let windowTokens = 0;
  let windowStart = performance.now();
  let totalTokens = 0;
  const runStart = performance.now();
  for (let step = startStep; step < numSteps; step++) {
    const batches = args.batchesAt(step);
    const lr = learningRateAt(step, schedule);
    const result = await engine.step(batches, lr);
    if (!Number.isFinite(result.loss)) throw new Error(`train: loss is ${result.loss} at step ${step + 1} (lr ${lr.toExponential(2)}); lower the learning rate or check the data`);
    const tokens = batches.reduce((a, b) => a + args.numTokensOf(b), 0);
    windowTokens += tokens;
    totalTokens += tokens;
    const done = step + 1;
    if (done % o.logEvery === 0 || done === numSteps) {
      const seconds = (performance.now() - windowStart) / 1000;
      lastTrain = { step: done, split: 'train', total_steps: numSteps, loss: result.loss, lr, grad_norm: result.gradNorm, tokens_per_s: windowTokens / seconds, ...result.metrics };
      log(lastTrain);
      windowTokens = 0;
      windowStart = performance.now();
    }
    if (o.evalEvery > 0 && done % o.evalEvery === 0 && done !== numSteps) lastEval = runEval(done) ?? lastEval;
    if (o.saveEvery > 0 && done % o.saveEvery === 0 && done !== numSteps) await save(done);
  }
  // 3) final evaluation, checkpoint and model
  lastEval = runEval(numSteps) ?? lastEval;
  if (o.saveEvery > 0) await save(numSteps);
  const modelDir = runDir; // the run folder is the final model (TRL's output_dir), checkpoints beside it
  await saveFinalModel(model, modelDir, { tokenizerDir: args.tokenizerDir, baseModel }); // with LoRA: a PEFT adapter folder
  const seconds = (performance.now() - runStart) / 1000;
  return { modelDir, lastTrain, lastEval, numSteps, tokensPerSecond: totalTokens / Math.max(seconds, 1e-9) };
}
