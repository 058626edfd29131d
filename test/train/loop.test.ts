import { beforeAll, describe, expect, it } from 'vitest';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { initBackend } from '../../src/backend.js';
import { parseLlamaConfig } from '../../src/model/config.js';
import { initModel } from '../../src/model/weights.js';
import { AdamW } from '../../src/train/adamw.js';
import { LocalStepEngine } from '../../src/train/step-engine.js';
import { causalLmLoss, causalLmUnits } from '../../src/tasks/causal-lm.js';
import { packRows, selectRows, type TokenBatch } from '../../data/collate.js';
import { batchIndicesAt, runTrainingLoop } from '../../src/train/loop.js';
import { trainingOptionsSchema } from '../../src/config/training.js';
import { loadPretrained } from '../../src/model/pretrained.js';
import { localEngine } from './local-engine.js';

const config = parseLlamaConfig({
  vocab_size: 32, hidden_size: 32, intermediate_size: 48, num_hidden_layers: 2,
  num_attention_heads: 4, num_key_value_heads: 2, max_position_embeddings: 64,
});

/** Documents following a simple rule (token i+1 = token i + 1 mod 32) so the loss can fall. */
function corpus(): TokenBatch {
  const rows = Array.from({ length: 40 }, (_, d) => {
    const start = (d * 7) % 32;
    const ids = Array.from({ length: 10 + (d % 7) }, (_, i) => (start + i) % 32);
    return { ids, targetMask: ids.map((_, i) => (i === 0 ? 0 : 1)) };
  });
  return packRows(rows, { seqLen: 16, padId: 0, allowSplit: true });
}

const options = trainingOptionsSchema({ lr: 1e-2, batchSize: 4, epochs: 1, warmupRatio: 0, lrDecay: 'constant', weightDecay: 0.01, maxGradNorm: 1 }).parse({});

describe('training core', () => {
  beforeAll(async () => {
    await initBackend('wasm', { quiet: true });
  });

  it('tf.memory().numTensors is the same after step 200 as after step 2, and the loss falls', async () => {
    const model = initModel(config, 1);
    const data = corpus();
    const engine = new LocalStepEngine<TokenBatch>(model.params, { loss: (b) => causalLmLoss(model, b), unitsOf: causalLmUnits }, new AdamW({ lr: 1e-2, weightDecay: 0.01 }), { maxGradNorm: 1 });
    const counts: number[] = [];
    const losses: number[] = [];
    for (let step = 0; step < 200; step++) {
      const batch = selectRows(data, batchIndicesAt(step, data.batchSize, 4, 0));
      const result = await engine.step([batch], 1e-2);
      losses.push(result.loss);
      counts.push(tf.memory().numTensors);
    }
    expect(counts[199]).toBe(counts[1]);
    expect(losses.slice(-10).reduce((a, b) => a + b) / 10).toBeLessThan(0.5 * losses[0]);
    model.dispose();
  });

  it('gradient accumulation: 2 micro-batches of 2 rows give the step of one batch of 4', async () => {
    const data = corpus();
    const batch = selectRows(data, [0, 1, 2, 3]);
    const halves = [selectRows(data, [0, 1]), selectRows(data, [2, 3])];
    const results: Float32Array[] = [];
    for (const micro of [[batch], halves]) {
      const model = initModel(config, 2);
      const engine = new LocalStepEngine<TokenBatch>(model.params, { loss: (b) => causalLmLoss(model, b), unitsOf: causalLmUnits }, new AdamW({ lr: 1e-2 }), { maxGradNorm: 0 });
      await engine.step(micro, 1e-2);
      results.push(model.params.get('model.layers.0.mlp.up_proj.weight')!.dataSync() as Float32Array);
      model.dispose();
    }
    let maxDiff = 0;
    for (let i = 0; i < results[0].length; i++) maxDiff = Math.max(maxDiff, Math.abs(results[0][i] - results[1][i]));
    expect(maxDiff).toBeLessThan(1e-6);
  });

  it('resume from a checkpoint continues exactly where an uninterrupted run goes', async () => {
    const root = fs.mkdtempSync(path.join(os.tmpdir(), 'tfalign-loop-'));
    const data = corpus();
    const run = async (runDir: string, numSteps: number, resume: boolean, saveEvery: number) => {
      const model = initModel(config, 3);
      const runOptions = { ...options, saveEvery, logEvery: 1, saveTotalLimit: 0 };
      const engine = localEngine<TokenBatch>(model, { loss: (b) => causalLmLoss(model, b), unitsOf: causalLmUnits }, runOptions);
      await runTrainingLoop<TokenBatch>({
        runDir, model, options: runOptions, numSteps,
        batchesAt: (step) => [selectRows(data, batchIndicesAt(step, data.batchSize, 4, 0))],
        engine, numTokensOf: (b) => b.numRealTokens, resume,
      });
      await engine.close();
      model.dispose();
      return loadPretrained(runDir);
    };
    const straight = await run(path.join(root, 'a'), 6, false, 0);
    (await run(path.join(root, 'b'), 6, false, 3)).dispose(); // leaves checkpoint-3 and checkpoint-6
    fs.rmSync(path.join(root, 'b', 'checkpoint-6'), { recursive: true });
    const resumed = await run(path.join(root, 'b'), 6, true, 3);
    for (const [name, p] of straight.params) {
      const a = p.dataSync();
      const b = resumed.params.get(name)!.dataSync();
      let maxDiff = 0;
      for (let i = 0; i < a.length; i++) maxDiff = Math.max(maxDiff, Math.abs(a[i] - b[i]));
      expect(maxDiff, name).toBeLessThan(1e-6);
    }
    const lines = fs.readFileSync(path.join(root, 'b', 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l));
    expect(lines.map((l) => l.step)).toEqual([1, 2, 3, 4, 5, 6]); // no duplicated steps after resume
    straight.dispose();
    resumed.dispose();
  });
});
