/**
 * Reward-model recipe (Llama 3, arXiv 2407.21783 §4.1.2): a causal LM gets a scalar score head
 * (`LlamaForSequenceClassification`, `num_labels: 1`) and learns to rank the responses to one
 * prompt with Bradley–Terry, edited > chosen > rejected. Reads top to bottom: validate → setup
 * (tokenizer → data → model) → train → save.
 *
 * Data: preference rows, kept only when their strength is allowed (Llama 3 trains on
 * `significantly_better` and `better` pairs only); a row without a strength counts as `better`.
 *
 * Batch layout: for a micro-batch of P preference rows with R_i responses each (2, or 3 when the
 * row has an edit), all Σ R_i prompt+response sequences are stacked, row by row and best first,
 * into one right-padded [N, T] batch; each sequence's reward is read at its last real token (its
 * end-of-turn token), and the rewards are gathered into a [P, R] matrix whose columns are
 * (edited, chosen, rejected) when any row has an edit (R = 3, a missing edit masked out of the
 * `validMask`) and (chosen, rejected) otherwise (R = 2).
 *
 * Loss: with an edit in the micro-batch, `rankingLoss` over every ordered pair of the ranking (a
 * row with an edit gives 3 pairs, one without gives 1); otherwise `bradleyTerryLoss`, with Llama 2's
 * per-strength margin when `margin` is on. Either way the micro-batch loss is the mean over its
 * pairs and its weight is the number of pairs, so accumulated micro-batches give the mean over
 * the global batch's pairs. (`rankingLoss` averages per row, as Ouyang et al. 2022 do; we weight
 * each row's mean by its number of pairs to get the mean over pairs.)
 *
 * Metrics, on train (logged every `logEvery` steps) and on the held-out split: `accuracy`, the
 * fraction of rows whose chosen reward beats the rejected one, and `margin`, the mean r_c − r_r
 * (the Llama 3 comparison; edits do not enter them). With gradient accumulation the train
 * metrics of micro-batches are combined in proportion to their pairs; the eval metrics are exact.
 */
import * as tf from '@tensorflow/tfjs';
import { z } from 'zod';
import { LLAMA3_POST_TRAINING, trainingOptionsSchema } from '../config/training.js';
import { validateConfig } from '../config/load.js';
import { loadConfig as loadModelConfig, loadPretrained } from '../model/pretrained.js';
import { modelDims } from '../model/config.js';
import { toRewardModel } from '../model/weights.js';
import type { LlamaModel } from '../model/llama.js';
import { FullAttention } from '../model/attention.js';
import { Tokenizer } from '../tokenizer/tokenizer.js';
import { readJsonl } from '../../data/jsonl.js';
import { filterByStrength, PreferenceRowSchema, STRENGTHS, type Strength } from '../../data/rows.js';
import { TokenizeOptionsSchema, TokenizeReport, tokenizePreferenceRow, type TokenizedPreference, type TokenizeOptions } from '../../data/tokenize.js';
import { padRows, type TokenBatch } from '../../data/collate.js';
import { bradleyTerryLoss, rankingLoss, strengthMargins } from '../../losses/reward.js';
import { batchIndicesAt, microBatches, numTrainingSteps, runTrainingLoop, type LogRecord, type TrainingResult } from '../train/loop.js';
import type { MicroBatchLoss, StepEngine } from '../train/step-engine.js';
import { Rng } from '../train/seed.js';
import { initBackend } from '../backend.js';
import { checkTrainingFits } from '../config/limits.js';
import { createTrainerEngine } from '../parallel/factory.js';
import { lastTokenIndex } from './reward-scoring.js';
import { REWARD_MODEL_TASK_KIND, rewardTaskOptions } from './reward-task.js';

/** Llama 3 trains its reward model on these strengths only (§4.2.1). */
export const LLAMA3_RM_STRENGTHS: readonly Strength[] = ['significantly_better', 'better'];

export const RewardConfigSchema = trainingOptionsSchema(LLAMA3_POST_TRAINING).extend({
  model: z
    .string()
    .min(1)
    .describe('Model folder (HF layout): a causal LM, which gets a new score head (LlamaForSequenceClassification), or a reward model to continue training.'),
  train: z.string().min(1).describe('JSONL preference rows {prompt, chosen, rejected, edited?, strength?}.'),
  eval: z.string().min(1).optional().describe('JSONL preference rows held out for evaluation (same strength filter). Default: evalFraction of the training rows.'),
  out: z.string().min(1).describe('Run folder: checkpoints, metrics.jsonl, and the final reward model in out/model.'),
  maxPromptLength: TokenizeOptionsSchema.shape.maxPromptLength,
  maxLength: TokenizeOptionsSchema.shape.maxLength,
  chat: TokenizeOptionsSchema.shape.chat,
  parseSpecialTokens: TokenizeOptionsSchema.shape.parseSpecialTokens,
  strengths: z
    .array(z.enum(STRENGTHS))
    .min(1)
    .default([...LLAMA3_RM_STRENGTHS])
    .describe(`Strengths of the pairs trained on, any of ${STRENGTHS.join(' | ')}; default significantly_better and better, as in Llama 3. A row without a strength counts as better.`),
  margin: z
    .boolean()
    .default(false)
    .describe('Llama 2\'s per-strength margin m in −log σ(r_c − r_r − m); Llama 3 removed it (default false). Defined for chosen/rejected pairs only: rows with an edited response are then refused.'),
  centeringCoefficient: z
    .number()
    .min(0)
    .default(0)
    .describe('Reward centering c · (r_c + r_r)² per pair (Eisenstein et al. 2023; TRL suggests 0.01); 0 disables.'),
  skipInvalid: z.boolean().default(false).describe('Skip rows that are not valid JSON or fail the schema (counted in the summary) instead of stopping at the first.'),
  resume: z.boolean().default(false).describe('Continue from the latest checkpoint in `out`.'),
});
export type RewardConfigInput = z.input<typeof RewardConfigSchema>;
export type RewardConfig = z.infer<typeof RewardConfigSchema>;

/** A tokenized preference row and where it came from (`FILE:LINE`, for errors). */
export interface PreferenceExample extends TokenizedPreference {
  source: string;
}

/** What happened to the rows of one preference file. */
export interface PreferenceDataSummary {
  file: string;
  /** Valid rows read. */
  numRows: number;
  /** Rows skipped as invalid (`skipInvalid`). */
  numInvalid: number;
  /** Rows dropped by the strength filter. */
  numOtherStrengths: number;
  /** Rows kept after tokenization, per strength. */
  numByStrength: Partial<Record<Strength, number>>;
  /** Tokenization: kept, dropped (too long) and truncated prompts, as one line. */
  tokenization: string;
  /** Rows kept. */
  numExamples: number;
  /** Kept rows with an edited response. */
  numEdited: number;
  /** Ordered pairs they give: 3 per row with an edit, 1 per row without. */
  numPairs: number;
}

/** One line: `data/train.jsonl: 100 rows, 20 of other strengths, 80 rows: 78 kept, … → 78 examples (12 edited), 102 pairs`. */
export function describePreferenceData(s: PreferenceDataSummary): string {
  const invalid = s.numInvalid > 0 ? `, ${s.numInvalid} invalid skipped` : '';
  return `${s.file}: ${s.numRows} rows${invalid}, ${s.numOtherStrengths} of other strengths; ${s.tokenization} → ${s.numExamples} examples (${s.numEdited} edited), ${s.numPairs} pairs`;
}

export interface ReadPreferenceOptions extends TokenizeOptions {
  strengths: readonly Strength[];
  skipInvalid: boolean;
}

/** Number of ordered pairs a ranking of `numResponses` responses gives: C(R, 2). */
function numPairsOf(numResponses: number): number {
  return (numResponses * (numResponses - 1)) / 2;
}

/**
 * Reads a preference file, keeps the rows of the allowed strengths and tokenizes them (prompts
 * truncated from the front, rows too long for `maxLength` dropped and counted).
 */
export async function readPreferenceData(
  file: string,
  tokenizer: Tokenizer,
  opts: ReadPreferenceOptions,
): Promise<{ examples: PreferenceExample[]; summary: PreferenceDataSummary }> {
  const { rows, numSkipped } = await readJsonl(file, PreferenceRowSchema, { skipInvalid: opts.skipInvalid });
  const allowed = filterByStrength(
    rows.map((r) => ({ ...r, strength: r.value.strength })),
    opts.strengths,
  );
  const report = new TokenizeReport();
  const examples: PreferenceExample[] = [];
  const numByStrength: Partial<Record<Strength, number>> = {};
  for (const { line, value } of allowed) {
    const source = `${file}:${line}`;
    let tokenized: TokenizedPreference | undefined;
    try {
      tokenized = tokenizePreferenceRow(tokenizer, value, opts, report);
    } catch (err) {
      throw new Error(`${source}: prompt: ${(err as Error).message}`);
    }
    if (tokenized === undefined) continue;
    examples.push({ ...tokenized, source });
    numByStrength[tokenized.strength] = (numByStrength[tokenized.strength] ?? 0) + 1;
  }
  const numEdited = examples.filter((e) => e.hasEdited).length;
  return {
    examples,
    summary: {
      file,
      numRows: rows.length,
      numInvalid: numSkipped,
      numOtherStrengths: rows.length - allowed.length,
      numByStrength,
      tokenization: report.summary(),
      numExamples: examples.length,
      numEdited,
      numPairs: examples.reduce((n, e) => n + numPairsOf(e.responses.length), 0),
    },
  };
}

/** A micro-batch of preference rows, collated (see the batch layout at the top of this file). */
export interface PreferenceBatch {
  /** Every response of every row, row by row and best first, after its prompt: [N, T], right-padded. */
  sequences: TokenBatch;
  /** [N] index of each sequence's last real token, where its reward is read. */
  lastIndex: Int32Array;
  /** P, the preference rows. */
  numRows: number;
  /** R, the reward matrix's columns: 3 (edited, chosen, rejected) when a row has an edit, else 2 (chosen, rejected). */
  numRanks: number;
  /** [P·R] row-major: the sequence holding rank r of row p (a missing edit points at the row's chosen, masked). */
  rankSequence: Int32Array;
  /** [P·R] 1 where the response exists. */
  validMask: Float32Array;
  /** [P] ordered pairs per row: 3 with an edit, 1 without. */
  pairsPerRow: Float32Array;
  /** [P] strength of each row's chosen/rejected pair (for margins). */
  strengths: Strength[];
  /** Σ pairsPerRow: the loss's units. */
  numPairs: number;
  /**
   * Set on a row range of a micro-batch split across data-parallel workers (`reward-task.ts`):
   * the whole micro-batch's rows and pairs, so that the parts' metrics, combined in proportion to
   * their pairs, give the whole's per-row means.
   */
  whole?: { numRows: number; numPairs: number };
}

/** Stacks the responses of `rows` into one batch (layout at the top of this file). */
export function collatePreferences(rows: readonly TokenizedPreference[], padId: number): PreferenceBatch {
  if (rows.length === 0) throw new Error('rm train: a micro-batch needs at least one preference row');
  const numRanks = rows.some((r) => r.responses.length === 3) ? 3 : 2;
  const sequences: number[][] = [];
  const rankSequence = new Int32Array(rows.length * numRanks);
  const validMask = new Float32Array(rows.length * numRanks);
  const pairsPerRow = new Float32Array(rows.length);
  rows.forEach((row, p) => {
    const first = sequences.length;
    for (const response of row.responses) sequences.push([...row.promptIds, ...response]);
    const numMissing = numRanks - row.responses.length; // a row without an edit, in a batch with one
    for (let r = 0; r < numRanks; r++) {
      const present = r >= numMissing;
      rankSequence[p * numRanks + r] = present ? first + r - numMissing : first; // missing → chosen (masked)
      validMask[p * numRanks + r] = present ? 1 : 0;
    }
    pairsPerRow[p] = numPairsOf(row.responses.length);
  });
  return {
    sequences: padRows(sequences.map((ids) => ({ ids, targetMask: ids.map(() => 0) })), padId),
    lastIndex: lastTokenIndex(sequences),
    numRows: rows.length,
    numRanks,
    rankSequence,
    validMask,
    pairsPerRow,
    strengths: rows.map((r) => r.strength),
    numPairs: pairsPerRow.reduce((a, b) => a + b, 0),
  };
}

/** The reward of every response of the batch: [P, R], columns best first (see `PreferenceBatch`). */
export function rewardMatrix(model: LlamaModel, batch: PreferenceBatch): tf.Tensor2D {
  return tf.tidy(() => {
    const { sequences: s } = batch;
    const ctx = new FullAttention({ batchSize: s.batchSize, seqLen: s.seqLen, segmentIds: s.segmentIds });
    const hidden = model.forward(tf.tensor2d(s.inputIds, [s.batchSize, s.seqLen], 'int32'), ctx); // [N, T, C]
    const rewards = model.rewards(hidden, batch.lastIndex); // [N]
    const ranked = tf.gather(rewards, tf.tensor1d(batch.rankSequence, 'int32')); // [P·R]
    return tf.reshape(ranked, [batch.numRows, batch.numRanks]) as tf.Tensor2D; // [P, R]
  });
}

/** Chosen-vs-rejected comparisons of a [P, R] reward matrix read to the host. */
function chosenRejectedCounts(values: ArrayLike<number>, numRows: number, numRanks: number): { numCorrect: number; sumGap: number } {
  let numCorrect = 0;
  let sumGap = 0;
  for (let p = 0; p < numRows; p++) {
    const gap = values[p * numRanks + numRanks - 2] - values[p * numRanks + numRanks - 1]; // r_c − r_r
    if (gap > 0) numCorrect++;
    sumGap += gap;
  }
  return { numCorrect, sumGap };
}

export interface RewardLossConfig {
  /** Llama 2's per-strength margin (Bradley–Terry only). */
  margin: boolean;
  /** c in c · (r_c + r_r)² per pair. */
  centeringCoefficient: number;
}

/**
 * The micro-batch loss: mean over its ordered pairs of −log σ(r_better − r_worse [− m]), plus
 * centering; weight = number of pairs; metrics `accuracy` and `margin` over chosen vs rejected.
 */
export function rewardModelLoss(model: LlamaModel, batch: PreferenceBatch, opts: RewardLossConfig): MicroBatchLoss {
  if (batch.numRanks === 3 && opts.margin) throw new Error('rm train: margin is defined for chosen/rejected pairs only; this batch has an edited response');
  const centering = { centeringCoefficient: opts.centeringCoefficient };
  let counts = { numCorrect: 0, sumGap: 0 };
  // tidy keeps only the loss; the gradient tape still records every op inside it
  const loss = tf.tidy(() => {
    const rewards = rewardMatrix(model, batch); // [P, R]
    counts = chosenRejectedCounts(rewards.dataSync(), batch.numRows, batch.numRanks);
    if (batch.numRanks === 3) {
      const ranking = rankingLoss(rewards, tf.tensor2d(batch.validMask, [batch.numRows, 3]), centering);
      // per-row means × pairs per row / all pairs = the mean over pairs
      return tf.div(tf.sum(tf.mul(ranking.losses, tf.tensor1d(batch.pairsPerRow))), batch.numPairs) as tf.Scalar;
    }
    const chosenRewards = tf.reshape(tf.slice(rewards, [0, 0], [batch.numRows, 1]), [batch.numRows]) as tf.Tensor1D; // [P]
    const rejectedRewards = tf.reshape(tf.slice(rewards, [0, 1], [batch.numRows, 1]), [batch.numRows]) as tf.Tensor1D; // [P]
    const margins = opts.margin ? strengthMargins(batch.strengths) : undefined; // [P]
    return tf.mean(bradleyTerryLoss({ chosenRewards, rejectedRewards, margins }, centering).losses) as tf.Scalar;
  });
  // Metrics are means over rows, but micro-batches combine in proportion to pairs: a part of a
  // split micro-batch divides by the whole's rows and rescales by whole pairs / own pairs, so the
  // pair-weighted combination of the parts is exactly the whole's mean.
  const { whole } = batch;
  const rowMean = (sum: number) => (whole ? (sum * whole.numPairs) / (batch.numPairs * whole.numRows) : sum / batch.numRows);
  return { loss, weight: batch.numPairs, metrics: { accuracy: rowMean(counts.numCorrect), margin: rowMean(counts.sumGap) } };
}

/** Held-out metrics: mean pair loss, chosen-vs-rejected `accuracy` and `margin`, without gradients. */
export function evaluateRewardModel(
  model: LlamaModel,
  batches: readonly PreferenceBatch[],
  opts: RewardLossConfig,
): { loss: number; accuracy: number; margin: number; num_rows: number; num_pairs: number } {
  let sumLoss = 0;
  let numPairs = 0;
  let numRows = 0;
  let numCorrect = 0;
  let sumGap = 0;
  for (const batch of batches) {
    const { loss, metrics } = tf.tidy(() => {
      const out = rewardModelLoss(model, batch, opts);
      return { loss: out.loss.dataSync()[0], metrics: out.metrics! };
    });
    sumLoss += loss * batch.numPairs;
    numPairs += batch.numPairs;
    numRows += batch.numRows;
    numCorrect += metrics.accuracy * batch.numRows;
    sumGap += metrics.margin * batch.numRows;
  }
  return { loss: sumLoss / numPairs, accuracy: numCorrect / numRows, margin: sumGap / numRows, num_rows: numRows, num_pairs: numPairs };
}

export interface RewardStartInfo {
  numSteps: number;
  numTrainRows: number;
  numEvalRows: number;
  /** What happened to the rows of the training (and eval) file. */
  data: { train: PreferenceDataSummary; eval?: PreferenceDataSummary };
  /** Held-out metrics of the model before training (absent on resume or without eval rows). */
  initialEval?: Record<string, number>;
}

export interface RewardTrainerHooks {
  onLog?: (record: LogRecord) => void;
  /** Called once before training. */
  onStart?: (info: RewardStartInfo) => void;
}

export interface RewardTrainingResult extends TrainingResult {
  data: RewardStartInfo['data'];
  /** Held-out metrics before training, for contrast with `lastEval`. */
  initialEval?: Record<string, number>;
}

export async function trainRewardModel(input: RewardConfigInput, hooks: RewardTrainerHooks = {}): Promise<RewardTrainingResult> {
  // 1) validate: the config, and that the rows can fit the model's context
  const config = validateConfig(RewardConfigSchema, input, 'rm train config');
  const dims = modelDims(loadModelConfig(config.model));
  if (config.maxLength > dims.maxPositions) {
    throw new Error(`rm train: maxLength ${config.maxLength} exceeds the model's max_position_embeddings ${dims.maxPositions}; set maxLength ≤ ${dims.maxPositions}`);
  }
  const backend = await initBackend(config.backend);
  checkTrainingFits(config, { ...dims, isRewardModel: true }, { backend: backend.name, length: config.maxLength, lengthField: 'maxLength', sequencesPerRow: 3 }, 'rm train config');

  // 2) setup: tokenizer → data → model. Data before weights, so a bad row fails in seconds.
  const tokenizer = await Tokenizer.fromFolder(config.model);
  const readOpts: ReadPreferenceOptions = { maxPromptLength: config.maxPromptLength, maxLength: config.maxLength, chat: config.chat, parseSpecialTokens: config.parseSpecialTokens, strengths: config.strengths, skipInvalid: config.skipInvalid };
  const train = await readPreferenceData(config.train, tokenizer, readOpts);
  const evalData = config.eval !== undefined ? await readPreferenceData(config.eval, tokenizer, readOpts) : undefined;
  if (config.margin) {
    const edited = [...train.examples, ...(evalData?.examples ?? [])].find((e) => e.hasEdited);
    if (edited) throw new Error(`${edited.source}: edited: margin (Llama 2) is defined for chosen/rejected pairs only; set margin: false or drop the edited responses`);
  }
  let trainRows: PreferenceExample[] = train.examples;
  let evalRows: PreferenceExample[] = evalData?.examples ?? [];
  if (evalData === undefined && config.evalFraction > 0) {
    const shuffled = [...train.examples];
    new Rng(config.seed).shuffle(shuffled);
    const numEval = Math.max(1, Math.round(shuffled.length * config.evalFraction));
    evalRows = shuffled.slice(0, numEval);
    trainRows = shuffled.slice(numEval);
  }
  if (trainRows.length === 0) {
    throw new Error(`rm train: ${describePreferenceData(train.summary)}: no training rows left${evalData === undefined ? ' after holding out evalFraction' : ''}`);
  }
  if (evalData !== undefined && evalRows.length === 0) throw new Error(`rm train: ${describePreferenceData(evalData.summary)}: no eval rows left`);

  const padId = tokenizer.padTokenId ?? tokenizer.eotTokenId ?? 0;
  const microSize = config.microBatchSize ?? config.batchSize;
  const evalBatches: PreferenceBatch[] = [];
  for (let i = 0; i < evalRows.length; i += microSize) evalBatches.push(collatePreferences(evalRows.slice(i, i + microSize), padId));
  const lossConfig: RewardLossConfig = { margin: config.margin, centeringCoefficient: config.centeringCoefficient };

  const loaded = await loadPretrained(config.model);
  let model: LlamaModel = loaded;
  if (!loaded.dims.isRewardModel) {
    model = toRewardModel(loaded, config.seed);
    loaded.dispose();
  }

  // 3) train: the step engine computes in this thread or, with workers, splits each batch by
  // preference rows across replicas (`reward-task.ts`)
  const lossFn = (batch: PreferenceBatch) => rewardModelLoss(model, batch, lossConfig);
  let engine: StepEngine<PreferenceBatch> | undefined;
  try {
    engine = await createTrainerEngine<PreferenceBatch>(config, { backend: backend.name, model, task: { kind: REWARD_MODEL_TASK_KIND, options: rewardTaskOptions(lossConfig) }, lossFn });
    const numSteps = numTrainingSteps(trainRows.length, config);
    const initialEval = evalBatches.length > 0 && !config.resume ? evaluateRewardModel(model, evalBatches, lossConfig) : undefined;
    const data = { train: train.summary, ...(evalData ? { eval: evalData.summary } : {}) };
    hooks.onStart?.({ numSteps, numTrainRows: trainRows.length, numEvalRows: evalRows.length, data, initialEval });
    const result = await runTrainingLoop<PreferenceBatch>({
      runDir: config.out,
      model,
      options: config,
      numSteps,
      batchesAt: (step) =>
        microBatches(batchIndicesAt(step, trainRows.length, config.batchSize, config.seed).map((i) => trainRows[i]), config).map((rows) =>
          collatePreferences(rows, padId),
        ),
      lossFn,
      engine,
      numTokensOf: (batch) => batch.sequences.numRealTokens,
      evaluate: evalBatches.length > 0 ? () => evaluateRewardModel(model, evalBatches, lossConfig) : undefined,
      tokenizerDir: config.model,
      resume: config.resume,
      onLog: hooks.onLog,
      owner: { command: 'rm train', model: config.model },
    });
    return { ...result, data, initialEval };
  } finally {
    // 4) the final model is saved by the loop (out/model); stop the workers, release the weights
    await engine?.close();
    model.dispose();
  }
}

