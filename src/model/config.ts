/**
 * The model configuration: zod over Hugging Face's `config.json` for the Llama family
 * (`LlamaForCausalLM`, `LlamaForSequenceClassification`). Field names are HF's, so a folder's
 * config.json parses as it is and is written back unchanged apart from what tfalign sets.
 */
import { z } from 'zod';

export const SUPPORTED_ARCHITECTURES = ['LlamaForCausalLM', 'LlamaForSequenceClassification'] as const;

const RopeScalingSchema = z
  .object({
    rope_type: z.string().optional().describe('Scaling kind; tfalign implements "llama3" and "default".'),
    type: z.string().optional().describe('Older spelling of rope_type.'),
    factor: z.number().positive().optional().describe('Context extension factor (llama3: 8 for Llama 3.1, 32 for Llama 3.2).'),
    low_freq_factor: z.number().positive().optional().describe('llama3: wavelengths above original_max/low_freq_factor are scaled by 1/factor.'),
    high_freq_factor: z.number().positive().optional().describe('llama3: wavelengths below original_max/high_freq_factor are left as they are.'),
    original_max_position_embeddings: z.number().int().positive().optional().describe('llama3: the pre-extension context length.'),
    rope_theta: z.number().positive().optional().describe('rope_parameters only: the base, replacing the top-level rope_theta.'),
  })
  .passthrough();

export type RopeScaling = z.infer<typeof RopeScalingSchema>;

/** How a reward model's scalar is read: HF's `score` head, or the LM head's length-normalised log-likelihood. */
export const REWARD_HEADS = ['score', 'logprob'] as const;
export type RewardHead = (typeof REWARD_HEADS)[number];

/**
 * `tfalign_reward` in config.json: a causal LM used as a reward model through its LM head,
 * r(x, y) = beta · (1/|y|) Σ_t log p(y_t | x, y_<t) over the response tokens (its end-of-turn token
 * included) — SimPO's implicit reward (Meng et al. 2024, eq. 4). Other tools load the folder as a
 * plain `LlamaForCausalLM` and ignore the field.
 */
export const TfalignRewardSchema = z
  .object({
    head: z.literal('logprob').describe('The reward is beta times the mean log-probability of the response tokens under the LM head.'),
    beta: z.number().positive().describe('Scale of the reward (SimPO\'s beta): r = beta · mean token log-prob.'),
  })
  .strict();
export type TfalignReward = z.infer<typeof TfalignRewardSchema>;

export const LlamaConfigSchema = z
  .object({
    architectures: z.array(z.string()).default(['LlamaForCausalLM']).describe('HF class names; the first decides causal LM vs sequence classification.'),
    model_type: z.literal('llama').default('llama').describe('Only the Llama architecture is implemented (Llama 2/3, TinyLlama, SmolLM2 use it).'),
    vocab_size: z.number().int().positive().describe('Number of token ids; the embedding has this many rows.'),
    hidden_size: z.number().int().positive().describe('Width of the residual stream.'),
    intermediate_size: z.number().int().positive().describe('Width of the SwiGLU MLP.'),
    num_hidden_layers: z.number().int().positive().describe('Number of decoder blocks.'),
    num_attention_heads: z.number().int().positive().describe('Query heads.'),
    num_key_value_heads: z.number().int().positive().optional().describe('Key/value heads (GQA); defaults to num_attention_heads (MHA), 1 is MQA.'),
    head_dim: z.number().int().positive().optional().describe('Per-head width; defaults to hidden_size / num_attention_heads.'),
    max_position_embeddings: z.number().int().positive().default(2048).describe('Longest sequence (tokens) the model accepts.'),
    rms_norm_eps: z.number().positive().default(1e-6).describe('RMSNorm epsilon (HF default 1e-6; Llama 3 uses 1e-5).'),
    rope_theta: z.number().positive().default(10000).describe('RoPE base (10000 in Llama 2, 500000 in Llama 3).'),
    rope_scaling: RopeScalingSchema.nullable().optional().describe('RoPE scaling; type "llama3" supported.'),
    rope_parameters: RopeScalingSchema.nullable().optional().describe('Newer transformers spelling of rope_scaling (may carry rope_theta).'),
    tie_word_embeddings: z.boolean().default(false).describe('LM head shares the embedding matrix (no lm_head.weight tensor).'),
    attention_bias: z.boolean().default(false).describe('Bias on q/k/v/o projections (false for Llama).'),
    mlp_bias: z.boolean().default(false).describe('Bias on the MLP projections (false for Llama).'),
    hidden_act: z.literal('silu').default('silu').describe('MLP activation; Llama uses SiLU (SwiGLU).'),
    bos_token_id: z.number().int().nullable().optional().describe('Beginning-of-text id.'),
    eos_token_id: z.union([z.number().int(), z.array(z.number().int())]).nullable().optional().describe('End id(s); generation stops on any.'),
    pad_token_id: z.number().int().nullable().optional().describe('Padding id; the reward model reads the last non-padding token.'),
    num_labels: z.number().int().positive().optional().describe('Sequence classification outputs; 1 for a reward model.'),
    torch_dtype: z.string().optional().describe('dtype the tensors are stored in (float32, bfloat16, float16).'),
    tfalign_reward: TfalignRewardSchema.optional().describe(
      'Marks a LlamaForCausalLM folder as a reward model whose reward is read from its LM head (`rm train` with head: logprob); absent for causal LMs and for LlamaForSequenceClassification (score head) reward models.',
    ),
  })
  .passthrough()
  .superRefine((c, ctx) => {
    const arch = c.architectures[0];
    if (!(SUPPORTED_ARCHITECTURES as readonly string[]).includes(arch)) {
      ctx.addIssue({ code: 'custom', path: ['architectures'], message: `unsupported architecture ${arch} (supported: ${SUPPORTED_ARCHITECTURES.join(', ')})` });
    }
    if (c.tfalign_reward !== undefined && arch !== 'LlamaForCausalLM') {
      ctx.addIssue({ code: 'custom', path: ['tfalign_reward'], message: `a logprob reward head reads the LM head; ${arch} has none (use LlamaForCausalLM)` });
    }
    if (c.head_dim === undefined && c.hidden_size % c.num_attention_heads !== 0) {
      ctx.addIssue({ code: 'custom', path: ['num_attention_heads'], message: `${c.num_attention_heads} heads do not divide hidden_size ${c.hidden_size}` });
    }
    const numKv = c.num_key_value_heads ?? c.num_attention_heads;
    if (c.num_attention_heads % numKv !== 0) {
      ctx.addIssue({ code: 'custom', path: ['num_key_value_heads'], message: `${numKv} key/value heads do not divide ${c.num_attention_heads} attention heads` });
    }
    if ((c.head_dim ?? c.hidden_size / c.num_attention_heads) % 2 !== 0) {
      ctx.addIssue({ code: 'custom', path: ['head_dim'], message: 'head_dim must be even for rotary embeddings' });
    }
    // Special token ids index the embedding: out of range they crash a forward pass or never match.
    const checkId = (field: 'bos_token_id' | 'eos_token_id' | 'pad_token_id', id: number, path: (string | number)[]) => {
      if (id < 0 || id >= c.vocab_size) ctx.addIssue({ code: 'custom', path, message: `token id ${id} is outside the vocabulary [0, ${c.vocab_size})` });
    };
    for (const field of ['bos_token_id', 'pad_token_id'] as const) {
      const id = c[field];
      if (typeof id === 'number') checkId(field, id, [field]);
    }
    const eos = c.eos_token_id;
    if (typeof eos === 'number') checkId('eos_token_id', eos, ['eos_token_id']);
    else if (Array.isArray(eos)) eos.forEach((id, i) => checkId('eos_token_id', id, ['eos_token_id', i]));
    const scaling = c.rope_parameters ?? c.rope_scaling;
    const kind = scaling?.rope_type ?? scaling?.type ?? 'default';
    if (!['default', 'llama3'].includes(kind)) {
      ctx.addIssue({ code: 'custom', path: ['rope_scaling', 'rope_type'], message: `unsupported rope scaling "${kind}" (supported: default, llama3)` });
    }
  });

export type LlamaConfigInput = z.input<typeof LlamaConfigSchema>;
export type LlamaConfig = z.infer<typeof LlamaConfigSchema>;

/** The derived sizes every part of the model uses. */
export interface ModelDims {
  vocabSize: number;
  hiddenSize: number;
  intermediateSize: number;
  numLayers: number;
  numHeads: number;
  numKvHeads: number;
  headDim: number;
  maxPositions: number;
  rmsNormEps: number;
  tied: boolean;
  /** A reward model of either head (`rewardHead`): it scores, it does not generate. */
  isRewardModel: boolean;
  /**
   * How its reward is read: `score` (LlamaForSequenceClassification: a `score.weight` [C, 1] instead
   * of the LM head), `logprob` (a causal LM marked by `tfalign_reward`: the LM head's mean log-prob);
   * undefined for a causal LM.
   */
  rewardHead?: RewardHead;
  /** beta of a `logprob` reward head (r = beta · mean token log-prob). */
  rewardBeta?: number;
}

export function modelDims(c: LlamaConfig): ModelDims {
  return {
    vocabSize: c.vocab_size,
    hiddenSize: c.hidden_size,
    intermediateSize: c.intermediate_size,
    numLayers: c.num_hidden_layers,
    numHeads: c.num_attention_heads,
    numKvHeads: c.num_key_value_heads ?? c.num_attention_heads,
    headDim: c.head_dim ?? c.hidden_size / c.num_attention_heads,
    maxPositions: c.max_position_embeddings,
    rmsNormEps: c.rms_norm_eps,
    tied: c.tie_word_embeddings,
    ...rewardHeadOf(c),
  };
}

function rewardHeadOf(c: LlamaConfig): Pick<ModelDims, 'isRewardModel' | 'rewardHead' | 'rewardBeta'> {
  if (c.architectures[0] === 'LlamaForSequenceClassification') return { isRewardModel: true, rewardHead: 'score' };
  if (c.tfalign_reward !== undefined) return { isRewardModel: true, rewardHead: 'logprob', rewardBeta: c.tfalign_reward.beta };
  return { isRewardModel: false };
}

/**
 * Parses a config object; throws one line naming the source and every problem
 * (`config.json: num_key_value_heads: 3 key/value heads do not divide 8 attention heads`).
 */
export function parseLlamaConfig(raw: unknown, source = 'config.json'): LlamaConfig {
  const result = LlamaConfigSchema.safeParse(raw);
  if (!result.success) {
    const problems = result.error.issues.map((i) => `${i.path.join('.') || '(root)'}: ${i.message}`);
    throw new Error(`${source}: ${problems.join('; ')}`);
  }
  return result.data;
}

/** Number of parameters implied by a config (embeddings counted once when tied). */
export function countParameters(c: LlamaConfig): number {
  const d = modelDims(c);
  const attn = d.hiddenSize * d.numHeads * d.headDim * 2 + d.hiddenSize * d.numKvHeads * d.headDim * 2;
  const mlp = 3 * d.hiddenSize * d.intermediateSize;
  const perLayer = attn + mlp + 2 * d.hiddenSize;
  const head = d.rewardHead === 'score' ? d.hiddenSize : d.tied ? 0 : d.vocabSize * d.hiddenSize;
  return d.vocabSize * d.hiddenSize + d.numLayers * perLayer + d.hiddenSize + head;
}
