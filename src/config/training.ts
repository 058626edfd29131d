/**
 * The hyperparameters every trainer shares. Each trainer builds its schema from
 * `trainingOptionsSchema(recipeDefaults)`, so a recipe's defaults (lr 1e-5 for SFT and DPO in
 * Llama 3, a larger one for pretraining) live in that trainer's schema and nowhere else.
 */
import { z } from 'zod';
import { BACKEND_NAMES } from '../util/backend-names.js';
import { limit } from './limits.js';
import { LoraOptionsSchema } from './lora.js';

export interface RecipeDefaults {
  lr: number;
  batchSize: number;
  epochs: number;
  warmupRatio: number;
  lrDecay: 'cosine' | 'linear' | 'constant';
  weightDecay: number;
  maxGradNorm: number;
}

/**
 * The Llama 3 post-training hyperparameters shared by its reward-model, SFT and DPO stages
 * (arXiv 2407.21783 §4.1: learning rate 1e-5 throughout); each trainer passes them to
 * `trainingOptionsSchema`.
 */
export const LLAMA3_POST_TRAINING: RecipeDefaults = {
  lr: 1e-5,
  batchSize: 8,
  epochs: 1,
  warmupRatio: 0.03,
  lrDecay: 'cosine',
  weightDecay: 0,
  maxGradNorm: 1,
};

export function trainingOptionsSchema(d: RecipeDefaults) {
  return z.object({
    backend: z.enum(BACKEND_NAMES).default('auto').describe('Tensor backend: auto tries tfjs-node-gpu, tfjs-node, then wasm.'),
    workers: limit
      .workers()
      .optional()
      .describe(
        'Data-parallel replicas (this thread plus workers-1 worker threads); each computes a share of every global batch. Default: the number of cores on the wasm and cpu backends, 1 on tensorflow and for an 8-bit (QLoRA) model. At most the number of cores unless forceWorkers.',
      ),
    forceWorkers: z.boolean().default(false).describe('Allow more workers than cores (each still holds a full model replica; slower, more memory).'),
    overwrite: z
      .boolean()
      .default(false)
      .describe('Write into an existing non-empty `out` that is not a previous output of this trainer; only the files the trainer writes are replaced, nothing else is removed.'),
    seed: limit.seed().default(42).describe('Seed for initialisation, data order and sampling; same seed, same run.'),
    lr: z.number().positive().default(d.lr).describe(`Peak learning rate (default ${d.lr}, this recipe's).`),
    batchSize: limit.rows().default(d.batchSize).describe('Rows per optimizer step (the global batch).'),
    microBatchSize: limit
      .rows()
      .optional()
      .describe('Rows per forward/backward pass; gradients of batchSize/microBatchSize passes are accumulated. Default: batchSize (no accumulation).'),
    epochs: limit.epochs().default(d.epochs).describe('Passes over the training rows; fractional values stop part-way.'),
    maxSteps: limit.steps().optional().describe('Stop after this many optimizer steps; overrides epochs.'),
    warmupRatio: z.number().min(0).max(1).default(d.warmupRatio).describe('Fraction of steps with linear warmup from 0.'),
    lrDecay: z.enum(['cosine', 'linear', 'constant']).default(d.lrDecay).describe('Learning-rate shape after warmup.'),
    minLrRatio: z.number().min(0).max(1).default(0).describe('Final learning rate as a fraction of lr (cosine/linear).'),
    weightDecay: z.number().min(0).default(d.weightDecay).describe('AdamW decoupled weight decay; norms are exempt.'),
    adamBeta1: z.number().min(0).lt(1).default(0.9).describe('AdamW β1.'),
    adamBeta2: z.number().min(0).lt(1).default(0.95).describe('AdamW β2 (0.95 as in Llama pretraining; more stable than 0.999 for short runs).'),
    adamEps: z.number().positive().default(1e-8).describe('AdamW ε.'),
    maxGradNorm: z.number().min(0).default(d.maxGradNorm).describe('Clip the global gradient norm to this; 0 disables.'),
    logEvery: limit.steps().default(10).describe('Steps between metric lines in metrics.jsonl and on the console.'),
    evalEvery: limit.interval().default(0).describe('Steps between evaluations; 0 evaluates only at the end.'),
    saveEvery: limit.interval().default(0).describe('Steps between checkpoints (checkpoint-<step>/); 0 saves only at the end.'),
    saveTotalLimit: limit.interval().default(2).describe('Checkpoints kept (oldest deleted); 0 keeps all.'),
    evalFraction: z.number().min(0).lt(1).default(0.05).describe('Fraction of rows held out for evaluation when no eval file is given.'),
    lora: LoraOptionsSchema.optional().describe(
      'Train LoRA adapters on a frozen base instead of every weight (only adapters, and a reward model\'s score head, get gradients and AdamW state); the final model in out (and each checkpoint) is then a PEFT adapter folder. Absent: full fine-tuning.',
    ),
    gradientCheckpointing: z
      .boolean()
      .default(false)
      .describe('Recompute each decoder layer in backward instead of keeping its activations: about one extra forward pass of compute for activations of one layer instead of all.'),
    headChunkTokens: z
      .union([z.literal('auto'), z.number().int().min(0).max(1_000_000)])
      .default('auto')
      .describe(
        "Token positions whose LM-head logits exist at once during training (the [B, T, V] logits never do). 'auto' (default): Liger-Kernel's rule, positions / ceil(vocab / hidden) per chunk, so a chunk's logits are about the size of the hidden states whatever the vocabulary, and small heads (under 16 MiB of logits) run in one pass; a number fixes it (1024 × a 128 k vocabulary is 0.5 GB per copy); 0 computes them all at once.",
      ),
  });
}

export type TrainingOptions = z.infer<ReturnType<typeof trainingOptionsSchema>>;
