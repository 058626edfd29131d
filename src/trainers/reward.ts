/**
 * Reward-model recipe (Llama 3, arXiv 2407.21783 §4.1.2): a causal LM gets a scalar score head
 * (`LlamaForSequenceClassification`, `num_labels: 1`) and learns to rank the responses to one
 * prompt with Bradley–Terry, edited > chosen > rejected. Reads top to bottom: validate → setup
 * (tokenizer → data → model) → train → save.
 *
 * `head: logprob` keeps the causal LM whole and reads the reward from its LM head, r = beta · mean
 * log p(response tokens) (SimPO's implicit reward), trained with the same ranking loss and an
 * optional NLL term on the best response (CPO). A small model that has learned a task knows more
 * about which answers are right through its next-token predictions than a new head learns from
 * a few thousand pairs (BENCHMARKS.md, issue 10).
 *
 * Data: preference rows, kept only when their strength is allowed (Llama 3 trains on
 * `significantly_better` and `better` pairs only); a row without a strength counts as `better`.
 *
 * Objective: the `reward-model` task (`src/tasks/reward-model.ts`: batch layout, Bradley–Terry /
 * ranking loss, accuracy and margin), run by the step engine here or on every worker replica.
 */
import { z } from 'zod';
import { LLAMA3_POST_TRAINING, trainingOptionsSchema } from '../config/training.js';
import { validateConfig } from '../config/load.js';
import { loadPretrained } from '../model/pretrained.js';
import { toRewardModel } from '../model/weights.js';
import { LlamaModel } from '../model/llama.js';
import { parseLlamaConfig, REWARD_HEADS, type RewardHead } from '../model/config.js';
import { Tokenizer } from '../tokenizer/tokenizer.js';
import { readJsonl } from '../../data/jsonl.js';
import { filterByStrength, PreferenceRowSchema, TrainedStrengthsSchema, type Strength } from '../../data/rows.js';
import { TokenizeOptionsSchema, TokenizeReport, tokenizePreferenceRow, type TokenizedPreference, type TokenizeOptions } from '../../data/tokenize.js';
import { batchIndicesAt, microBatches, numTrainingSteps, type LogRecord, type TrainingResult } from '../train/loop.js';
import { collatePreferences, evaluateRewardModel, numPairsOf, REWARD_MODEL_TASK_KIND, rewardTaskOptions, type PreferenceBatch, type RewardLossConfig } from '../tasks/reward-model.js';
import { holdOut, setupRecipe, trainWithTask } from './recipe.js';


export const RewardConfigSchema = trainingOptionsSchema(LLAMA3_POST_TRAINING).extend({
  model: z
    .string()
    .min(1)
    .describe('Model folder (HF layout): a causal LM, which gets a new score head (LlamaForSequenceClassification), or a reward model to continue training.'),
  train: z.string().min(1).describe('JSONL preference rows {prompt, chosen, rejected, edited?, strength?}.'),
  eval: z.string().min(1).optional().describe('JSONL preference rows held out for evaluation (same strength filter). Default: evalFraction of the training rows.'),
  out: z.string().min(1).describe('Run folder: checkpoints, metrics.jsonl, and the final reward model in out itself (config.json, model.safetensors, tokenizer files: loadable as out, like TRL\'s output_dir).'),
  maxPromptLength: TokenizeOptionsSchema.shape.maxPromptLength,
  maxLength: TokenizeOptionsSchema.shape.maxLength,
  chat: TokenizeOptionsSchema.shape.chat,
  parseSpecialTokens: TokenizeOptionsSchema.shape.parseSpecialTokens,
  strengths: TrainedStrengthsSchema,
  margin: z
    .boolean()
    .default(false)
    .describe('Llama 2\'s per-strength margin m in −log σ(r_c − r_r − m); Llama 3 removed it (default false). Defined for chosen/rejected pairs only: rows with an edited response are then refused.'),
  centeringCoefficient: z
    .number()
    .min(0)
    .default(0)
    .describe('Reward centering c · (r_c + r_r)² per pair (Eisenstein et al. 2023; TRL suggests 0.01); 0 disables.'),
  head: z
    .enum(REWARD_HEADS)
    .default('score')
    .describe(
      'How the reward is read. score: a new scalar head on the last token\'s hidden state (HF LlamaForSequenceClassification, TRL RewardTrainer). ' +
        'logprob: no new head; the reward is beta · the mean log-prob of the response tokens under the model\'s own LM head (SimPO\'s implicit reward, Meng et al. 2024), ' +
        'trained with the same Bradley–Terry ranking loss; it starts from what the causal LM already knows about good responses (saved as a LlamaForCausalLM with tfalign_reward in config.json).',
    ),
  beta: z
    .number()
    .positive()
    .max(1000)
    .default(1)
    .describe('head logprob: scale of the reward, r = beta · mean token log-prob (SimPO\'s beta). Ignored by the score head.'),
  nllCoefficient: z
    .number()
    .min(0)
    .max(1000)
    .default(0)
    .describe('head logprob: α of an NLL term on each row\'s best response (edited, else chosen), per token — CPO\'s regulariser (TRL cpo_alpha); 0 disables. The score head has no LM head: must be 0.'),
  skipInvalid: z.boolean().default(false).describe('Skip rows that are not valid JSON or fail the schema (counted in the summary) instead of stopping at the first.'),
  resume: z.boolean().default(false).describe('Continue from the latest checkpoint in `out`.'),
});

/** The cross-field rules of a reward config (`rm train` and a run's `rewardModel` both apply them). */
export function rewardHeadProblem(c: { head: RewardHead; nllCoefficient: number; lora?: unknown }): { path: string; message: string } | undefined {
  if (c.head === 'score' && c.nllCoefficient > 0) return { path: 'nllCoefficient', message: 'needs head: logprob (a score head has no LM head to take an NLL of)' };
  if (c.head === 'logprob' && c.lora !== undefined) return { path: 'lora', message: 'a logprob reward model trains all its weights: a PEFT adapter folder cannot carry its tfalign_reward marker (use head: score with lora)' };
  return undefined;
}
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
  // 1) validate: the config, then the model (its context holds maxLength) and the machine
  const config = validateConfig(RewardConfigSchema, input, 'rm train config');
  const problem = rewardHeadProblem(config);
  if (problem) throw new Error(`rm train config: ${problem.path}: ${problem.message}`);
  const { backend, tokenizer, padId } = await setupRecipe(config, {
    command: 'rm train',
    method: 'reward-model training',
    model: 'any',
    rewardHead: config.head,
    length: config.maxLength,
    lengthField: 'maxLength',
    longerThanContext: 'refuse',
    sequencesPerRow: 3,
  });

  // 2) setup: data (eval file or hold-out) before weights, so a bad row fails in seconds → model
  const readOpts: ReadPreferenceOptions = { maxPromptLength: config.maxPromptLength, maxLength: config.maxLength, chat: config.chat, parseSpecialTokens: config.parseSpecialTokens, strengths: config.strengths, skipInvalid: config.skipInvalid };
  const train = await readPreferenceData(config.train, tokenizer, readOpts);
  const evalData = config.eval !== undefined ? await readPreferenceData(config.eval, tokenizer, readOpts) : undefined;
  if (config.margin) {
    const edited = [...train.examples, ...(evalData?.examples ?? [])].find((e) => e.hasEdited);
    if (edited) throw new Error(`${edited.source}: edited: margin (Llama 2) is defined for chosen/rejected pairs only; set margin: false or drop the edited responses`);
  }
  const split = evalData !== undefined ? { train: train.examples, eval: evalData.examples } : holdOut(train.examples, config);
  const trainRows: PreferenceExample[] = split.train;
  const evalRows: PreferenceExample[] = split.eval;
  if (trainRows.length === 0) {
    throw new Error(`rm train: ${describePreferenceData(train.summary)}: no training rows left${evalData === undefined ? ' after holding out evalFraction' : ''}`);
  }
  if (evalData !== undefined && evalRows.length === 0) throw new Error(`rm train: ${describePreferenceData(evalData.summary)}: no eval rows left`);

  const microSize = config.microBatchSize ?? config.batchSize;
  const evalBatches: PreferenceBatch[] = [];
  for (let i = 0; i < evalRows.length; i += microSize) evalBatches.push(collatePreferences(evalRows.slice(i, i + microSize), padId));
  const lossConfig: RewardLossConfig = { margin: config.margin, centeringCoefficient: config.centeringCoefficient, nllCoefficient: config.nllCoefficient };

  const loaded = await loadPretrained(config.model);
  let model: LlamaModel = loaded;
  if (loaded.dims.isRewardModel && loaded.dims.rewardHead !== config.head) {
    loaded.dispose();
    throw new Error(`rm train: ${config.model} is a reward model with a ${loaded.dims.rewardHead} head; head is ${config.head} (start a ${config.head} reward model from a causal LM)`);
  }
  if (config.head === 'score' && !loaded.dims.isRewardModel) {
    model = toRewardModel(loaded, config.seed);
    loaded.dispose();
  } else if (config.head === 'logprob') {
    // the same weights, marked as a reward model read through its LM head (beta from this config)
    const marked = parseLlamaConfig({ ...loaded.config, tfalign_reward: { head: 'logprob', beta: config.beta } }, `${config.model}/config.json`);
    model = new LlamaModel(marked, loaded.params, loaded.linearOverrides);
  }

  // 3) train the reward-model task (this thread, or workers splitting each batch by preference
  // rows) and 4) save: the loop writes out/checkpoint-N, out/metrics.jsonl and the final model into out itself
  try {
    const numSteps = numTrainingSteps(trainRows.length, config);
    const initialEval = evalBatches.length > 0 && !config.resume ? evaluateRewardModel(model, evalBatches, lossConfig) : undefined;
    const data = { train: train.summary, ...(evalData ? { eval: evalData.summary } : {}) };
    hooks.onStart?.({ numSteps, numTrainRows: trainRows.length, numEvalRows: evalRows.length, data, initialEval });
    const result = await trainWithTask<PreferenceBatch>({
      backend,
      task: { kind: REWARD_MODEL_TASK_KIND, options: rewardTaskOptions(lossConfig) },
      runDir: config.out,
      model,
      options: config,
      numSteps,
      batchesAt: (step) =>
        microBatches(batchIndicesAt(step, trainRows.length, config.batchSize, config.seed).map((i) => trainRows[i]), config).map((rows) =>
          collatePreferences(rows, padId),
        ),
      numTokensOf: (batch) => batch.sequences.numRealTokens,
      evaluate: evalBatches.length > 0 ? () => evaluateRewardModel(model, evalBatches, lossConfig) : undefined,
      tokenizerDir: config.model,
      resume: config.resume,
      onLog: hooks.onLog,
      owner: { command: 'rm train', model: config.model },
    });
    return { ...result, data, initialEval };
  } finally {
    model.dispose();
  }
}

