/**
 * Which micro-batches each data-parallel replica computes in one optimizer step.
 *
 * The rule keeps every replica's work equal when the data allows, and never makes a forward
 * pass larger than the trainer's micro-batch (its memory limit):
 *   1) the number of micro-batches m is a multiple of the N replicas: replica r takes the r-th
 *      contiguous block of m/N whole micro-batches (no copying of rows);
 *   2) otherwise, when the task can split a batch by rows: every micro-batch is cut into N
 *      row parts and replica r takes part r of each (batch 8, one micro-batch, 2 replicas →
 *      4 rows each);
 *   3) otherwise: contiguous blocks of ⌈m/N⌉ or ⌊m/N⌋ whole micro-batches (uneven).
 * Rows are balanced rather than loss weights: a padded row costs the same whatever its number
 * of target tokens. The result does not change the step's maths — every micro-batch (or part) is
 * normalised by the global batch's unit counts and the reduction sums their gradients — only
 * which thread computes what.
 */

/** The micro-batches of each of `numReplicas` replicas (some may be empty when there is too little data). */
export function shardMicroBatches<B>(microBatches: B[], numReplicas: number, splitBatch?: (batch: B, numParts: number) => B[]): B[][] {
  if (!Number.isInteger(numReplicas) || numReplicas < 1) throw new Error(`shard: numReplicas must be an integer ≥ 1, got ${numReplicas}`);
  const m = microBatches.length;
  const shards: B[][] = Array.from({ length: numReplicas }, () => []);
  // 1) whole micro-batches, equal counts
  if (m % numReplicas === 0) {
    const per = m / numReplicas;
    for (let r = 0; r < numReplicas; r++) shards[r] = microBatches.slice(r * per, (r + 1) * per);
    return shards;
  }
  // 2) part r of every micro-batch
  if (splitBatch) {
    for (const batch of microBatches) splitBatch(batch, numReplicas).forEach((part, r) => shards[r].push(part));
    return shards;
  }
  // 3) uneven whole micro-batches
  let start = 0;
  for (let r = 0; r < numReplicas; r++) {
    const size = Math.floor(m / numReplicas) + (r < m % numReplicas ? 1 : 0);
    shards[r] = microBatches.slice(start, start + size);
    start += size;
  }
  return shards;
}
