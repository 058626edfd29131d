/**
 * The Llama decoder exactly as Hugging Face's `LlamaForCausalLM` / `LlamaForSequenceClassification`
 * define it: embeddings; per layer RMSNorm → grouped-query attention with rotary embeddings →
 * residual, RMSNorm → SwiGLU MLP → residual; final RMSNorm; LM head (tied to the embeddings when
 * `tie_word_embeddings`) or, for a reward model, a scalar `score` head read at the last real token
 * (or, for a `logprob` reward model, the LM head's mean log-prob of the response: `rewards`).
 *
 * Parameters are tf.Variables keyed by their HF names. Linear weights are stored transposed
 * relative to HF (`[in, out]`, HF has `[out, in]`): the forward product `x·W` then needs no
 * transpose flag, which is the only form the wasm backend runs on its fast kernel. The
 * checkpoint layer transposes on load and save (`toHfTensors` / `fromHfTensors`).
 */
import * as tf from '@tensorflow/tfjs';
import { type LlamaConfig, type ModelDims, modelDims } from './config.js';
import { type AttentionContext } from './attention.js';
import { applyRope, ropeInverseFrequencies, ropeTables } from './rope.js';
import { labelLogprobs, type HeadChunking } from './lm-head.js';

/** HF names of linear weights (stored [in, out] internally, [out, in] in checkpoints). */
export function isLinearWeight(name: string): boolean {
  return /_proj\.weight$/.test(name) || name === 'lm_head.weight' || name === 'score.weight';
}

export interface ParamSpec {
  name: string;
  /** Internal shape ([in, out] for linear weights). */
  shape: number[];
  kind: 'embedding' | 'linear' | 'norm';
}

/** Every parameter a config implies, in a fixed order. */
export function parameterSpecs(config: LlamaConfig): ParamSpec[] {
  const d = modelDims(config);
  const qDim = d.numHeads * d.headDim;
  const kvDim = d.numKvHeads * d.headDim;
  const specs: ParamSpec[] = [{ name: 'model.embed_tokens.weight', shape: [d.vocabSize, d.hiddenSize], kind: 'embedding' }];
  for (let l = 0; l < d.numLayers; l++) {
    const p = `model.layers.${l}`;
    specs.push(
      { name: `${p}.input_layernorm.weight`, shape: [d.hiddenSize], kind: 'norm' },
      { name: `${p}.self_attn.q_proj.weight`, shape: [d.hiddenSize, qDim], kind: 'linear' },
      { name: `${p}.self_attn.k_proj.weight`, shape: [d.hiddenSize, kvDim], kind: 'linear' },
      { name: `${p}.self_attn.v_proj.weight`, shape: [d.hiddenSize, kvDim], kind: 'linear' },
      { name: `${p}.self_attn.o_proj.weight`, shape: [qDim, d.hiddenSize], kind: 'linear' },
      { name: `${p}.post_attention_layernorm.weight`, shape: [d.hiddenSize], kind: 'norm' },
      { name: `${p}.mlp.gate_proj.weight`, shape: [d.hiddenSize, d.intermediateSize], kind: 'linear' },
      { name: `${p}.mlp.up_proj.weight`, shape: [d.hiddenSize, d.intermediateSize], kind: 'linear' },
      { name: `${p}.mlp.down_proj.weight`, shape: [d.intermediateSize, d.hiddenSize], kind: 'linear' },
    );
  }
  specs.push({ name: 'model.norm.weight', shape: [d.hiddenSize], kind: 'norm' });
  if (d.rewardHead === 'score') specs.push({ name: 'score.weight', shape: [d.hiddenSize, 1], kind: 'linear' });
  else if (!d.tied) specs.push({ name: 'lm_head.weight', shape: [d.hiddenSize, d.vocabSize], kind: 'linear' });
  return specs;
}

/** Where a reward is read in a right-padded batch of prompt + response sequences. */
export interface RewardReadout {
  /** [B] index of each row's last real token (a `score` head reads there). */
  lastIndex: ArrayLike<number>;
  /** [B] index of each row's first response token (after its prompt); needed by a `logprob` head. */
  responseStart?: ArrayLike<number>;
  /** [B·T] the batch's token ids, row-major; needed by a `logprob` head (the labels of its log-probs). */
  inputIds?: ArrayLike<number>;
}

export interface ForwardOutput {
  /** Final-norm hidden states [B, T, C]. */
  hidden: tf.Tensor3D;
}

/**
 * Replaces the plain product `x·W` of one projection, keyed by the weight's HF name (e.g.
 * `model.layers.0.mlp.up_proj.weight`): LoRA adapters (`x·W + (α/r)·(x·A)·B`), or 8-bit weights
 * dequantized inside the call. `weight` is the float parameter when the model holds one.
 * x [N, in] → [N, out].
 */
export type LinearFn = ((x: tf.Tensor2D, weight: tf.Variable | undefined) => tf.Tensor2D) & {
  /** Variables the override reads besides `weight` (LoRA's A and B): gradient checkpointing passes the trainable ones explicitly. */
  variables?: readonly tf.Variable[];
};

export class LlamaModel {
  readonly dims: ModelDims;
  private readonly invFreq: Float64Array;
  /** Projections computed by something other than `x·W` (see {@link LinearFn}). */
  readonly linearOverrides: Map<string, LinearFn>;
  /**
   * Gradient checkpointing (Chen et al. 2016, "Training Deep Nets with Sublinear Memory Cost"):
   * while a gradient tape records, each decoder layer keeps only its input and recomputes its
   * activations in backward — same loss and gradients, one layer's activations at a time.
   */
  gradientCheckpointing = false;
  /**
   * Rows of the LM head computed at a time by the training and scoring paths (`lm-head.ts`): a
   * number, `auto` (sized to the vocabulary), or 0 for the logits of every position at once.
   */
  headChunkTokens: HeadChunking = 0;

  constructor(
    readonly config: LlamaConfig,
    /** Parameters by HF name, linear weights [in, out]. */
    readonly params: Map<string, tf.Variable>,
    /** Initial projection overrides; a weight with one may be absent from `params` (8-bit weights held outside tfjs). */
    linearOverrides: Map<string, LinearFn> = new Map(),
  ) {
    this.dims = modelDims(config);
    this.invFreq = ropeInverseFrequencies(config, this.dims.headDim);
    this.linearOverrides = linearOverrides;
    for (const spec of parameterSpecs(config)) {
      const p = params.get(spec.name);
      if (!p && linearOverrides.has(spec.name)) continue;
      if (!p) throw new Error(`model: missing parameter ${spec.name}`);
      if (p.shape.join(',') !== spec.shape.join(',')) {
        throw new Error(`model: parameter ${spec.name} has shape [${p.shape}], expected [${spec.shape}]`);
      }
    }
  }

  private param(name: string): tf.Variable {
    return this.params.get(name)!;
  }

  /** One projection: x [N, in] → [N, out], through its override when one is set. */
  private linear(x: tf.Tensor2D, name: string): tf.Tensor2D {
    const override = this.linearOverrides.get(name);
    if (override) return override(x, this.params.get(name));
    return tf.matMul(x, this.param(name));
  }

  /** RMSNorm (Zhang & Sennrich 2019): x · rsqrt(mean(x²) + ε) · w, over the last axis. */
  private rmsNorm(x: tf.Tensor2D, weight: tf.Tensor): tf.Tensor2D {
    const variance = tf.mean(tf.square(x), -1, true); // [N, 1]
    return tf.mul(tf.mul(x, tf.rsqrt(tf.add(variance, this.dims.rmsNormEps))), weight);
  }

  /**
   * Runs the decoder over `inputIds` [B, T] (int32) and returns the final-norm hidden states.
   * The attention context supplies positions and decides what each token can see.
   */
  forward(inputIds: tf.Tensor2D, ctx: AttentionContext): tf.Tensor3D {
    return tf.tidy(() => {
      const [b, t] = inputIds.shape;
      const { hiddenSize: c, headDim: d } = this.dims;
      if (ctx.batchSize !== b || ctx.numNewTokens !== t) {
        throw new Error(`model: attention context is for [${ctx.batchSize}, ${ctx.numNewTokens}] tokens, input is [${b}, ${t}]`);
      }
      const tables = ropeTables(this.invFreq, ctx.positions);
      const cos = tf.tensor4d(tables.cos, [b, 1, t, d]); // [B, 1, T, D]
      const sin = tf.tensor4d(tables.sin, [b, 1, t, d]); // [B, 1, T, D]

      const flatIds = tf.reshape(inputIds, [b * t]); // [B·T]
      let x = tf.gather(this.param('model.embed_tokens.weight'), flatIds) as tf.Tensor2D; // [B·T, C]
      for (let l = 0; l < this.dims.numLayers; l++) {
        // One tidy per layer: its intermediates are freed as soon as the layer is done (the
        // gradient tape keeps what backward needs), so peak memory is one layer's, not the model's.
        const input = x;
        const recording = tf.engine().state.gradientDepth > 0;
        x = tf.tidy(() => (this.gradientCheckpointing && recording ? this.checkpointedLayer(l, input, ctx, cos, sin) : this.decoderLayer(l, input, ctx, cos, sin)));
      }
      const out = this.rmsNorm(x, this.param('model.norm.weight')); // [B·T, C]
      return tf.reshape(out, [b, t, c]) as tf.Tensor3D; // [B, T, C]
    });
  }

  /** The trainable variables decoder layer `l` reads: its own parameters and those of its projections' overrides. */
  private layerVariables(l: number): tf.Variable[] {
    const prefix = `model.layers.${l}.`;
    const vars: tf.Variable[] = [];
    for (const [name, v] of this.params) if (name.startsWith(prefix) && v.trainable) vars.push(v);
    for (const [name, fn] of this.linearOverrides) if (name.startsWith(prefix)) vars.push(...(fn.variables ?? []).filter((v) => v.trainable));
    return vars;
  }

  /**
   * Decoder layer `l` under gradient checkpointing: forward without recording its activations
   * (customGrad runs its function off the tape), saving only x, cos and sin; backward recomputes
   * the layer under a tape of its own and differentiates it with respect to x and the layer's
   * trainable variables, passed to customGrad explicitly (closure-captured variables get no
   * gradient there; frozen ones are left captured on purpose).
   */
  private checkpointedLayer(l: number, x: tf.Tensor2D, ctx: AttentionContext, cos: tf.Tensor4D, sin: tf.Tensor4D): tf.Tensor2D {
    const vars = this.layerVariables(l);
    const layer = tf.customGrad((...args: (tf.Tensor | tf.GradSaveFunc)[]) => {
      const save = args[args.length - 1] as tf.GradSaveFunc;
      const input = args[0] as tf.Tensor2D;
      save([input, cos, sin]);
      return {
        value: this.decoderLayer(l, input, ctx, cos, sin), // [B·T, C]
        gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => {
          const [savedX, savedCos, savedSin] = saved;
          // The outer backward's tape: an inner tf.grads replaces and clears it, so put it back.
          const state = tf.engine().state as unknown as { activeTape: unknown };
          const outerTape = state.activeTape;
          try {
            // tf.grads keeps only the gradients; the recomputed activations are freed here, not at the end of backward
            return tf.grads((xIn: tf.Tensor) => this.decoderLayer(l, xIn as tf.Tensor2D, ctx, savedCos as tf.Tensor4D, savedSin as tf.Tensor4D))([savedX, ...vars], dy);
          } finally {
            state.activeTape = outerTape;
          }
        },
      };
    });
    return layer(x, ...vars) as tf.Tensor2D;
  }

  /** Decoder layer `l` over x [B·T, C]: attention block, then SwiGLU MLP block, each residual. */
  private decoderLayer(l: number, x: tf.Tensor2D, ctx: AttentionContext, cos: tf.Tensor4D, sin: tf.Tensor4D): tf.Tensor2D {
    const [b, t] = [ctx.batchSize, ctx.numNewTokens];
    const { numHeads: h, numKvHeads: hkv, headDim: d } = this.dims;
    const p = `model.layers.${l}`;
    // 1) attention block
    const xn = this.rmsNorm(x, this.param(`${p}.input_layernorm.weight`)); // [B·T, C]
    const toHeads = (y: tf.Tensor2D, numHeads: number) =>
      tf.transpose(tf.reshape(y, [b, t, numHeads, d]), [0, 2, 1, 3]) as tf.Tensor4D; // [B, heads, T, D]
    const q = applyRope(toHeads(this.linear(xn, `${p}.self_attn.q_proj.weight`), h), cos, sin); // [B, H, T, D]
    const k = applyRope(toHeads(this.linear(xn, `${p}.self_attn.k_proj.weight`), hkv), cos, sin); // [B, Hkv, T, D]
    const v = toHeads(this.linear(xn, `${p}.self_attn.v_proj.weight`), hkv); // [B, Hkv, T, D]
    const attn = ctx.attend(l, q, k, v); // [B, H, T, D]
    const merged = tf.reshape(tf.transpose(attn, [0, 2, 1, 3]), [b * t, h * d]) as tf.Tensor2D; // [B·T, H·D]
    const afterAttention = tf.add(x, this.linear(merged, `${p}.self_attn.o_proj.weight`)) as tf.Tensor2D; // [B·T, C]
    // 2) SwiGLU MLP block (Shazeer 2020): down(silu(gate(x)) ⊙ up(x))
    const xn2 = this.rmsNorm(afterAttention, this.param(`${p}.post_attention_layernorm.weight`)); // [B·T, C]
    const gate = this.linear(xn2, `${p}.mlp.gate_proj.weight`); // [B·T, I]
    const up = this.linear(xn2, `${p}.mlp.up_proj.weight`); // [B·T, I]
    const act = tf.mul(tf.mul(gate, tf.sigmoid(gate)), up) as tf.Tensor2D; // [B·T, I]
    return tf.add(afterAttention, this.linear(act, `${p}.mlp.down_proj.weight`)) as tf.Tensor2D; // [B·T, C]
  }

  /** The LM head's weight: the embedding [V, C] when tied (logits = h·Eᵀ), else lm_head [C, V]. */
  lmHeadWeight(): { weight: tf.Variable; transposed: boolean } {
    return this.dims.tied ? { weight: this.param('model.embed_tokens.weight'), transposed: true } : { weight: this.param('lm_head.weight'), transposed: false };
  }

  /** LM head: hidden [B, T, C] → logits [B, T, V]. */
  logits(hidden: tf.Tensor3D): tf.Tensor3D {
    return tf.tidy(() => {
      const [b, t, c] = hidden.shape;
      const flat = tf.reshape(hidden, [b * t, c]); // [B·T, C]
      const { weight, transposed } = this.lmHeadWeight();
      const logits = tf.matMul(flat, weight, false, transposed); // [B·T, V]
      return tf.reshape(logits, [b, t, this.dims.vocabSize]) as tf.Tensor3D; // [B, T, V]
    });
  }

  /**
   * Reward of each row: hidden [B, T, C] (of `at.inputIds`) → rewards [B].
   *
   * - `score` head (HF's `LlamaForSequenceClassification`): score.weight · h at the row's last real
   *   token `at.lastIndex`.
   * - `logprob` head (`tfalign_reward`): beta · (1/|y|) Σ_t log p(y_t | x, y_<t) over the response
   *   tokens at positions [responseStart, lastIndex] — SimPO's length-normalised implicit reward
   *   (Meng et al. 2024, eq. 4), read from the LM head (`logprobRewards`).
   */
  rewards(hidden: tf.Tensor3D, at: RewardReadout): tf.Tensor1D {
    if (!this.dims.isRewardModel) throw new Error('model: rewards() needs a reward model (LlamaForSequenceClassification, or a causal LM with tfalign_reward)');
    return tf.tidy(() => {
      const [b, t, c] = hidden.shape;
      if (this.dims.rewardHead === 'logprob') return this.logprobRewards(hidden, at).rewards; // [B]
      const rows = Int32Array.from({ length: b }, (_, r) => r * t + at.lastIndex[r]);
      const last = tf.gather(tf.reshape(hidden, [b * t, c]), tf.tensor1d(rows, 'int32')); // [B, C]
      return tf.reshape(tf.matMul(last, this.param('score.weight')), [b]) as tf.Tensor1D; // [B]
    });
  }

  /**
   * A `logprob` head's rewards r = beta · sums / numTokens [B] and the response log-likelihoods
   * they are read from, `sums` [B] = Σ_t log p(y_t | x, y_<t) (a trainer's NLL term reuses them).
   * The LM head runs on the response positions only (responseStart−1 … lastIndex−1, the positions
   * that predict the response's tokens, its end-of-turn token included), `headChunkTokens` rows at
   * a time, as the causal-LM objectives do: no [B, T, V] logits. Needs `at.inputIds` and
   * `at.responseStart`.
   */
  logprobRewards(hidden: tf.Tensor3D, at: RewardReadout): { rewards: tf.Tensor1D; sums: tf.Tensor1D } {
    const [b, t, c] = hidden.shape;
    const { inputIds, responseStart, lastIndex } = at;
    if (inputIds === undefined || responseStart === undefined) throw new Error('model: a logprob reward needs the token ids and where each response starts');
    if (inputIds.length !== b * t) throw new Error(`model: inputIds has ${inputIds.length} ids for a [${b}, ${t}] batch`);
    const positions: number[] = []; // flat b·T index of each predicting position
    const labels: number[] = []; // the token it predicts
    const rowOf: number[] = []; // its row
    const counts = new Float32Array(b);
    for (let r = 0; r < b; r++) {
      const from = responseStart[r] - 1;
      if (!(from >= 0 && from < lastIndex[r] && lastIndex[r] < t)) {
        throw new Error(`model: row ${r}: response [${responseStart[r]}, ${lastIndex[r]}] is not inside a sequence of ${t} tokens after a non-empty prompt`);
      }
      for (let p = from; p < lastIndex[r]; p++) {
        positions.push(r * t + p);
        labels.push(inputIds[r * t + p + 1]);
        rowOf.push(r);
      }
      counts[r] = lastIndex[r] - from;
    }
    const m = positions.length;
    const membership = new Float32Array(b * m); // [B, M]: 1 where position j belongs to row r
    rowOf.forEach((r, j) => (membership[r * m + j] = 1));
    return tf.tidy(() => {
      const rows = tf.gather(tf.reshape(hidden, [b * t, c]), tf.tensor1d(positions, 'int32')) as tf.Tensor2D; // [M, C]
      const logps = labelLogprobs(this, rows, tf.tensor1d(labels, 'int32'), this.headChunkTokens); // [M]
      const sums = tf.reshape(tf.matMul(tf.tensor2d(membership, [b, m]), tf.reshape(logps, [m, 1])), [b]) as tf.Tensor1D; // [B]
      return { rewards: tf.mul(this.dims.rewardBeta!, tf.div(sums, tf.tensor1d(counts))) as tf.Tensor1D, sums }; // [B], [B]
    });
  }

  /** Parameter count. */
  numParameters(): number {
    let n = 0;
    for (const p of this.params.values()) n += p.size;
    return n;
  }

  dispose(): void {
    for (const p of this.params.values()) p.dispose();
    this.params.clear();
  }
}
