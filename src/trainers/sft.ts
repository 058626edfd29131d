/**
 * Supervised fine-tuning recipe (Llama 3, arXiv 2407.21783 §4.1.3): cross-entropy on the response
 * (assistant) tokens of prompt/response or multi-turn rows, prompt tokens masked, lr 1e-5.
 * Reads top to bottom: validate → setup (tokenizer → model → data) → train → save.
 *
 * Data: every row is rendered with the model's chat template and tokenized with exact
 * prompt/response boundaries (data/tokenize.ts). Rows longer than `maxLength` are dropped and
 * counted, never cut; a malformed row stops the run with `FILE:LINE: field: problem` before
 * anything is written to `out` (or, with `skipInvalid`, is skipped and counted).
 *
 * Collation, two ways:
 *   - default: each optimizer step draws `batchSize` rows (`batchIndicesAt`, no length sorting)
 *     and right-pads each micro-batch to its longest row. Cost: every row of a micro-batch pays
 *     for the longest one's tokens (and the attention bias grows with its square); the result's
 *     `paddingFraction` says how much of the compute went to padding;
 *   - `packing`: rows are laid one after another into sequences of `maxLength` tokens (a row
 *     never split across sequences), each its own document: attention stays inside a row and
 *     positions restart at each row, so the loss equals the unpacked loss while the padding is
 *     only what is left at the end of each sequence. `batchSize` then counts packed sequences.
 */
import { z } from 'zod';
import * as tf from '@tensorflow/tfjs';
import { LLAMA3_POST_TRAINING, trainingOptionsSchema } from '../config/training.js';
import { validateConfig } from '../config/load.js';
import { loadPretrained } from '../model/pretrained.js';
import type { Tokenizer } from '../tokenizer/tokenizer.js';
import { readJsonl } from '../../data/jsonl.js';
import { DataError } from '../util/errors.js';
import { SftRowSchema } from '../../data/rows.js';
import { TokenizeOptionsSchema, TokenizeReport, tokenizeSftRow, type TokenizeOptions } from '../../data/tokenize.js';
import { packRows, padRows, selectRows, type SequenceRow, type TokenBatch } from '../../data/collate.js';
import { batchIndicesAt, microBatches, numTrainingSteps, type TrainingResult } from '../train/loop.js';
import { batchTokenLogprobs } from '../inference/token-logprobs.js';
import { CAUSAL_LM_TASK_KIND } from '../tasks/causal-lm.js';
import type { TrainerHooks } from './pretrain.js';
import type { LlamaModel } from '../model/llama.js';
import { holdOut, setupRecipe, trainWithTask } from './recipe.js';

const tokenizeShape = TokenizeOptionsSchema.shape;

export const SftConfigSchema = trainingOptionsSchema(LLAMA3_POST_TRAINING).extend({
  model: z.string().min(1).describe('Model folder (HF layout, with its tokenizer files) to fine-tune: a causal LM, not a reward model.'),
  train: z.string().min(1).describe('JSONL of SFT rows: {"prompt": "...", "response": "..."} or {"messages": [{"role", "content"}, ...]}.'),
  eval: z.string().min(1).optional().describe('JSONL of held-out SFT rows; without it, evalFraction of the training rows is held out.'),
  out: z.string().min(1).describe('Run folder: checkpoints, metrics.jsonl, and the final model in out itself (config.json, model.safetensors, tokenizer files: loadable as out, like TRL\'s output_dir).'),
  maxPromptLength: tokenizeShape.maxPromptLength,
  maxLength: tokenizeShape.maxLength.describe(
    'Most prompt + response tokens per row (at most the model\'s max_position_embeddings); longer rows are dropped and counted, never cut. Also the length of a packed sequence.',
  ),
  chat: tokenizeShape.chat,
  parseSpecialTokens: tokenizeShape.parseSpecialTokens,
  packing: z
    .boolean()
    .default(false)
    .describe('Pack several rows into each sequence of maxLength tokens, with a per-row attention mask and positions; same loss, less padding. batchSize then counts packed sequences.'),
  skipInvalid: z.boolean().default(false).describe('Skip rows that are not valid JSON or not SFT rows (counted in the data report) instead of stopping.'),
  resume: z.boolean().default(false).describe('Continue from the latest checkpoint in `out`.'),
});
export type SftConfigInput = z.input<typeof SftConfigSchema>;
export type SftConfig = z.infer<typeof SftConfigSchema>;

/** What became of one JSONL file's rows. */
export interface SftFileReport {
  file: string;
  /** Rows left out because they were not valid JSON, not SFT rows, or could not be tokenized (`skipInvalid` only). */
  numInvalid: number;
  /** `numInvalid` by reason, e.g. `{"response: expected string": 2}`. */
  invalidByReason: Record<string, number>;
  /** The valid rows: kept, dropped (`too_long`, `no_response_tokens`) and prompts truncated. */
  tokenize: TokenizeReport;
}

export interface SftDataReport {
  train: SftFileReport;
  /** Present when an eval file was given. */
  eval?: SftFileReport;
  /** Rows trained on and rows evaluated on. */
  numTrainRows: number;
  numEvalRows: number;
  /** Training sequences drawn by the steps: rows, or packed sequences with `packing`. */
  numTrainSequences: number;
}

/** One line per file: `data/train.jsonl: 100 rows: 99 kept, 1 dropped (too_long: 1), 0 prompts truncated; 1 invalid row skipped (…)`. */
export function describeSftData(report: SftDataReport): string[] {
  const line = (r: SftFileReport): string => {
    const reasons = Object.entries(r.invalidByReason).map(([k, v]) => `${k}: ${v}`);
    const invalid = r.numInvalid > 0 ? `; ${r.numInvalid} invalid row${r.numInvalid === 1 ? '' : 's'} skipped (${reasons.join(', ')})` : '';
    return `${r.file}: ${r.tokenize.summary()}${invalid}`;
  };
  return [line(report.train), ...(report.eval ? [line(report.eval)] : [])];
}

/**
 * Reads and tokenizes one SFT file. Rows that fail to parse or to tokenize stop with
 * `FILE:LINE: …`, or with `skipInvalid` are counted; rows that do not fit are dropped and counted
 * in the TokenizeReport.
 */
export async function readSftFile(
  file: string,
  tokenizer: Tokenizer,
  opts: TokenizeOptions & { skipInvalid: boolean },
): Promise<{ rows: SequenceRow[]; report: SftFileReport }> {
  const parsed = await readJsonl(file, SftRowSchema, { skipInvalid: opts.skipInvalid });
  const report: SftFileReport = { file, numInvalid: parsed.numSkipped, invalidByReason: { ...parsed.skippedByReason }, tokenize: new TokenizeReport() };
  const rows: SequenceRow[] = [];
  for (const { line, value } of parsed.rows) {
    let row: SequenceRow | undefined;
    try {
      row = tokenizeSftRow(tokenizer, value, opts, report.tokenize);
    } catch (err) {
      // A template that cannot render the row, or a second BOS in the text: the row is at fault.
      if (!opts.skipInvalid) throw new DataError(file, line, undefined, (err as Error).message.split('\n')[0]);
      report.tokenize.numRows--; // counted as invalid, not as a tokenized row
      report.numInvalid++;
      report.invalidByReason['cannot tokenize'] = (report.invalidByReason['cannot tokenize'] ?? 0) + 1;
      continue;
    }
    if (row) rows.push(row);
  }
  return { rows, report };
}

/** Training and evaluation rows, and what became of the input. */
export interface SftData {
  trainRows: SequenceRow[];
  evalRows: SequenceRow[];
  report: SftDataReport;
}

/**
 * The train file's rows (and the eval file's, or a seeded `evalFraction` hold-out of the train
 * rows), tokenized. Throws before anything is written when a row is malformed or nothing is left.
 */
export async function loadSftData(config: SftConfig, tokenizer: Tokenizer): Promise<SftData> {
  const opts = { maxPromptLength: config.maxPromptLength, maxLength: config.maxLength, chat: config.chat, parseSpecialTokens: config.parseSpecialTokens, skipInvalid: config.skipInvalid };
  const train = await readSftFile(config.train, tokenizer, opts);
  let trainRows = train.rows;
  let evalRows: SequenceRow[] = [];
  let evalReport: SftFileReport | undefined;
  if (config.eval !== undefined) {
    const held = await readSftFile(config.eval, tokenizer, opts);
    evalRows = held.rows;
    evalReport = held.report;
  } else {
    ({ train: trainRows, eval: evalRows } = holdOut(trainRows, config));
  }
  if (trainRows.length === 0) {
    throw new Error(`sft: ${config.train}: no rows left to train on (${train.report.tokenize.summary()}${config.eval === undefined ? ', after holding out evalFraction' : ''})`);
  }
  const report: SftDataReport = { train: train.report, eval: evalReport, numTrainRows: trainRows.length, numEvalRows: evalRows.length, numTrainSequences: trainRows.length };
  return { trainRows, evalRows, report };
}

/** Micro-batches of SFT rows, padded per micro-batch or packed (see the file comment). */
export class SftBatches {
  /** Sequences the steps draw from: rows, or packed sequences. */
  readonly numSequences: number;
  readonly evalBatches: TokenBatch[];
  /** Token slots and real tokens of the training micro-batches made so far (for `paddingFraction`). */
  private numSlots = 0;
  private numRealTokens = 0;
  private readonly packed: TokenBatch | undefined;

  constructor(
    private readonly data: SftData,
    private readonly config: SftConfig,
    private readonly padId: number,
  ) {
    const microSize = config.microBatchSize ?? config.batchSize;
    const pack = (rows: SequenceRow[]) => packRows(rows, { seqLen: config.maxLength, padId, allowSplit: false });
    this.packed = config.packing ? pack(data.trainRows) : undefined;
    this.numSequences = this.packed?.batchSize ?? data.trainRows.length;
    this.evalBatches = [];
    if (config.packing) {
      const evalPacked = data.evalRows.length > 0 ? pack(data.evalRows) : undefined;
      for (let i = 0; evalPacked && i < evalPacked.batchSize; i += microSize) {
        this.evalBatches.push(selectRows(evalPacked, range(i, Math.min(i + microSize, evalPacked.batchSize))));
      }
    } else {
      for (let i = 0; i < data.evalRows.length; i += microSize) this.evalBatches.push(padRows(data.evalRows.slice(i, i + microSize), padId));
    }
  }

  /** The micro-batches of optimizer step `step` (a pure function of the step, so resume replays nothing). */
  batchesAt(step: number): TokenBatch[] {
    const indices = batchIndicesAt(step, this.numSequences, this.config.batchSize, this.config.seed);
    const batches = microBatches(indices, this.config).map((idx) =>
      this.packed ? selectRows(this.packed, idx) : padRows(idx.map((i) => this.data.trainRows[i]), this.padId),
    );
    for (const b of batches) {
      this.numSlots += b.batchSize * b.seqLen;
      this.numRealTokens += b.numRealTokens;
    }
    return batches;
  }

  /** Fraction of the token slots fed through the model that were padding. */
  paddingFraction(): number {
    return this.numSlots > 0 ? 1 - this.numRealTokens / this.numSlots : 0;
  }
}

function range(from: number, to: number): number[] {
  return Array.from({ length: to - from }, (_, i) => from + i);
}

/**
 * [B, T−1]: 1 where position t predicts a token of its own row that is not a target — the prompt,
 * user turns and chat headers, which SFT does not train on (the first token of a row is never
 * predicted).
 */
export function promptTargets(batch: TokenBatch): Float32Array {
  const { batchSize: b, seqLen: t } = batch;
  const out = new Float32Array(b * (t - 1));
  for (let r = 0; r < b; r++) {
    for (let i = 0; i < t - 1; i++) {
      const next = batch.segmentIds[r * t + i + 1];
      if (next !== 0 && next === batch.segmentIds[r * t + i] && batch.targets[r * (t - 1) + i] === 0) out[r * (t - 1) + i] = 1;
    }
  }
  return out;
}

export interface SftEvalMetrics {
  /** Response loss: mean cross-entropy over the response (target) tokens. */
  loss: number;
  /** exp(loss). */
  perplexity: number;
  /** Mean cross-entropy over the prompt tokens, which SFT does not train (reported, not optimised). */
  prompt_loss: number;
  /** Response tokens evaluated. */
  num_tokens: number;
  [name: string]: number;
}

/** Held-out response loss, perplexity and prompt loss, one forward pass per batch, no gradients. */
export function evaluateSft(model: LlamaModel, batches: TokenBatch[]): SftEvalMetrics {
  let responseSum = 0;
  let numResponse = 0;
  let promptSum = 0;
  let numPrompt = 0;
  for (const batch of batches) {
    const prompt = promptTargets(batch);
    const [response, context] = tf.tidy(() => {
      const shape: [number, number] = [batch.batchSize, batch.seqLen - 1];
      const logps = batchTokenLogprobs(model, batch); // [B, T−1]
      const responseLogp = tf.sum(tf.mul(logps, tf.tensor2d(batch.targets, shape))); // []
      const promptLogp = tf.sum(tf.mul(logps, tf.tensor2d(prompt, shape))); // []
      return [responseLogp.dataSync()[0], promptLogp.dataSync()[0]];
    });
    responseSum -= response;
    numResponse += batch.numTargets;
    promptSum -= context;
    numPrompt += prompt.reduce((a, v) => a + v, 0);
  }
  const loss = numResponse > 0 ? responseSum / numResponse : NaN;
  return { loss, perplexity: Math.exp(loss), prompt_loss: numPrompt > 0 ? promptSum / numPrompt : NaN, num_tokens: numResponse };
}

export interface SftHooks extends TrainerHooks {
  /** Called once the data is read, before training (the CLI prints `describeSftData`). */
  onData?: (report: SftDataReport) => void;
}

export interface SftResult extends TrainingResult {
  data: SftDataReport;
  /** Fraction of the token slots of this process's training batches that were padding. */
  paddingFraction: number;
}

export async function sft(input: SftConfigInput, hooks: SftHooks = {}): Promise<SftResult> {
  // 1) validate: the config, then the model (a causal LM whose context holds maxLength) and the machine
  const config = validateConfig(SftConfigSchema, input, 'sft config');
  const { backend, tokenizer, padId } = await setupRecipe(config, {
    command: 'sft',
    method: 'SFT',
    model: 'causal-lm',
    length: config.maxLength,
    lengthField: 'maxLength',
    longerThanContext: 'refuse',
    sequencesPerRow: 1,
  });

  // 2) setup: data (every row checked, eval held out, before the weights load or `out` is touched) → model
  const data = await loadSftData(config, tokenizer);
  const batches = new SftBatches(data, config, padId);
  data.report.numTrainSequences = batches.numSequences;
  hooks.onData?.(data.report);
  const numSteps = numTrainingSteps(batches.numSequences, config);
  const model = await loadPretrained(config.model);

  // 3) train the causal-LM task on response tokens (this thread, or workers splitting each batch
  // by rows) and 4) save: the loop writes out/checkpoint-N, out/metrics.jsonl and the final model into out itself
  try {
    hooks.onStart?.({ numSteps, numTrainRows: data.trainRows.length, numEvalRows: data.evalRows.length });
    const result = await trainWithTask<TokenBatch>({
      backend,
      task: { kind: CAUSAL_LM_TASK_KIND },
      runDir: config.out,
      model,
      options: config,
      numSteps,
      batchesAt: (step) => batches.batchesAt(step),
      numTokensOf: (batch) => batch.numRealTokens,
      evaluate: batches.evalBatches.length > 0 ? () => evaluateSft(model, batches.evalBatches) : undefined,
      tokenizerDir: config.model,
      resume: config.resume,
      onLog: hooks.onLog,
      owner: { command: 'sft', model: config.model },
    });
    return { ...result, data: data.report, paddingFraction: batches.paddingFraction() };
  } finally {
    model.dispose();
  }
}
