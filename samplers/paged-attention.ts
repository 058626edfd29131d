/**
 * Attention over the paged KV cache (samplers/kv): the `AttentionContext`s the sampling engine
 * hands the model. The typed-array pools of `PagedKVStorage` are the one store of keys and
 * values; every layer of every forward writes the new tokens' K/V into their slots and reads
 * what it attends to back from the pools (one layer at a time, released at the end of the
 * forward's tidy), so nothing outside the pools persists between steps.
 *
 * - `PagedPrefillAttention`: T new tokens of one sequence at positions [c, c + T), where the
 *   first c tokens came from the prefix cache. The new tokens attend causally to the cached
 *   blocks and to each other; RoPE positions continue from c.
 * - `PagedDecodeAttention`: N sequences × 1 new token. With cascade attention (Juravsky et al.
 *   2024, "Hydragen"; FlashInfer's cascade / shared-prefix kernels) the K samples of one prompt
 *   split their keys into the shared prompt prefix and their own suffix:
 *     - prefix: the G query heads of every sample of the group, for one key/value head, are one
 *       [n·G, D]·[D, P] product against the single stored copy of the prompt's keys (the
 *       routed wasm kernel runs it on XNNPACK), and likewise for the values;
 *     - suffix: each sample's own tokens after the prompt, padded to the longest and masked;
 *     - the two partial softmaxes are merged exactly with their log-sum-exp: with oᵢ the
 *       softmax-weighted values over part i alone and lseᵢ = log Σ exp(scores) over part i,
 *       attention = (o₁·e^{lse₁} + o₂·e^{lse₂}) / (e^{lse₁} + e^{lse₂}) = o₂ + σ(lse₁ − lse₂)·(o₁ − o₂).
 *   A prompt of P tokens then costs the K samples one pass over P keys per step instead of K.
 */
import * as tf from '@tensorflow/tfjs';
import { type AttentionContext, MASK_BIAS, scaledDotProductAttention } from '../src/model/attention.js';
import type { KVCacheManager } from './kv/cache-manager.js';
import type { PagedKVStorage } from './kv/kv-storage.js';

/** The block tables and the pools they index; the engine owns both. */
export interface PagedKVCache {
  manager: KVCacheManager;
  storage: PagedKVStorage;
}

/** A copy of `numTokens` consecutive tokens' K/V from pool slot `srcSlot` to token `dstToken` of a buffer. */
interface TokenRun {
  srcSlot: number;
  dstToken: number;
  numTokens: number;
}

/**
 * The runs of consecutive slots holding positions [fromPos, toPos) of a block table, landing
 * at tokens dstStart, dstStart + 1, … of a contiguous buffer. One run per block touched.
 */
function tokenRuns(blockTable: readonly number[], blockSize: number, fromPos: number, toPos: number, dstStart: number): TokenRun[] {
  const runs: TokenRun[] = [];
  let pos = fromPos;
  while (pos < toPos) {
    const offset = pos % blockSize;
    const numTokens = Math.min(blockSize - offset, toPos - pos);
    runs.push({ srcSlot: blockTable[Math.floor(pos / blockSize)]! * blockSize + offset, dstToken: dstStart + (pos - fromPos), numTokens });
    pos += numTokens;
  }
  return runs;
}

/** Copies token runs out of a pool into a zero-initialised token-major buffer [numTokens, Hkv, D] (flat). */
function gatherRuns(pool: Float32Array, runs: readonly TokenRun[], tokenStride: number, numTokens: number): Float32Array {
  const out = new Float32Array(numTokens * tokenStride);
  for (const run of runs) {
    const src = run.srcSlot * tokenStride;
    out.set(pool.subarray(src, src + run.numTokens * tokenStride), run.dstToken * tokenStride);
  }
  return out;
}

/**
 * Copies token runs out of a pool into a zero-initialised head-major buffer
 * [numRows, Hkv, tokensPerRow, D] (flat), where run token x lands in row ⌊x / tokensPerRow⌋.
 * The layout attention products read, without a transpose kernel afterwards.
 */
function gatherRunsHeadMajor(
  pool: Float32Array,
  runs: readonly TokenRun[],
  storage: PagedKVStorage,
  numRows: number,
  tokensPerRow: number,
): Float32Array {
  const { numKvHeads, headDim, tokenStride } = storage;
  if (numKvHeads === 1) return gatherRuns(pool, runs, tokenStride, numRows * tokensPerRow); // the same layout
  const out = new Float32Array(numRows * numKvHeads * tokensPerRow * headDim);
  for (const run of runs) {
    for (let j = 0; j < run.numTokens; j++) {
      const token = run.dstToken + j;
      const row = Math.floor(token / tokensPerRow);
      const rowBase = row * numKvHeads * tokensPerRow;
      const position = token - row * tokensPerRow;
      const src = (run.srcSlot + j) * tokenStride;
      for (let head = 0; head < numKvHeads; head++) {
        const from = src + head * headDim;
        out.set(pool.subarray(from, from + headDim), ((rowBase + head * tokensPerRow) + position) * headDim);
      }
    }
  }
  return out;
}

/**
 * Prefill of one sequence: positions [numCachedTokens, numCachedTokens + numNewTokens), whose
 * slots the manager has already allocated (`allocatePrompt`). Keys and values of the cached
 * positions are read from the pools; a prompt with no cache hit attends to its own new K/V
 * directly (the same numbers, without the round trip through the pools).
 */
export class PagedPrefillAttention implements AttentionContext {
  readonly batchSize = 1;
  readonly numNewTokens: number;
  readonly positions: Int32Array;
  private readonly slots: Int32Array;
  private readonly keyRuns: TokenRun[];
  private readonly numKeys: number;
  private readonly biasValues: Float32Array;
  private bias: tf.Tensor | undefined;

  constructor(
    private readonly cache: PagedKVCache,
    seqId: number,
    readonly numCachedTokens: number,
    numNewTokens: number,
  ) {
    const { manager } = cache;
    this.numNewTokens = numNewTokens;
    this.numKeys = numCachedTokens + numNewTokens;
    if (numNewTokens < 1 || this.numKeys > manager.numTokens(seqId)) {
      throw new Error(
        `samplers/paged-attention: prefill of sequence ${seqId}: positions [${numCachedTokens}, ${this.numKeys}) do not fit its ${manager.numTokens(seqId)} allocated slots`,
      );
    }
    this.positions = Int32Array.from({ length: numNewTokens }, (_, i) => numCachedTokens + i);
    this.slots = manager.slotMapping(seqId, numCachedTokens, this.numKeys);
    this.keyRuns = numCachedTokens > 0 ? tokenRuns(manager.blockTable(seqId), manager.blockSize, 0, this.numKeys, 0) : [];
    // New token i (position c + i) sees keys 0 … c + i.
    this.biasValues = new Float32Array(numNewTokens * this.numKeys).fill(MASK_BIAS);
    for (let i = 0; i < numNewTokens; i++) this.biasValues.fill(0, i * this.numKeys, i * this.numKeys + numCachedTokens + i + 1);
  }

  attend(layer: number, q: tf.Tensor4D, k: tf.Tensor4D, v: tf.Tensor4D): tf.Tensor4D {
    const { storage } = this.cache;
    const [, numKvHeads, t, d] = k.shape;
    const toTokenMajor = (x: tf.Tensor4D) => tf.transpose(x, [0, 2, 1, 3]).dataSync() as Float32Array; // [1, T, Hkv, D]
    storage.write(layer, this.slots, toTokenMajor(k), toTokenMajor(v));
    // One bias tensor shared by the layers of a forward, owned by the forward's tidy (as FullAttention).
    if (!this.bias || this.bias.isDisposed) this.bias = tf.tensor(this.biasValues, [1, 1, 1, t, this.numKeys]);
    if (this.numCachedTokens === 0) return scaledDotProductAttention(q, k, v, this.bias);
    const fromPool = (pool: Float32Array) =>
      tf.tensor4d(gatherRunsHeadMajor(pool, this.keyRuns, storage, 1, this.numKeys), [1, numKvHeads, this.numKeys, d]); // [1, Hkv, L, D]
    return scaledDotProductAttention(q, fromPool(storage.keyPool(layer)), fromPool(storage.valuePool(layer)), this.bias);
  }
}

/** One decoding sequence of a `PagedDecodeAttention` step. */
export interface DecodeRow {
  /** The sequence; its slot for the new token is already allocated (`appendSlots(seqId, 1)`). */
  seqId: number;
  /**
   * Rows with the same key share their first `prefixLength` tokens' K/V (samples forked from
   * one prefilled prompt): that prefix is attended once for the whole group (cascade).
   */
  prefixKey: number;
  /** Shared prefix length; 0 attends over the sequence's own blocks only (no cascade). */
  prefixLength: number;
}

/** A cascade group: rows `rowStart … rowStart + numRows − 1` of the group-ordered batch. */
interface PrefixGroup {
  rowStart: number;
  numRows: number;
  prefixLength: number;
  runs: TokenRun[];
}

/**
 * One decoding step of N sequences: the new token of each row is written to its slot, then
 * attends to everything before it, split into the shared prefix of its group (cascade) and its
 * own suffix. The plan (slots, runs, masks, groups) is built once and serves every layer.
 */
export class PagedDecodeAttention implements AttentionContext {
  readonly batchSize: number;
  readonly numNewTokens = 1;
  readonly positions: Int32Array;
  private readonly newSlots: Int32Array;
  /** Suffix runs of every row into a [N, maxSuffixLength] buffer. */
  private readonly suffixRuns: TokenRun[] = [];
  private readonly maxSuffixLength: number;
  private readonly suffixBiasValues: Float32Array;
  private readonly groups: PrefixGroup[] = [];
  /** Batch rows in group order (grouped rows first, group by group; then rows without a prefix). */
  private readonly order: Int32Array;
  private readonly isIdentityOrder: boolean;
  private readonly numGroupedRows: number;

  constructor(
    private readonly cache: PagedKVCache,
    rows: readonly DecodeRow[],
  ) {
    const { manager } = cache;
    const n = rows.length;
    if (n < 1) throw new Error('samplers/paged-attention: decode step with no sequences');
    this.batchSize = n;
    this.positions = new Int32Array(n);
    this.newSlots = new Int32Array(n);
    const suffixLengths = new Int32Array(n);
    for (let i = 0; i < n; i++) {
      const { seqId, prefixLength } = rows[i]!;
      const position = manager.numTokens(seqId) - 1;
      if (!Number.isInteger(prefixLength) || prefixLength < 0 || prefixLength > position) {
        throw new Error(`samplers/paged-attention: decode row ${i} (sequence ${seqId}): prefixLength ${prefixLength} is not within [0, ${position}]`);
      }
      this.positions[i] = position;
      this.newSlots[i] = manager.slotMapping(seqId, position, position + 1)[0]!;
      suffixLengths[i] = position + 1 - prefixLength;
    }
    this.maxSuffixLength = Math.max(...suffixLengths);
    this.suffixBiasValues = new Float32Array(n * this.maxSuffixLength).fill(MASK_BIAS);
    for (let i = 0; i < n; i++) {
      const { seqId, prefixLength } = rows[i]!;
      this.suffixRuns.push(...tokenRuns(manager.blockTable(seqId), manager.blockSize, prefixLength, this.positions[i]! + 1, i * this.maxSuffixLength));
      this.suffixBiasValues.fill(0, i * this.maxSuffixLength, i * this.maxSuffixLength + suffixLengths[i]!);
    }

    // Cascade groups, in order of first appearance.
    const members = new Map<number, number[]>();
    for (let i = 0; i < n; i++) {
      if (rows[i]!.prefixLength === 0) continue;
      const list = members.get(rows[i]!.prefixKey);
      if (list) list.push(i);
      else members.set(rows[i]!.prefixKey, [i]);
    }
    const order: number[] = [];
    for (const [key, rowIndices] of members) {
      const first = rows[rowIndices[0]!]!;
      const table = manager.blockTable(first.seqId);
      const numFullBlocks = Math.floor(first.prefixLength / manager.blockSize);
      for (const i of rowIndices) {
        const row = rows[i]!;
        // The full prefix blocks must be the very same blocks (shared by fork or prefix cache);
        // a partly filled prefix block may be a copy-on-write copy, whose first tokens are equal.
        const rowTable = manager.blockTable(row.seqId);
        const sameBlocks = row.prefixLength === first.prefixLength && table.slice(0, numFullBlocks).every((b, j) => rowTable[j] === b);
        if (!sameBlocks) {
          throw new Error(`samplers/paged-attention: decode row ${i} (sequence ${row.seqId}) does not share the prefix of group ${key}`);
        }
      }
      this.groups.push({ rowStart: order.length, numRows: rowIndices.length, prefixLength: first.prefixLength, runs: tokenRuns(table, manager.blockSize, 0, first.prefixLength, 0) });
      order.push(...rowIndices);
    }
    this.numGroupedRows = order.length;
    for (let i = 0; i < n; i++) if (rows[i]!.prefixLength === 0) order.push(i);
    this.order = Int32Array.from(order);
    this.isIdentityOrder = order.every((row, i) => row === i);
  }

  attend(layer: number, q: tf.Tensor4D, k: tf.Tensor4D, v: tf.Tensor4D): tf.Tensor4D {
    const { storage } = this.cache;
    const [n, h, , d] = q.shape;
    const numKvHeads = k.shape[1];
    const g = h / numKvHeads;
    // 1) Store the new tokens: k, v [N, Hkv, 1, D] are already token-major [N, Hkv·D].
    storage.write(layer, this.newSlots, k.dataSync() as Float32Array, v.dataSync() as Float32Array);
    const keyPool = storage.keyPool(layer);
    const valuePool = storage.valuePool(layer);
    const scaled = tf.mul(tf.reshape(q, [n, numKvHeads, g, d]), tf.scalar(1 / Math.sqrt(d))); // [N, Hkv, G, D]

    // 2) Suffix: each row against its own tokens after the prefix, padded to the longest.
    //    G queries × S keys per (row, kv head) are broadcast products (one kernel call each),
    //    where a batched matMul would be N·Hkv tiny products.
    const s = this.maxSuffixLength;
    const suffixKeys = tf.tensor4d(gatherRunsHeadMajor(keyPool, this.suffixRuns, storage, n, s), [n, numKvHeads, s, d]); // [N, Hkv, S, D]
    const suffixValues = tf.tensor4d(gatherRuns(valuePool, this.suffixRuns, storage.tokenStride, n * s), [n, s, numKvHeads, d]); // [N, S, Hkv, D]
    const suffixValuesT = tf.transpose(suffixValues, [0, 2, 3, 1]); // [N, Hkv, D, S]
    const suffixScores = tf.add(
      tf.sum(tf.mul(tf.reshape(scaled, [n, numKvHeads, g, 1, d]), tf.reshape(suffixKeys, [n, numKvHeads, 1, s, d])), -1), // [N, Hkv, G, S]
      tf.tensor4d(this.suffixBiasValues, [n, 1, 1, s]),
    );
    const suffixPart = softmaxPart(suffixScores); // probs [N, Hkv, G, S], lse [N, Hkv, G, 1]
    const suffixOut = tf.sum(
      tf.mul(tf.reshape(suffixPart.probs, [n, numKvHeads, g, 1, s]), tf.reshape(suffixValuesT, [n, numKvHeads, 1, d, s])),
      -1,
    ); // [N, Hkv, G, D]
    if (this.groups.length === 0) return tf.reshape(suffixOut, [n, h, 1, d]) as tf.Tensor4D; // [N, H, 1, D]

    // 3) Prefix: per group, all its rows' queries against the one stored copy of the prefix.
    const byKvHead = tf.transpose(scaled, [1, 0, 2, 3]); // [Hkv, N, G, D]
    const grouped = this.isIdentityOrder ? byKvHead : tf.gather(byKvHead, tf.tensor1d(this.order, 'int32'), 1); // [Hkv, N, G, D] in group order
    const outs: tf.Tensor[] = [];
    const lses: tf.Tensor[] = [];
    for (const group of this.groups) {
      const p = group.prefixLength;
      const rowsG = group.numRows;
      const keys = tf.tensor3d(gatherRuns(keyPool, group.runs, storage.tokenStride, p), [p, numKvHeads, d]); // [P, Hkv, D]
      const keysT = tf.transpose(keys, [1, 2, 0]); // [Hkv, D, P]
      const values = tf.tensor3d(gatherRunsHeadMajor(valuePool, group.runs, storage, 1, p), [numKvHeads, p, d]); // [Hkv, P, D]
      const queries = tf.reshape(tf.slice(grouped, [0, group.rowStart, 0, 0], [numKvHeads, rowsG, g, d]), [numKvHeads, rowsG * g, d]); // [Hkv, n·G, D]
      const part = softmaxPart(tf.matMul(queries, keysT)); // probs [Hkv, n·G, P], lse [Hkv, n·G, 1]
      outs.push(tf.reshape(tf.matMul(part.probs, values), [numKvHeads, rowsG, g, d])); // [Hkv, n, G, D]
      lses.push(tf.reshape(part.lse, [numKvHeads, rowsG, g, 1])); // [Hkv, n, G, 1]
    }
    const numUngrouped = n - this.numGroupedRows;
    if (numUngrouped > 0) {
      // Rows without a prefix: an empty part (o = 0, log-sum-exp far below any real one).
      outs.push(tf.zeros([numKvHeads, numUngrouped, g, d]));
      lses.push(tf.fill([numKvHeads, numUngrouped, g, 1], MASK_BIAS));
    }
    const toRowMajor = (parts: tf.Tensor[]) => {
      const joined = parts.length === 1 ? parts[0]! : tf.concat(parts, 1); // [Hkv, N, G, ·] in group order
      const batchOrder = this.isIdentityOrder ? joined : tf.gather(joined, tf.tensor1d(inversePermutation(this.order), 'int32'), 1);
      return tf.transpose(batchOrder, [1, 0, 2, 3]); // [N, Hkv, G, ·]
    };
    const prefixOut = toRowMajor(outs); // [N, Hkv, G, D]
    const prefixLse = toRowMajor(lses); // [N, Hkv, G, 1]

    // 4) Merge the two normalised parts by their log-sum-exp (FlashInfer's merge_state):
    //    out = w·o_prefix + (1 − w)·o_suffix with w = e^{lse_p} / (e^{lse_p} + e^{lse_s}) = σ(lse_p − lse_s).
    const prefixWeight = tf.sigmoid(tf.sub(prefixLse, suffixPart.lse)); // [N, Hkv, G, 1]
    const merged = tf.add(suffixOut, tf.mul(prefixWeight, tf.sub(prefixOut, suffixOut))); // [N, Hkv, G, D]
    return tf.reshape(merged, [n, h, 1, d]) as tf.Tensor4D; // [N, H, 1, D]
  }
}

/**
 * Softmax over the last axis and its log-sum-exp, lse = log Σ exp(s). The softmax runs as one
 * fused kernel (XNNPACK on wasm); lse comes back from its largest probability, which is
 * exp(max s − lse): lse = max s − log(max p), with max p = 1/Σ exp(s − max s) ∈ [1/n, 1].
 */
function softmaxPart(scores: tf.Tensor): { probs: tf.Tensor; lse: tf.Tensor } {
  const probs = tf.softmax(scores); // [..., K]
  const lse = tf.sub(tf.max(scores, -1, true), tf.log(tf.max(probs, -1, true))); // [..., 1]
  return { probs, lse };
}

function inversePermutation(order: Int32Array): Int32Array {
  const inverse = new Int32Array(order.length);
  order.forEach((row, i) => {
    inverse[row] = i;
  });
  return inverse;
}
