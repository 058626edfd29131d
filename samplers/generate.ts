/**
 * Generation of K samples of one prompt the way Hugging Face's `generate(num_return_sequences=K)`
 * does it: the prompt is repeated K times in the batch. Two strategies:
 *   - `dense`: a contiguous per-sample KV cache (the prompt's keys/values stored K times);
 *   - `none`: no cache, the whole sequence recomputed at every step.
 * They are the baselines the paged engine (samplers/engine.ts) is checked and measured against,
 * and what `tfalign generate --kv-cache dense|none` runs.
 */
import * as tf from '@tensorflow/tfjs';
import type { LlamaModel } from '../src/model/llama.js';
import { DenseKVCache, FullAttention } from '../src/model/attention.js';
import { Rng } from '../src/util/rng.js';
import { sampleToken, type DecodingOptions } from './decoding.js';

export type FinishReason = 'stop' | 'length';

export interface GeneratedSequence {
  /** Generated token ids (the stop token included when one ended the sequence). */
  tokenIds: number[];
  finishReason: FinishReason;
}

export interface GenerateOptions {
  numSamples: number;
  decoding: DecodingOptions;
  /** Sample i draws from seed + i. */
  seed: number;
  kvCache: 'dense' | 'none';
  /** Called with the last-position logits of every step (tests compare strategies with it). */
  onLogits?: (step: number, logits: Float32Array, numRows: number) => void;
}

/** Last-position logits [B, V] of a forward over `ids` [B, T] in `ctx`. */
function lastLogits(model: LlamaModel, ids: number[][], ctx: Parameters<LlamaModel['forward']>[1]): Float32Array {
  const logits = tf.tidy(() => {
    const [b, t] = [ids.length, ids[0].length];
    const hidden = model.forward(tf.tensor2d(ids, [b, t], 'int32'), ctx); // [B, T, C]
    const last = tf.slice(hidden, [0, t - 1, 0], [b, 1, hidden.shape[2]]); // [B, 1, C]
    return model.logits(last); // [B, 1, V]
  });
  // Read outside the tidy: a tidy walks every element of a typed array it returns (seconds at B·V = 10⁶).
  const values = logits.dataSync() as Float32Array; // [B, 1, V] flattened
  logits.dispose();
  return values;
}

export function generate(model: LlamaModel, promptIds: number[], opts: GenerateOptions): GeneratedSequence[] {
  const k = opts.numSamples;
  const v = model.dims.vocabSize;
  const { maxNewTokens, stopTokenIds } = opts.decoding;
  if (promptIds.length === 0) throw new Error('generate: empty prompt');
  if (promptIds.length + maxNewTokens > model.dims.maxPositions) {
    throw new Error(`generate: prompt (${promptIds.length} tokens) + max new tokens (${maxNewTokens}) exceeds the context of ${model.dims.maxPositions}`);
  }
  const rngs = Array.from({ length: k }, (_, i) => new Rng(opts.seed + i));
  const sequences: GeneratedSequence[] = Array.from({ length: k }, () => ({ tokenIds: [], finishReason: 'length' }));
  const finished = new Array<boolean>(k).fill(false);
  const stop = new Set(stopTokenIds);
  const cache = opts.kvCache === 'dense' ? new DenseKVCache(model.dims.numLayers, k) : undefined;
  try {
    let input: number[][] = Array.from({ length: k }, () => [...promptIds]); // [K, P]
    for (let step = 0; step < maxNewTokens; step++) {
      let logits: Float32Array;
      if (cache) {
        logits = lastLogits(model, input, cache.step(input[0].length));
      } else {
        // Finished rows are padded with a filler token to the common length; their logits are unused.
        const full = sequences.map((seq) => {
          const row = [...promptIds, ...seq.tokenIds];
          while (row.length < promptIds.length + step) row.push(promptIds[0]);
          return row;
        });
        const ctx = new FullAttention({ batchSize: k, seqLen: full[0].length });
        logits = lastLogits(model, full, ctx);
        ctx.dispose();
      }
      opts.onLogits?.(step, logits, k);
      const next: number[][] = [];
      for (let i = 0; i < k; i++) {
        // Finished rows keep decoding a filler token so the batch stays rectangular; it is discarded.
        if (finished[i]) {
          next.push([promptIds[0]]);
          continue;
        }
        const token = sampleToken(logits.subarray(i * v, (i + 1) * v), opts.decoding, rngs[i]);
        sequences[i].tokenIds.push(token);
        if (stop.has(token)) {
          finished[i] = true;
          sequences[i].finishReason = 'stop';
        }
        next.push([token]);
      }
      if (finished.every(Boolean)) break;
      input = next;
    }
  } finally {
    cache?.dispose();
  }
  return sequences;
}
