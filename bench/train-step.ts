/**
 * Forward+backward+AdamW training throughput of an architecture file on one backend: the model is
 * random-initialised, batches are random tokens (speed does not depend on their values).
 */
import * as tf from '@tensorflow/tfjs';
import { parseLlamaConfig, countParameters } from '../src/model/config.js';
import { readJsonFile } from '../src/model/checkpoint-io.js';
import { initModel } from '../src/model/weights.js';
import { AdamW } from '../src/train/adamw.js';
import { LocalStepEngine } from '../src/train/step-engine.js';
import { causalLmLoss, causalLmUnits } from '../src/tasks/causal-lm.js';
import { padRows, type TokenBatch } from '../data/collate.js';
import { Rng } from '../src/util/rng.js';

export interface TrainBenchOptions {
  configFile: string;
  batchSize: number;
  seqLen: number;
  numSteps: number;
  numWarmupSteps: number;
}

export function randomBatch(vocabSize: number, batchSize: number, seqLen: number, seed: number): TokenBatch {
  const rng = new Rng(seed);
  const rows = Array.from({ length: batchSize }, () => {
    const ids = Array.from({ length: seqLen }, () => rng.nextInt(vocabSize));
    return { ids, targetMask: ids.map((_, i) => (i === 0 ? 0 : 1)) };
  });
  return padRows(rows, 0, seqLen);
}

export async function benchTrainStep(o: TrainBenchOptions): Promise<Record<string, number | string>> {
  const config = parseLlamaConfig(readJsonFile(o.configFile), o.configFile);
  const model = initModel(config, 0);
  const engine = new LocalStepEngine<TokenBatch>(model.params, { loss: (b) => causalLmLoss(model, b), unitsOf: causalLmUnits }, new AdamW({ lr: 1e-4 }), { maxGradNorm: 1 });
  const batch = randomBatch(config.vocab_size, o.batchSize, o.seqLen, 1);
  for (let i = 0; i < o.numWarmupSteps; i++) await engine.step([batch], 1e-4);
  const start = performance.now();
  for (let i = 0; i < o.numSteps; i++) await engine.step([batch], 1e-4);
  const seconds = (performance.now() - start) / 1000;
  model.dispose();
  return {
    parameters: countParameters(config),
    batch: `${o.batchSize}x${o.seqLen}`,
    steps: o.numSteps,
    seconds_per_step: seconds / o.numSteps,
    tokens_per_s: (o.batchSize * o.seqLen * o.numSteps) / seconds,
    num_tensors_after: tf.memory().numTensors,
  };
}
