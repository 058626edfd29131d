/**
 * A run config: everything one iterative alignment run needs (Llama 3 §4: rounds of reward
 * model → rejection sampling → SFT → DPO). Stage sections reuse the trainers' own schemas
 * (minus the fields the round fills in: model, data files, output folder), so each default lives
 * in exactly one place.
 */
import { QuantizationOptionsSchema } from '../model/quantization/options.js';
import { z } from 'zod';
import { BACKEND_NAMES } from '../util/backend-names.js';
import { limit } from '../config/limits.js';
import { RewardConfigSchema } from '../trainers/reward.js';
import { SftConfigSchema } from '../trainers/sft.js';
import { DpoConfigSchema } from '../trainers/dpo.js';
import { PretrainConfigSchema } from '../trainers/pretrain.js';
import { RejectionOptionsSchema } from '../../samplers/rejection.js';
import { SamplingEngineOptionsSchema } from '../../samplers/engine.js';
import { CleaningOptionsSchema } from '../../data/curation/rules.js';
import { DedupOptionsSchema } from '../../data/curation/dedup.js';

const filledByRound = { model: true, train: true, eval: true, out: true, resume: true, overwrite: true, backend: true, seed: true } as const;

/** Where a prompt set comes from: a JSONL file of `{prompt}` rows, or the synthetic task. */
const PromptSourceSchema = z.union([
  z.string().min(1).describe('JSONL file of {prompt} rows.'),
  z
    .object({ synthetic: limit.items().describe('Number of prompts drawn from the synthetic task (data/synthetic).') })
    .strict(),
]);

const FromScratchSchema = z
  .object({
    architecture: z.string().min(1).describe('Architecture file, e.g. configs/models/quickstart.json.'),
    vocabSize: limit.vocab(262).default(512).describe('Tokenizer vocabulary asked for (BPE may stop earlier on a small corpus).'),
    numDocuments: limit.items().default(6000).describe('Synthetic pretraining documents (noisy demonstrations of the task).'),
    noiseLevel: z.number().min(0).max(1).default(0.5).describe('Corruption rate of the demonstrations: the base model learns mediocre behaviour on purpose.'),
    pretrain: PretrainConfigSchema.omit({ model: true, corpus: true, out: true, resume: true, overwrite: true, backend: true, seed: true, parseSpecialTokens: true })
      .partial()
      .default({})
      .describe('Pretraining hyperparameters (pretrain command fields).'),
  })
  .strict();

const SamplingSchema = z
  .object({
    k: limit.samples().default(16).describe('Samples per prompt (Llama 3: 10–30).'),
    promptsPerRound: limit.items().default(200).describe('Training prompts rejection-sampled each round (cycling through the set).'),
    maxNewTokens: limit.tokens().default(64).describe('Most tokens per sample.'),
    temperature: z.number().min(0).default(1).describe('Sampling temperature.'),
    topP: z.number().gt(0).max(1).default(1).describe('Nucleus sampling mass (1 = off).'),
    topK: z.number().int().min(0).default(0).describe('Top-k filtering (0 = off).'),
    engine: SamplingEngineOptionsSchema.default({}).describe('Sampling engine options (kvCache paged|dense|none, blockSize, …).'),
    pairs: RejectionOptionsSchema.omit({ seed: true }).default({}).describe('How rejection sampling turns samples into preference pairs.'),
    rewardBatchSize: limit.rows().default(32).describe('Sequences per reward-model forward when scoring the samples (memory, not results).'),
    workers: limit
      .workers()
      .default(1)
      .describe('Threads sharing the sampling and the scoring, each with its own copy of the policy and the reward model (default 1: this thread; at most the cores unless forceWorkers). Results do not depend on it.'),
    forceWorkers: z.boolean().default(false).describe('Allow more sampling workers than cores.'),
    selection: z
      .enum(['reward-model', 'random'])
      .default('reward-model')
      .describe('Which sample of each prompt is kept: the reward model\'s best (the recipe) or a uniformly random one (an ablation that shows what the reward model buys).'),
    quantization: QuantizationOptionsSchema.optional().describe(
      'Sample from an 8-bit copy of the policy (Llama 3 served inference in FP8): the stage quantizes the round\'s best policy into its folder (policy-quantized/) and samples from that; the reward model stays full precision. Absent: full precision.',
    ),
  })
  .strict();

const PreferencesSchema = z
  .object({
    source: z.enum(['judge', 'file']).default('judge').describe('judge: a module compares two samples per prompt; file: annotations imported with `tfalign annotate import`.'),
    judge: z
      .string()
      .min(1)
      .optional()
      .describe(
        'Path of a JS/TS module whose default export has compare(prompt, a, b, rng) and score(prompt, response). Trust: the module is code, imported and run inside the tfalign process with your permissions (files, network, environment), after the run\'s lock is taken; name only modules you trust.',
      ),
    promptsPerRound: limit.items().default(200).describe('Prompts whose two samples are compared each round.'),
    judgeOptions: z.record(z.unknown()).default({}).describe('Options passed to the module\'s createJudge(options) when it exports one.'),
  })
  .strict()
  .superRefine((p, ctx) => {
    if (p.source === 'judge' && !p.judge) ctx.addIssue({ code: 'custom', path: ['judge'], message: 'required when source is judge' });
  });

const EvaluateSchema = z
  .object({
    samplesPerPrompt: limit.samples().default(2).describe('Samples per held-out prompt scored by the RM and the judge.'),
    temperature: z.number().min(0).default(1).describe('Sampling temperature for evaluation (sampling, not greedy: the judged gain is what a user sees).'),
    maxNewTokens: limit.tokens().optional().describe('Default: sampling.maxNewTokens.'),
    rmEvalSamplesPerPrompt: z
      .number()
      .int()
      .min(2)
      .max(64)
      .default(4)
      .describe(
        'Samples the base model draws for each held-out prompt to build the fixed reward-model eval set (round 1, judge source only); samples 0–1, 2–3, … form pairs, so 4 gives up to 2 pairs per prompt. Pairs the judge scores equal are dropped (no right answer).',
      ),
  })
  .strict();

export const RunConfigSchema = z
  .object({
    name: z.string().regex(/^[A-Za-z0-9][A-Za-z0-9._-]*$/).describe('Run name: its folder under `project` and its row in the database.'),
    project: z.string().min(1).default('.').describe('Project folder: holds tfalign.db and one folder per run.'),
    backend: z.enum(BACKEND_NAMES).default('auto').describe('Tensor backend for every stage.'),
    seed: limit.seed().default(0).describe('Seed of prompts, sampling, judge noise and data order.'),
    rounds: limit.rounds().default(6).describe('Rounds to run (Llama 3 ran six).'),
    base: z
      .object({
        model: z.string().min(1).optional().describe('A pretrained causal-LM folder (HF layout) to align.'),
        fromScratch: FromScratchSchema.optional().describe('Build a tokenizer and a small model and pretrain it on the synthetic task (quickstart).'),
      })
      .strict()
      .superRefine((b, ctx) => {
        if ((b.model === undefined) === (b.fromScratch === undefined)) ctx.addIssue({ code: 'custom', message: 'give exactly one of model or fromScratch' });
      }),
    prompts: z
      .object({
        train: PromptSourceSchema.describe('Prompts sampled for preferences and rejection sampling.'),
        heldout: PromptSourceSchema.describe('Prompts for evaluation only.'),
      })
      .strict(),
    preferences: PreferencesSchema.default({ judge: undefined }),
    rewardModel: RewardConfigSchema.omit(filledByRound)
      .extend({
        from: z
          .enum(['base', 'policy'])
          .default('base')
          .describe('Initialise the reward model from the base model (Llama 3: the pretrained checkpoint) or from the best policy so far.'),
      })
      .default({})
      .describe('Reward model training (rm train fields); trained each round on all preferences so far.'),
    sampling: SamplingSchema.default({}),
    sft: SftConfigSchema.omit(filledByRound)
      .extend({
        from: z.enum(['base', 'previous']).default('base').describe('Start SFT from the base model each round (Llama 3) or from the previous round\'s policy.'),
        data: z.enum(['all', 'latest']).default('all').describe('Train on the selected samples of every round so far, or only this round\'s.'),
        enabled: z.boolean().default(true).describe('false skips SFT (an ablation): DPO then starts from the policy SFT would have started from.'),
      })
      .default({}),
    dpo: DpoConfigSchema.omit(filledByRound)
      .extend({
        data: z.enum(['all', 'latest']).default('latest').describe('Preferences DPO trains on: this round\'s (Llama 3: the latest batches) or all.'),
        enabled: z.boolean().default(true).describe('false skips DPO (an ablation): the SFT model is the round\'s policy.'),
      })
      .default({}),
    curate: z
      .object({
        enabled: z.boolean().default(false).describe('Run the curate stage between rejection sampling and SFT (Llama 3 §4.2.3): cleaning rules, then exact and near-duplicate removal of the selected samples.'),
        clean: CleaningOptionsSchema.default({}).describe('Cleaning rules (`tfalign data clean` options).'),
        dedup: DedupOptionsSchema.default({}).describe('Duplicate removal (`tfalign data dedup` options; near-duplicates with near: true).'),
      })
      .strict()
      .default({}),
    evaluate: EvaluateSchema.default({}),
  })
  .strict();

export type RunConfigInput = z.input<typeof RunConfigSchema>;
export type RunConfig = z.infer<typeof RunConfigSchema>;
