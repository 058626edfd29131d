/**
 * Collation: token rows into rectangular batches for causal-LM losses.
 *
 * A `SequenceRow` is one document's token ids with a target mask: `targetMask[i] = 1` when token
 * i is a training target (predicted from the tokens before it). SFT sets it on response tokens
 * only; pretraining on every token but the first.
 *
 * A `TokenBatch` is B rows of T tokens, row-major. `segmentIds` numbers the documents of each row
 * from 1 (0 is padding): attention stays inside a document, positions restart at each document,
 * and a token is a target only when its predecessor is in the same document — so packing several
 * rows into one sequence changes no loss term. `targets[b, t]` (T−1 per row) marks whether the
 * logits at position t are trained to predict token t+1.
 */

export interface SequenceRow {
  ids: number[];
  /** 1 where ids[i] is a target, same length as ids. */
  targetMask: number[];
}

export interface TokenBatch {
  batchSize: number;
  seqLen: number;
  /** [B, T] token ids; padding uses padId. */
  inputIds: Int32Array;
  /** [B, T] document number within the row, 1-based; 0 = padding. */
  segmentIds: Int32Array;
  /** [B, T−1]: 1 when position t predicts target token t+1. */
  targets: Float32Array;
  /** [B, T−1]: the token each position predicts (inputIds shifted left). */
  labels: Int32Array;
  /** Number of target tokens (the loss's units). */
  numTargets: number;
  /** Number of real (non-padding) tokens fed through the model. */
  numRealTokens: number;
}

/** Fills labels/targets from inputIds, segmentIds and per-token target masks. */
function finish(batchSize: number, seqLen: number, inputIds: Int32Array, segmentIds: Int32Array, tokenTarget: Uint8Array): TokenBatch {
  const labels = new Int32Array(batchSize * (seqLen - 1));
  const targets = new Float32Array(batchSize * (seqLen - 1));
  let numTargets = 0;
  let numRealTokens = 0;
  for (let r = 0; r < batchSize; r++) {
    for (let t = 0; t < seqLen; t++) if (segmentIds[r * seqLen + t] !== 0) numRealTokens++;
    for (let t = 0; t < seqLen - 1; t++) {
      const next = r * seqLen + t + 1;
      labels[r * (seqLen - 1) + t] = inputIds[next];
      const sameDoc = segmentIds[next] !== 0 && segmentIds[next] === segmentIds[next - 1];
      if (sameDoc && tokenTarget[next]) {
        targets[r * (seqLen - 1) + t] = 1;
        numTargets++;
      }
    }
  }
  return { batchSize, seqLen, inputIds, segmentIds, targets, labels, numTargets, numRealTokens };
}

/** One row per sequence, right-padded to the longest (or to `seqLen`). */
export function padRows(rows: SequenceRow[], padId: number, seqLen?: number): TokenBatch {
  const t = seqLen ?? Math.max(2, ...rows.map((r) => r.ids.length));
  const b = rows.length;
  const inputIds = new Int32Array(b * t).fill(padId);
  const segmentIds = new Int32Array(b * t);
  const tokenTarget = new Uint8Array(b * t);
  rows.forEach((row, r) => {
    if (row.ids.length > t) throw new Error(`collate: row of ${row.ids.length} tokens exceeds the sequence length ${t}`);
    for (let i = 0; i < row.ids.length; i++) {
      inputIds[r * t + i] = row.ids[i];
      segmentIds[r * t + i] = 1;
      tokenTarget[r * t + i] = row.targetMask[i] ? 1 : 0;
    }
  });
  return finish(b, t, inputIds, segmentIds, tokenTarget);
}

export interface PackOptions {
  seqLen: number;
  padId: number;
  /**
   * Split a document across rows when it does not fit the space left (pretraining: no padding
   * at all). Without it, a document that does not fit starts a new row, and documents longer
   * than seqLen are an error.
   */
  allowSplit: boolean;
}

/**
 * Packs documents in order into rows of exactly `seqLen` tokens (the last row padded), each
 * document its own segment. Returns rows as index ranges so batches can be drawn by step.
 */
export function packRows(rows: SequenceRow[], opts: PackOptions): TokenBatch {
  const t = opts.seqLen;
  const packed: { ids: number[]; seg: number[]; target: number[] }[] = [];
  let current = { ids: [] as number[], seg: [] as number[], target: [] as number[] };
  let segment = 0;
  const flush = () => {
    if (current.ids.length > 0) packed.push(current);
    current = { ids: [], seg: [], target: [] };
    segment = 0;
  };
  for (const row of rows) {
    if (!opts.allowSplit && row.ids.length > t) throw new Error(`collate: row of ${row.ids.length} tokens exceeds the sequence length ${t}`);
    if (!opts.allowSplit && current.ids.length + row.ids.length > t) flush();
    let start = 0;
    while (start < row.ids.length) {
      const room = t - current.ids.length;
      const take = Math.min(room, row.ids.length - start);
      segment++;
      for (let i = start; i < start + take; i++) {
        current.ids.push(row.ids[i]);
        current.seg.push(segment);
        current.target.push(row.targetMask[i]);
      }
      start += take;
      if (current.ids.length === t) flush();
    }
  }
  flush();
  const b = packed.length;
  const inputIds = new Int32Array(b * t).fill(opts.padId);
  const segmentIds = new Int32Array(b * t);
  const tokenTarget = new Uint8Array(b * t);
  packed.forEach((p, r) => {
    inputIds.set(p.ids, r * t);
    segmentIds.set(p.seg, r * t);
    tokenTarget.set(p.target, r * t);
  });
  return finish(b, t, inputIds, segmentIds, tokenTarget);
}

/** Rows `indices` of a batch as a new batch (for drawing step batches from a packed corpus). */
export function selectRows(batch: TokenBatch, indices: number[]): TokenBatch {
  const t = batch.seqLen;
  const b = indices.length;
  const inputIds = new Int32Array(b * t);
  const segmentIds = new Int32Array(b * t);
  const tokenTarget = new Uint8Array(b * t);
  indices.forEach((src, r) => {
    inputIds.set(batch.inputIds.subarray(src * t, (src + 1) * t), r * t);
    segmentIds.set(batch.segmentIds.subarray(src * t, (src + 1) * t), r * t);
    // Recover per-token targets: token t+1 is a target iff targets[t] is set.
    for (let i = 0; i < t - 1; i++) tokenTarget[r * t + i + 1] = batch.targets[src * (t - 1) + i];
  });
  return finish(b, t, inputIds, segmentIds, tokenTarget);
}
