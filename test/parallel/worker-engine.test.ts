/**
 * Data-parallel training with worker threads against the single-thread reference
 * (`LocalStepEngine` on the whole global batch), on a tiny Llama and the wasm backend.
 */
import { beforeAll, describe, expect, it } from 'vitest';
import * as os from 'node:os';
import { initBackend } from '../../src/backend.js';
import { parseLlamaConfig } from '../../src/model/config.js';
import { initModel } from '../../src/model/weights.js';
import type { LlamaModel } from '../../src/model/llama.js';
import { LocalStepEngine, type StepEngine } from '../../src/train/step-engine.js';
import { createStepEngine, defaultNumWorkers } from '../../src/parallel/factory.js';
import { WorkerStepEngine } from '../../src/parallel/worker-engine.js';
import type { TaskDescriptor } from '../../src/train/task.js';
import { packRows, selectRows, type TokenBatch } from '../../data/collate.js';

const config = parseLlamaConfig({
  vocab_size: 32, hidden_size: 32, intermediate_size: 48, num_hidden_layers: 2,
  num_attention_heads: 4, num_key_value_heads: 2, max_position_embeddings: 64,
});

/** Documents following a simple rule (token i+1 = token i + 1 mod 32), packed into rows of 16. */
function corpus(): TokenBatch {
  const rows = Array.from({ length: 60 }, (_, d) => {
    const start = (d * 7) % 32;
    const ids = Array.from({ length: 5 + (d % 9) }, (_, i) => (start + i) % 32);
    return { ids, targetMask: ids.map((_, i) => (i === 0 ? 0 : 1)) };
  });
  return packRows(rows, { seqLen: 16, padId: 0, allowSplit: true });
}

const data = corpus();
/** Global batch of step `step`: 8 rows. */
const globalBatch = (step: number) => selectRows(data, Array.from({ length: 8 }, (_, i) => (step * 8 + i) % data.batchSize));
/** The same rows as micro-batches of `size` rows. */
const microBatchesOf = (batch: TokenBatch, size: number) =>
  Array.from({ length: batch.batchSize / size }, (_, m) => selectRows(batch, Array.from({ length: size }, (_, i) => m * size + i)));

const task: TaskDescriptor = { kind: 'causal-lm' };
const optimizer = { lr: 1e-3, weightDecay: 0.1 };
const NUM_STEPS = 4;

interface Run {
  losses: number[];
  gradNorms: number[];
  weights: Map<string, Float32Array>;
}

/** K steps from the same initial weights; returns per-step loss/norm and the final weights. */
async function train(numWorkers: number, batchesAt: (step: number) => TokenBatch[], over: { task?: TaskDescriptor } = {}): Promise<Run> {
  const model = initModel(config, 5);
  const engine = await createStepEngine<TokenBatch>({ numWorkers, model, task: over.task ?? task, optimizer, maxGradNorm: 1 });
  try {
    const losses: number[] = [];
    const gradNorms: number[] = [];
    for (let step = 0; step < NUM_STEPS; step++) {
      const result = await engine.step(batchesAt(step), 1e-3);
      losses.push(result.loss);
      gradNorms.push(result.gradNorm);
    }
    return { losses, gradNorms, weights: weightsOf(model) };
  } finally {
    await engine.close();
    model.dispose();
  }
}

function weightsOf(model: LlamaModel): Map<string, Float32Array> {
  return new Map([...model.params].map(([name, v]) => [name, Float32Array.from(v.dataSync() as Float32Array)]));
}

/** Largest over tensors of ‖a − b‖ / ‖a‖. */
function maxRelativeDiff(a: Map<string, Float32Array>, b: Map<string, Float32Array>): number {
  let worst = 0;
  for (const [name, x] of a) {
    const y = b.get(name)!;
    let diff = 0;
    let norm = 0;
    for (let i = 0; i < x.length; i++) {
      diff += (x[i] - y[i]) ** 2;
      norm += x[i] ** 2;
    }
    worst = Math.max(worst, Math.sqrt(diff / norm));
  }
  return worst;
}

function expectClose(run: Run, reference: Run): void {
  run.losses.forEach((loss, i) => expect(Math.abs(loss - reference.losses[i]) / reference.losses[i]).toBeLessThan(1e-5));
  run.gradNorms.forEach((norm, i) => expect(Math.abs(norm - reference.gradNorms[i]) / reference.gradNorms[i]).toBeLessThan(1e-5));
  expect(maxRelativeDiff(reference.weights, run.weights)).toBeLessThan(1e-5);
}

let reference: Run;

beforeAll(async () => {
  await initBackend('wasm', { quiet: true });
  reference = await train(1, (step) => [globalBatch(step)]);
});

describe('WorkerStepEngine', () => {
  it('2 workers give the single-thread result: per-step loss, grad norm and final weights within 1e-5 relative', async () => {
    const run = await train(2, (step) => [globalBatch(step)]);
    expectClose(run, reference);
    // and the run did train: the weights moved well beyond the tolerance
    const initial = initModel(config, 5);
    expect(maxRelativeDiff(weightsOf(initial), reference.weights)).toBeGreaterThan(1e-2);
    initial.dispose();
  });

  it('gradient accumulation composes: 4 micro-batches of 2 rows (whole) and 2 of 4 rows over 3 replicas (split) equal one batch of 8', async () => {
    const whole = await train(2, (step) => microBatchesOf(globalBatch(step), 2));
    expectClose(whole, reference);
    const split = await train(3, (step) => microBatchesOf(globalBatch(step), 4));
    expectClose(split, reference);
  });

  it('replicas stay bit-identical: every worker\'s weights and AdamW moments equal the parent\'s exactly after K steps', async () => {
    const model = initModel(config, 6);
    const engine = await createStepEngine<TokenBatch>({ numWorkers: 3, model, task, optimizer, maxGradNorm: 0.5 });
    try {
      expect(engine).toBeInstanceOf(WorkerStepEngine);
      const workers = engine as WorkerStepEngine<TokenBatch>;
      for (let step = 0; step < NUM_STEPS; step++) await engine.step(microBatchesOf(globalBatch(step), 4), 1e-3);
      const states = await workers.readReplicaStates();
      expect(states.map((s) => s.replica)).toEqual([1, 2]);
      const parent = weightsOf(model);
      for (const state of states) {
        expect(state.optimizerStep).toBe(NUM_STEPS);
        expect([...state.weights.keys()].sort()).toEqual([...parent.keys()].sort());
        for (const [name, values] of parent) expect(Buffer.from(state.weights.get(name)!.buffer).equals(Buffer.from(values.buffer)), name).toBe(true);
        for (const name of engine.optimizer.stateNames()) {
          const mine = engine.optimizer.readState(name)!;
          const theirs = state.optimizerStates.get(name)!;
          expect(theirs.step).toBe(mine.step);
          expect(Buffer.from(theirs.expAvg.buffer).equals(Buffer.from(mine.expAvg.buffer)), name).toBe(true);
          expect(Buffer.from(theirs.expAvgSq.buffer).equals(Buffer.from(mine.expAvgSq.buffer)), name).toBe(true);
        }
      }
    } finally {
      await engine.close();
      model.dispose();
    }
  });

  it('a worker that throws rejects step() with its message and stack within seconds, and every worker thread ends', async () => {
    const model = initModel(config, 5);
    const faulty: TaskDescriptor = { kind: 'causal-lm', failAtStep: { step: 1, replica: 2, message: 'injected: replica 2 ran out of memory' } };
    const engine = (await createStepEngine<TokenBatch>({ numWorkers: 3, model, task: faulty, optimizer, maxGradNorm: 1 })) as WorkerStepEngine<TokenBatch>;
    try {
      await engine.step([globalBatch(0)], 1e-3);
      expect(engine.numLiveWorkers).toBe(2);
      const start = performance.now();
      const error = (await engine.step([globalBatch(1)], 1e-3).catch((e: unknown) => e)) as Error;
      expect(performance.now() - start).toBeLessThan(5000);
      expect(error).toBeInstanceOf(Error);
      expect(error.message).toBe('worker 2: injected: replica 2 ran out of memory');
      // the stack is the worker's: it runs through the task's loss wrapper and the micro-batch loop
      expect(error.stack).toMatch(/src\/tasks\/index\.ts/);
      expect(error.stack).toMatch(/src\/train\/step-engine\.ts/);
      expect(engine.numLiveWorkers).toBe(0);
      // the engine stays stopped with the same error
      await expect(engine.step([globalBatch(2)], 1e-3)).rejects.toBe(error);
    } finally {
      await engine.close();
      model.dispose();
    }
  });

  it('a failure on the parent\'s own share also stops the workers', async () => {
    const model = initModel(config, 5);
    const faulty: TaskDescriptor = { kind: 'causal-lm', failAtStep: { step: 0, replica: 0, message: 'injected on the parent' } };
    const engine = (await createStepEngine<TokenBatch>({ numWorkers: 2, model, task: faulty, optimizer, maxGradNorm: 1 })) as WorkerStepEngine<TokenBatch>;
    try {
      await expect(engine.step([globalBatch(0)], 1e-3)).rejects.toThrow('injected on the parent');
      expect(engine.numLiveWorkers).toBe(0);
    } finally {
      await engine.close();
      model.dispose();
    }
  });

  it('a resume that loads weights and optimizer state into the parent after the engine was made reaches the workers', async () => {
    // uninterrupted: 4 steps with 2 workers
    const uninterrupted = await train(2, (step) => [globalBatch(step)]);
    // interrupted: 2 local steps, then a fresh 2-worker engine over a fresh model given those weights and moments
    const first = initModel(config, 5);
    const local = await createStepEngine<TokenBatch>({ numWorkers: 1, model: first, task, optimizer, maxGradNorm: 1 });
    for (let step = 0; step < 2; step++) await local.step([globalBatch(step)], 1e-3);
    const second = initModel(config, 99);
    const engine = await createStepEngine<TokenBatch>({ numWorkers: 2, model: second, task, optimizer, maxGradNorm: 1 });
    try {
      for (const [name, v] of first.params) second.params.get(name)!.assign(v);
      engine.optimizer.loadState(local.optimizer.step, new Map(local.optimizer.stateNames().map((n) => [n, local.optimizer.readState(n)!])));
      for (let step = 2; step < NUM_STEPS; step++) await engine.step([globalBatch(step)], 1e-3);
      expect(maxRelativeDiff(uninterrupted.weights, weightsOf(second))).toBeLessThan(1e-5);
      const [worker] = await (engine as WorkerStepEngine<TokenBatch>).readReplicaStates();
      for (const [name, values] of weightsOf(second)) expect(Buffer.from(worker.weights.get(name)!.buffer).equals(Buffer.from(values.buffer)), name).toBe(true);
    } finally {
      await engine.close();
      await local.close();
      first.dispose();
      second.dispose();
    }
  });
});

describe('createStepEngine', () => {
  it('1 replica is the LocalStepEngine; the default is every core on wasm/cpu and 1 on tensorflow', async () => {
    const model = initModel(config, 5);
    const engine: StepEngine<TokenBatch> = await createStepEngine<TokenBatch>({ numWorkers: 1, model, task, optimizer, maxGradNorm: 1 });
    expect(engine).toBeInstanceOf(LocalStepEngine);
    await engine.close();
    model.dispose();
    expect(defaultNumWorkers('wasm')).toBe(os.availableParallelism());
    expect(defaultNumWorkers('cpu')).toBe(os.availableParallelism());
    expect(defaultNumWorkers('tensorflow')).toBe(1);
  });

  it('an unknown task kind is refused before any worker starts', async () => {
    const model = initModel(config, 5);
    await expect(createStepEngine<TokenBatch>({ numWorkers: 2, model, task: { kind: 'nope' }, optimizer, maxGradNorm: 1 })).rejects.toThrow(
      "tasks: unknown task kind 'nope' (built in: causal-lm, dpo, reward-model; give 'module' for another kind)",
    );
    model.dispose();
  });
});
