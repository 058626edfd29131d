/**
 * How the model's attention gets its keys and values.
 *
 * The decoder computes queries, keys and values of the *new* tokens (RoPE applied) and hands
 * them to an `AttentionContext`, which decides what the new tokens can see: the whole
 * sequence at once in training (`FullAttention`), a growing contiguous cache in generation
 * (`DenseKVCache`), or the paged, prefix-sharing cache of the sampling engine
 * (`samplers/kv`). The model never knows which; a cache plugs in without touching it.
 */
import * as tf from '@tensorflow/tfjs';

/** Large negative bias for masked scores: finite, so a fully masked (padding) row gives a uniform softmax instead of NaN. */
export const MASK_BIAS = -1e9;

export interface AttentionContext {
  /** Rows in this forward pass. */
  readonly batchSize: number;
  /** New tokens per row in this forward pass. */
  readonly numNewTokens: number;
  /** RoPE position of every new token, row-major [B, T]. */
  readonly positions: Int32Array;
  /**
   * Stores the new keys/values of `layer` (if this context caches) and returns attention of
   * the new queries over every key the new tokens may see.
   * q: [B, H, T, D]; k, v: [B, Hkv, T, D]; returns [B, H, T, D].
   */
  attend(layer: number, q: tf.Tensor4D, k: tf.Tensor4D, v: tf.Tensor4D): tf.Tensor4D;
}

/**
 * softmax(q·kᵀ/√d + bias)·v with grouped-query attention done without copying keys:
 * the G = H/Hkv query heads that share a key/value head are stacked along the query axis.
 *
 * q: [B, H, T, D]; k, v: [B, Hkv, Tk, D]; bias: [B, 1, 1, T, Tk] additive (0 or MASK_BIAS) or null.
 * Above `maxScoresPerChunk` scores the queries are processed in chunks (same result).
 */
export function scaledDotProductAttention(
  q: tf.Tensor4D,
  k: tf.Tensor4D,
  v: tf.Tensor4D,
  bias: tf.Tensor | null,
  maxScoresPerChunk = MAX_SCORES_PER_CHUNK,
): tf.Tensor4D {
  const [b, h, t] = q.shape;
  const numScores = b * h * t * k.shape[2];
  if (numScores > maxScoresPerChunk && t > 1) {
    // Long prefills (e.g. K copies of a 1,024-token prompt): the [B, H, T, Tk] scores are held
    // several times inside one tidy, which can exceed wasm's 4 GB heap. Queries are independent,
    // so attend in chunks of query positions and concatenate.
    const chunk = Math.max(1, Math.floor((maxScoresPerChunk * t) / numScores));
    return tf.tidy(() => {
      const parts: tf.Tensor4D[] = [];
      for (let start = 0; start < t; start += chunk) {
        const size = Math.min(chunk, t - start);
        const qPart = tf.slice(q, [0, 0, start, 0], [b, h, size, q.shape[3]]); // [B, H, size, D]
        const biasPart = bias ? tf.slice(bias, [0, 0, 0, start, 0], [bias.shape[0], 1, 1, size, bias.shape[4]!]) : null; // [B, 1, 1, size, Tk]
        parts.push(attendChunk(qPart, k, v, biasPart));
      }
      return tf.concat(parts, 2) as tf.Tensor4D; // [B, H, T, D]
    });
  }
  return attendChunk(q, k, v, bias);
}

/** Most attention scores (B·H·T·Tk floats) computed at once: 2^25 floats = 128 MB per copy. */
const MAX_SCORES_PER_CHUNK = 2 ** 25;

function attendChunk(q: tf.Tensor4D, k: tf.Tensor4D, v: tf.Tensor4D, bias: tf.Tensor | null): tf.Tensor4D {
  return tf.tidy(() => {
    const [b, h, t, d] = q.shape;
    const numKvHeads = k.shape[1];
    const tk = k.shape[2];
    const g = h / numKvHeads;
    const qGrouped = tf.reshape(q, [b, numKvHeads, g * t, d]); // [B, Hkv, G·T, D]
    let scores = tf.matMul(qGrouped, k, false, true); // [B, Hkv, G·T, Tk]
    scores = tf.mul(scores, tf.scalar(1 / Math.sqrt(d)));
    if (bias) {
      const scores5 = tf.reshape(scores, [b, numKvHeads, g, t, tk]); // [B, Hkv, G, T, Tk]
      scores = tf.reshape(tf.add(scores5, bias), [b, numKvHeads, g * t, tk]); // [B, Hkv, G·T, Tk]
    }
    const probs = tf.softmax(scores); // [B, Hkv, G·T, Tk]
    const out = tf.matMul(probs, v); // [B, Hkv, G·T, D]
    return tf.reshape(out, [b, h, t, d]); // [B, H, T, D]
  });
}

export interface FullAttentionOptions {
  batchSize: number;
  seqLen: number;
  /**
   * Document id of every token, row-major [B, T]; 0 marks padding. A token sees only earlier
   * tokens of its own document, so packed rows do not attend across documents, and positions
   * restart at 0 at each document start. Omitted: one document per row, no padding.
   */
  segmentIds?: Int32Array;
}

/** Additive causal + document bias [B, 1, 1, T, T] and per-document positions [B, T]. */
export function documentMask(opts: FullAttentionOptions): { bias: Float32Array; positions: Int32Array } {
  const { batchSize: b, seqLen: t, segmentIds } = opts;
  const bias = new Float32Array(b * t * t).fill(MASK_BIAS);
  const positions = new Int32Array(b * t);
  for (let r = 0; r < b; r++) {
    let docStart = 0;
    for (let i = 0; i < t; i++) {
      const seg = segmentIds ? segmentIds[r * t + i] : 1;
      if (i > 0 && segmentIds && seg !== segmentIds[r * t + i - 1]) docStart = i;
      positions[r * t + i] = i - docStart;
      const rowBase = (r * t + i) * t;
      if (seg === 0) {
        bias[rowBase + i] = 0; // padding attends itself only; its output is never used
        continue;
      }
      for (let j = docStart; j <= i; j++) bias[rowBase + j] = 0;
    }
  }
  return { bias, positions };
}

/** Training / scoring: every token of the batch at once, causal within each document. */
export class FullAttention implements AttentionContext {
  readonly batchSize: number;
  readonly numNewTokens: number;
  readonly positions: Int32Array;
  private readonly biasValues: Float32Array;
  private bias: tf.Tensor | undefined;

  constructor(opts: FullAttentionOptions) {
    this.batchSize = opts.batchSize;
    this.numNewTokens = opts.seqLen;
    const { bias, positions } = documentMask(opts);
    this.biasValues = bias;
    this.positions = positions;
  }

  attend(_layer: number, q: tf.Tensor4D, k: tf.Tensor4D, v: tf.Tensor4D): tf.Tensor4D {
    // One bias tensor shared by all layers of a forward pass, owned by the caller's tidy (the
    // model's forward); a later forward with the same context makes it again.
    if (!this.bias || this.bias.isDisposed) {
      this.bias = tf.tensor(this.biasValues, [this.batchSize, 1, 1, this.numNewTokens, this.numNewTokens]);
    }
    return scaledDotProductAttention(q, k, v, this.bias);
  }

  /** Releases the bias tensor now instead of at the end of the caller's tidy. */
  dispose(): void {
    this.bias?.dispose();
    this.bias = undefined;
  }
}

/**
 * The contiguous per-row cache of Hugging Face's `generate`: every row stores its own keys and
 * values, so K samples of one prompt hold the prompt K times. tfalign uses it for `generate`
 * and as the `dense` baseline the paged cache is measured against.
 *
 * Rows may hold different numbers of valid tokens: `step(valid)` marks which new tokens are
 * real (left-padded prompts mark their padding invalid); invalid keys are never attended to and
 * positions count valid tokens only.
 */
export class DenseKVCache {
  private readonly keys: (tf.Tensor4D | undefined)[];
  private readonly values: (tf.Tensor4D | undefined)[];
  /** keyValid[r][j]: whether column j of row r is a real token. */
  private readonly keyValid: number[][];

  constructor(
    readonly numLayers: number,
    readonly batchSize: number,
  ) {
    this.keys = new Array(numLayers).fill(undefined);
    this.values = new Array(numLayers).fill(undefined);
    this.keyValid = Array.from({ length: batchSize }, () => []);
  }

  /** Cached columns (real or padding) per row. */
  get length(): number {
    return this.keyValid[0].length;
  }

  /** Number of real tokens in row r. */
  numValid(r: number): number {
    return this.keyValid[r].reduce((a, x) => a + x, 0);
  }

  /** The context for the next forward of `numNewTokens` per row; `valid` is [B, T] (default all real). */
  step(numNewTokens: number, valid?: ArrayLike<number>): AttentionContext {
    const b = this.batchSize;
    const past = this.length;
    const positions = new Int32Array(b * numNewTokens);
    for (let r = 0; r < b; r++) {
      let pos = this.numValid(r);
      for (let i = 0; i < numNewTokens; i++) {
        const isValid = valid ? valid[r * numNewTokens + i] : 1;
        positions[r * numNewTokens + i] = isValid ? pos : 0;
        if (isValid) pos++;
        this.keyValid[r].push(isValid ? 1 : 0);
      }
    }
    const total = past + numNewTokens;
    const biasValues = new Float32Array(b * numNewTokens * total).fill(MASK_BIAS);
    for (let r = 0; r < b; r++) {
      for (let i = 0; i < numNewTokens; i++) {
        const rowBase = (r * numNewTokens + i) * total;
        let any = false;
        for (let j = 0; j <= past + i; j++) {
          if (this.keyValid[r][j]) {
            biasValues[rowBase + j] = 0;
            any = true;
          }
        }
        if (!any) biasValues[rowBase + past + i] = 0; // a padding query attends itself
      }
    }
    let bias: tf.Tensor | undefined;
    const cache = this;
    return {
      batchSize: b,
      numNewTokens,
      positions,
      attend(layer, q, k, v) {
        const oldK = cache.keys[layer];
        const oldV = cache.values[layer];
        const allK = tf.keep(oldK ? tf.concat([oldK, k], 2) : k.clone()); // [B, Hkv, Tpast+T, D]
        const allV = tf.keep(oldV ? tf.concat([oldV, v], 2) : v.clone()); // [B, Hkv, Tpast+T, D]
        oldK?.dispose();
        oldV?.dispose();
        cache.keys[layer] = allK;
        cache.values[layer] = allV;
        // made in the first layer's tidy, so made again when a layer's tidy has disposed it
        if (!bias || bias.isDisposed) bias = tf.tensor(biasValues, [b, 1, 1, numNewTokens, total]);
        return scaledDotProductAttention(q, allK, allV, bias);
      },
    };
  }

  /** Bytes held by cached keys and values. */
  bytes(): number {
    let n = 0;
    for (let l = 0; l < this.numLayers; l++) n += ((this.keys[l]?.size ?? 0) + (this.values[l]?.size ?? 0)) * 4;
    return n;
  }

  dispose(): void {
    for (let l = 0; l < this.numLayers; l++) {
      this.keys[l]?.dispose();
      this.values[l]?.dispose();
      this.keys[l] = undefined;
      this.values[l] = undefined;
    }
  }
}
