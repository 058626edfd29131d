/**
 * The baselines the paged engine is checked and measured against (`kvCache: 'dense' | 'none'`):
 * samplers/generate.ts run prompt by prompt, the prompt repeated K times as the batch (Hugging
 * Face's `generate(num_return_sequences=K)`), reported in the engine's result shape.
 */
import type { LlamaModel } from '../src/model/llama.js';
import type { DecodingOptions } from './decoding.js';
import { generate } from './generate.js';
import { denseKvBytes, kvBytesPerToken, outputStats, type SampleOutput, type SamplingHooks, type SamplingRequest, type SamplingResult } from './sampling-io.js';

/** K samples of every request, one request at a time (its K rows are the batch). */
export function sampleBaseline(
  model: LlamaModel,
  requests: readonly SamplingRequest[],
  decoding: DecodingOptions,
  kvCache: 'dense' | 'none',
  hooks: SamplingHooks = {},
): SamplingResult {
  const bytesPerToken = kvBytesPerToken(model);
  const v = model.dims.vocabSize;
  const start = performance.now();
  const outputs: SampleOutput[][] = [];
  let peakKvBytes = 0;
  let idealKvBytes = 0;
  let numForwardPasses = 0;
  let numPrefillTokens = 0;
  for (let r = 0; r < requests.length; r++) {
    const { promptIds, numSamples, seed } = requests[r]!;
    let numSteps = 0;
    const kept: Float32Array[] = [];
    const sequences = generate(model, [...promptIds], {
      numSamples,
      decoding,
      seed,
      kvCache,
      onLogits: (_step, logits) => {
        numSteps++;
        if (hooks.onLogits) kept.push(Float32Array.from(logits));
      },
    });
    numForwardPasses += numSteps;
    numPrefillTokens += numSamples * promptIds.length;
    // The dense cache holds K rows of (prompt + one column per decode step) after the last forward.
    if (kvCache === 'dense') peakKvBytes = Math.max(peakKvBytes, denseKvBytes(model, numSamples, promptIds.length + numSteps - 1));
    const storedSuffixTokens = sequences.reduce((a, s) => a + s.tokenIds.length - 1, 0);
    idealKvBytes = Math.max(idealKvBytes, (promptIds.length + storedSuffixTokens) * bytesPerToken);
    if (hooks.onLogits) {
      sequences.forEach((seq, i) => {
        for (let step = 0; step < seq.tokenIds.length; step++) {
          hooks.onLogits!({ requestIndex: r, sampleIndex: i, step, logits: kept[step]!.subarray(i * v, (i + 1) * v) });
        }
      });
    }
    const requestOutputs = sequences.map((s) => ({ tokenIds: s.tokenIds, finishReason: s.finishReason }));
    outputs.push(requestOutputs);
    hooks.onRequestDone?.(r, requestOutputs);
  }
  return {
    outputs,
    stats: {
      kvCache,
      ...outputStats(requests, outputs, (performance.now() - start) / 1000),
      numPrefillTokens,
      peakNumSeqs: Math.max(0, ...requests.map((q) => q.numSamples)),
      peakKvBytes,
      idealKvBytes,
      kvBytesPerToken: bytesPerToken,
      numBlocks: 0,
      prefixCacheHitRate: 0,
      numWaits: 0,
      numForwardPasses,
    },
  };
}
