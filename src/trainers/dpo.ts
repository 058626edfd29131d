/**
 * DPO recipe (Rafailov et al. 2023) as Llama 3 runs it (arXiv 2407.21783 §4.1.4): from an SFT
 * checkpoint, β = 0.1, lr 1e-5, header and termination tokens masked out of the chosen and rejected
 * log-probs, plus an NLL term with coefficient α = 0.2 on the chosen responses (RPO, Pang et al.
 * 2024). Reads top to bottom: validate → setup (tokenizer → data → model → reference log-probs) →
 * train via `runTrainingLoop` → save.
 *
 * Reference: the starting model is both the policy's initial weights and π_ref. By default its
 * log-probs are computed once before training (`reference-logps.ts`) and stored in
 * `OUT/reference_logps.jsonl`, so only one model is ever held. `referenceMode: 'resident'` instead
 * keeps a second, frozen copy and computes the reference per batch, as TRL does without
 * `precompute_ref_log_probs`; it gives the same losses and exists so a benchmark can measure the
 * memory that precomputing saves. With `lora`, 'resident' holds no second copy: the reference is
 * the policy with its adapters switched off (the frozen base), as TRL does with a PEFT policy.
 *
 * Pairs: a row's chosen response is its `edited` response when it has one (Llama 3 ranks
 * edited > chosen > rejected), and its rejected response is `rejected`; the (chosen, rejected) pair
 * of such a row is not added as well, so every prompt weighs one pair and the reference file stays
 * one row per pair. The strongest contrast the annotators produced is the one trained on.
 *
 * Batch layout: the first half of a micro-batch's rows are the chosen sequences (prompt + chosen),
 * the second half the rejected ones in the same pair order, all right-padded to one length.
 *
 * Workers (`workers` > 1): each batch is split by pairs across policy replicas (`src/tasks/dpo.ts`).
 * Both reference modes work: the reference's log-probs ride in the batch, and a resident
 * reference stays in this thread only (computed per batch before the split, not sharded).
 */
import { z } from 'zod';
import * as tf from '@tensorflow/tfjs';
import * as path from 'node:path';
import { LLAMA3_POST_TRAINING, trainingOptionsSchema } from '../config/training.js';
import { validateConfig } from '../config/load.js';
import { loadPretrained } from '../model/pretrained.js';
import { attachedAdapters } from '../model/lora.js';
import type { LlamaModel } from '../model/llama.js';
import { Tokenizer } from '../tokenizer/tokenizer.js';
import { readJsonl } from '../../data/jsonl.js';
import { filterByStrength, PreferenceRowSchema, TrainedStrengthsSchema } from '../../data/rows.js';
import { tokenizePreferenceRow, TokenizeOptionsSchema, TokenizeReport, type TokenizeOptions } from '../../data/tokenize.js';
import { DPO_LOSSES, DPO_LOSS_TYPES, type PreferenceLoss } from '../../losses/dpo.js';
import { batchIndicesAt, microBatches, numTrainingSteps, type LogRecord, type TrainingResult } from '../train/loop.js';
import { claimRunFolder } from '../train/checkpoint.js';
import { collatePairs, DPO_TASK_KIND, dpoTaskOptions, evaluateDpo, type DpoBatch, type DpoLossOptions, type PreferencePairIds } from '../tasks/dpo.js';
import { holdOut, setupRecipe, trainWithTask } from './recipe.js';
import { computeReferenceLogps, loadOrComputeReferenceLogps, REFERENCE_LOGPS_FILE, type PairLogps } from './reference-logps.js';

/** The chat format's header and end-of-turn tokens, which Llama 3 masks out of the DPO log-probs. */
export const LLAMA3_FORMATTING_TOKENS = ['<|start_header_id|>', '<|end_header_id|>', '<|eot_id|>'] as const;

export const REFERENCE_MODES = ['precomputed', 'resident'] as const;
export type ReferenceMode = (typeof REFERENCE_MODES)[number];

export const DpoConfigSchema = trainingOptionsSchema(LLAMA3_POST_TRAINING)
  .extend(TokenizeOptionsSchema.shape)
  .extend({
    model: z.string().min(1).describe('SFT model folder (HF layout): the policy starts here and it is the frozen reference π_ref.'),
    train: z.string().min(1).describe('Preference JSONL: {prompt, chosen, rejected, edited?, strength?} per line.'),
    eval: z.string().min(1).optional().describe('Held-out preference JSONL; default: `evalFraction` of the training pairs.'),
    out: z.string().min(1).describe('Run folder: reference_logps.jsonl, checkpoints, metrics.jsonl, and the final model in out itself (config.json, model.safetensors, tokenizer files: loadable as out, like TRL\'s output_dir).'),
    beta: z.number().positive().finite().default(0.1).describe('β > 0: strength of the KL penalty to the reference (Llama 3: 0.1; IPO: τ).'),
    lossType: z
      .enum(DPO_LOSS_TYPES)
      .default('sigmoid')
      .describe('Preference loss by TRL loss_type: sigmoid (DPO) | ipo (IPO on log-probs divided by response length, as TRL and the IPO authors) | ipo_sum (IPO on summed log-probs, eq. 17 as written) | hinge (SLiC). Default sigmoid: the Llama 3 recipe.'),
    labelSmoothing: z.number().min(0).lt(0.5).default(0).describe('ε in [0, 0.5): assumed rate of flipped labels (cDPO); sigmoid loss only.'),
    nllCoefficient: z.number().min(0).finite().default(0.2).describe('α ≥ 0: weight of the NLL term on chosen responses (Llama 3 / RPO: 0.2; 0 = plain DPO).'),
    maskFormattingTokens: z.boolean().default(true).describe('Leave `formattingTokens` out of the chosen and rejected log-probs (Llama 3).'),
    formattingTokens: z
      .array(z.string().min(1))
      .default([...LLAMA3_FORMATTING_TOKENS])
      .describe('Token strings masked when maskFormattingTokens; each must be a token of the model\'s tokenizer. Default: the Llama 3 header and end-of-turn tokens.'),
    strengths: TrainedStrengthsSchema,
    skipInvalid: z.boolean().default(false).describe('Skip (and count) invalid JSONL rows instead of stopping at the first.'),
    referenceMode: z
      .enum(REFERENCE_MODES)
      .default('precomputed')
      .describe('precomputed: reference log-probs computed once and stored, one model in memory; resident: the reference scores every batch — a second frozen model (TRL without precompute; for memory benchmarks), or with lora the same weights with the adapters disabled (no second copy).'),
    resume: z.boolean().default(false).describe('Continue from the latest checkpoint in `out`, reusing stored reference log-probs of unchanged pairs.'),
  });
export type DpoConfigInput = z.input<typeof DpoConfigSchema>;
export type DpoConfig = z.infer<typeof DpoConfigSchema>;

/** Ids of `tokens` in the tokenizer; unknown tokens are one error naming all of them. */
export function resolveFormattingTokens(tokenizer: Tokenizer, tokens: readonly string[], source: string): number[] {
  const unknown = tokens.filter((token) => tokenizer.tokenToId(token) === undefined);
  if (unknown.length > 0) {
    throw new Error(`${source}: formattingTokens: ${unknown.map((u) => JSON.stringify(u)).join(', ')} not in the tokenizer (set maskFormattingTokens: false or list tokens it has)`);
  }
  return [...new Set(tokens.map((token) => tokenizer.tokenToId(token)!))];
}

/** Runs the loss once on a dummy pair so a bad option combination fails before anything is written. */
function checkLossOptions(loss: PreferenceLoss, config: DpoConfig): void {
  try {
    tf.tidy(() => {
      const zero = tf.zeros([1]) as tf.Tensor1D;
      loss.compute({ policyChosenLogps: zero, policyRejectedLogps: zero, refChosenLogps: zero, refRejectedLogps: zero }, { beta: config.beta, labelSmoothing: config.labelSmoothing });
    });
  } catch (err) {
    throw new Error(`dpo config: ${(err as Error).message.replace(/^losses\/dpo\.ts: /, '')}`);
  }
}

/** The pairs of one preference file and what happened to its rows. */
interface ReadPairsResult {
  pairs: PreferencePairIds[];
  /** One line, e.g. `data/train.jsonl: 120 rows, 2 invalid skipped, 20 not of strength …; 98 rows: 97 kept, …`. */
  summary: string;
}

async function readPairs(file: string, tokenizer: Tokenizer, config: DpoConfig, tokenizeOptions: TokenizeOptions): Promise<ReadPairsResult> {
  const { rows, numSkipped } = await readJsonl(file, PreferenceRowSchema, { skipInvalid: config.skipInvalid });
  const kept = filterByStrength(rows.map((r) => r.value), config.strengths);
  const report = new TokenizeReport();
  const pairs: PreferencePairIds[] = [];
  for (const row of kept) {
    const tokenized = tokenizePreferenceRow(tokenizer, row, tokenizeOptions, report);
    if (!tokenized) continue;
    // best first: [edited?, chosen, rejected]; the edited response (when present) is the chosen one
    const chosenIds = tokenized.responses[0];
    const rejectedIds = tokenized.responses[tokenized.responses.length - 1];
    if (chosenIds.length === rejectedIds.length && chosenIds.every((id, i) => id === rejectedIds[i])) {
      report.numKept--;
      report.drop('identical_responses');
      continue;
    }
    pairs.push({ promptIds: tokenized.promptIds, chosenIds, rejectedIds });
  }
  const summary = `${file}: ${rows.length + numSkipped} rows, ${numSkipped} invalid skipped, ${rows.length - kept.length} not of strength ${config.strengths.join('/')}; ${report.summary()}`;
  if (pairs.length === 0) throw new Error(`dpo: ${file}: no preference pairs left (${summary})`);
  return { pairs, summary };
}

export interface DpoStartInfo {
  numSteps: number;
  numTrainPairs: number;
  numEvalPairs: number;
  referenceMode: ReferenceMode;
  /** Models held in memory during training: 1 (precomputed) or 2 (resident). */
  numModelsLoaded: number;
  /** One line per data file. */
  dataSummary: string[];
}

export interface DpoReferenceInfo {
  file: string;
  numComputed: number;
  numReused: number;
  seconds: number;
}

export interface DpoHooks {
  onLog?: (record: LogRecord) => void;
  /** Called once before training. */
  onStart?: (info: DpoStartInfo) => void;
  /** Called after the reference log-probs are computed or read back (precomputed mode only). */
  onReference?: (info: DpoReferenceInfo) => void;
}

export interface DpoResult extends TrainingResult {
  /** Precomputed mode: what was computed and reused. */
  reference?: DpoReferenceInfo;
}

export async function dpo(input: DpoConfigInput, hooks: DpoHooks = {}): Promise<DpoResult> {
  // 1) validate: the config, the loss options and the formatting tokens, before anything is written
  const config = validateConfig(DpoConfigSchema, input, 'dpo config');
  const loss = DPO_LOSSES[config.lossType];
  checkLossOptions(loss, config);
  const microSize = config.microBatchSize ?? config.batchSize;
  if (config.batchSize % microSize !== 0) throw new Error(`dpo config: microBatchSize: ${microSize} must divide batchSize ${config.batchSize}`);
  // With LoRA the resident reference is the policy's own base (adapters off): no second model.
  const frozenModels = config.referenceMode === 'resident' && config.lora === undefined ? 1 : 0;
  // rows longer than the model's context are dropped as too long, like rows longer than maxLength
  const { backend, tokenizer, padId, contextLength } = await setupRecipe(config, {
    command: 'dpo',
    method: 'DPO (from an SFT checkpoint)',
    model: 'causal-lm',
    length: config.maxLength,
    lengthField: 'maxLength',
    longerThanContext: 'drop-rows',
    sequencesPerRow: 2,
    frozenModels,
  });

  // 2) setup: data (cheap to fail, eval file or hold-out) → model weights → reference log-probs
  const formattingTokenIds = config.maskFormattingTokens ? resolveFormattingTokens(tokenizer, config.formattingTokens, 'dpo config') : [];
  const lossOptions: DpoLossOptions = { loss, beta: config.beta, labelSmoothing: config.labelSmoothing, nllCoefficient: config.nllCoefficient, formattingTokenIds };
  const tokenizeOptions = { ...config, maxLength: contextLength };
  const trainData = await readPairs(config.train, tokenizer, config, tokenizeOptions);
  let trainPairs = trainData.pairs;
  let evalPairs: PreferencePairIds[] = [];
  const dataSummary = [trainData.summary];
  if (config.eval) {
    const evalData = await readPairs(config.eval, tokenizer, config, tokenizeOptions);
    evalPairs = evalData.pairs;
    dataSummary.push(evalData.summary);
  } else {
    ({ train: trainPairs, eval: evalPairs } = holdOut(trainPairs, config));
  }

  const policy = await loadPretrained(config.model);
  const owner = { command: 'dpo', model: config.model };
  let reference: LlamaModel | undefined;
  try {
    const referenceOptions = { batchSize: 2 * microSize, padId, formattingTokenIds };

    // Reference values. Precomputed: from the starting weights, before the loop restores a
    // checkpoint on resume, so they are π_ref's even then. Resident: a frozen second copy.
    let referenceOf: (split: 'train' | 'eval', indices: number[]) => PairLogps;
    let referenceInfo: DpoReferenceInfo | undefined;
    if (config.referenceMode === 'precomputed') {
      // The reference file is the first thing written into `out`: take the folder first.
      claimRunFolder(config.out, owner, { resume: config.resume, overwrite: config.overwrite });
      const start = performance.now();
      const stored = await loadOrComputeReferenceLogps({
        file: path.join(config.out, REFERENCE_LOGPS_FILE),
        model: policy,
        train: trainPairs,
        eval: evalPairs,
        reuse: config.resume,
        ...referenceOptions,
      });
      referenceInfo = { file: stored.file, numComputed: stored.numComputed, numReused: stored.numReused, seconds: (performance.now() - start) / 1000 };
      hooks.onReference?.(referenceInfo);
      referenceOf = (split, indices) => ({
        chosen: Float64Array.from(indices, (i) => stored[split].chosen[i]),
        rejected: Float64Array.from(indices, (i) => stored[split].rejected[i]),
      });
    } else if (config.lora !== undefined) {
      const pairsOf = { train: trainPairs, eval: evalPairs };
      // The adapters are attached when training starts (trainWithTask); the reference runs later,
      // in batchesAt / evaluate, on the same weights with them switched off.
      referenceOf = (split, indices) => {
        const adapters = attachedAdapters(policy);
        if (!adapters) throw new Error('dpo: the LoRA reference needs the policy\'s adapters attached');
        return adapters.withDisabled(() => computeReferenceLogps(policy, indices.map((i) => pairsOf[split][i]), referenceOptions));
      };
    } else {
      const frozen = await loadPretrained(config.model);
      for (const variable of frozen.params.values()) variable.trainable = false;
      reference = frozen;
      const pairsOf = { train: trainPairs, eval: evalPairs };
      // runs in batchesAt / evaluate, outside the gradient tape, as TRL's no_grad reference pass
      referenceOf = (split, indices) => computeReferenceLogps(frozen, indices.map((i) => pairsOf[split][i]), referenceOptions);
    }

    const batchOf = (split: 'train' | 'eval', indices: number[]): DpoBatch =>
      collatePairs(indices.map((i) => (split === 'train' ? trainPairs : evalPairs)[i]), referenceOf(split, indices), padId);
    const evalIndexBatches: number[][] = [];
    for (let i = 0; i < evalPairs.length; i += microSize) evalIndexBatches.push(evalPairs.slice(i, i + microSize).map((_, j) => i + j));
    const precomputedEval = config.referenceMode === 'precomputed' ? evalIndexBatches.map((idx) => batchOf('eval', idx)) : undefined;
    const numSteps = numTrainingSteps(trainPairs.length, config);
    hooks.onStart?.({
      numSteps,
      numTrainPairs: trainPairs.length,
      numEvalPairs: evalPairs.length,
      referenceMode: config.referenceMode,
      numModelsLoaded: reference ? 2 : 1,
      dataSummary,
    });

    // 3) train: the step engine computes in this thread or, with workers, splits each batch by
    // pairs across policy replicas (`src/tasks/dpo.ts`). Reference log-probs travel in the batches
    // (resident mode computes them here, in batchesAt, before the split), so workers hold one model.
    // 4) save: the loop writes out/checkpoint-N, out/metrics.jsonl and the final model into out itself
    const result = await trainWithTask<DpoBatch>({
      backend,
      task: { kind: DPO_TASK_KIND, options: dpoTaskOptions(lossOptions) },
      runDir: config.out,
      model: policy,
      options: config,
      numSteps,
      batchesAt: (step) => microBatches(batchIndicesAt(step, trainPairs.length, config.batchSize, config.seed), config).map((idx) => batchOf('train', idx)),
      numTokensOf: (batch) => batch.tokens.numRealTokens,
      evaluate: evalPairs.length > 0 ? () => evaluateDpo(policy, precomputedEval ?? evalIndexBatches.map((idx) => batchOf('eval', idx)), lossOptions) : undefined,
      tokenizerDir: config.model,
      resume: config.resume,
      onLog: hooks.onLog,
      owner,
    });
    return { ...result, reference: referenceInfo };
  } finally {
    policy.dispose();
    reference?.dispose();
  }
}
