import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { initBackend } from '../../src/backend.js';
import { readSafetensors, writeSafetensors, type NamedTensor } from '../../src/model/safetensors.js';
import { AdamW } from '../../src/train/adamw.js';
import {
  exportOptimizerState,
  importOptimizerState,
  parseOptimizerStateMeta,
  parseTrainerState,
  type OptimizerState,
  type TrainerState,
} from '../../src/train/optimizer-state.js';
import { learningRateAt } from '../../src/train/schedule.js';
import { Rng } from '../../src/util/rng.js';

let dir: string;

beforeAll(async () => {
  await initBackend('cpu', { quiet: true });
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tfalign-optstate-'));
});

afterAll(() => {
  fs.rmSync(dir, { recursive: true, force: true });
});

const SHAPES: Record<string, number[]> = {
  'model.layers.0.mlp.up_proj.weight': [3, 2],
  'model.norm.weight': [2],
  'model.embed_tokens.weight': [4, 2], // gets a gradient only from step 3 on (its own t lags)
};

const numElementsOf = (shape: number[]) => shape.reduce((a, b) => a * b, 1);

function initialParams(): Map<string, tf.Variable> {
  const rng = new Rng(1);
  const params = new Map<string, tf.Variable>();
  for (const [name, shape] of Object.entries(SHAPES)) {
    params.set(name, tf.variable(tf.tensor(Float32Array.from({ length: numElementsOf(shape) }, () => rng.normal()), shape)));
  }
  return params;
}

/** The same gradients for step s in every run: drawn from fork(s) of a fixed generator. */
function gradsAt(step: number): Map<string, tf.Tensor> {
  const rng = new Rng(99).fork(step);
  const grads = new Map<string, tf.Tensor>();
  for (const [name, shape] of Object.entries(SHAPES)) {
    if (name === 'model.embed_tokens.weight' && step < 2) continue;
    grads.set(name, tf.tensor(Float32Array.from({ length: numElementsOf(shape) }, () => rng.normal()), shape));
  }
  return grads;
}

const lrAt = (step: number) => learningRateAt(step, { lr: 1e-2, warmupSteps: 2, totalSteps: 10, decay: 'cosine', minLrRatio: 0.1 });

function runSteps(opt: AdamW, params: Map<string, tf.Variable>, from: number, to: number): void {
  for (let step = from; step < to; step++) {
    const grads = gradsAt(step);
    opt.applyGradients(params, grads, lrAt(step));
    tf.dispose([...grads.values()]);
  }
}

function snapshot(params: Map<string, tf.Variable>): Map<string, NamedTensor> {
  return new Map([...params].map(([name, v]) => [name, { shape: [...v.shape], data: Float32Array.from(v.dataSync()) }]));
}

describe('optimizer state', () => {
  it('resumes through safetensors files so that step 6 equals the uninterrupted step 6 bit for bit', () => {
    const options = { lr: 1e-2, weightDecay: 0.1 };
    // Uninterrupted: six steps.
    const straightParams = initialParams();
    const straight = new AdamW(options);
    runSteps(straight, straightParams, 0, 6);

    // Interrupted: five steps, save weights + optimizer state to disk, throw everything away.
    const firstParams = initialParams();
    const first = new AdamW(options);
    runSteps(first, firstParams, 0, 5);
    const saved = exportOptimizerState(first);
    expect(saved.meta.step).toBe(5);
    expect(saved.meta.paramSteps).toEqual({ 'model.embed_tokens.weight': 3, 'model.layers.0.mlp.up_proj.weight': 5, 'model.norm.weight': 5 });
    writeSafetensors(path.join(dir, 'model.safetensors'), snapshot(firstParams));
    writeSafetensors(path.join(dir, 'optimizer.safetensors'), saved.tensors, { metadata: { optimizer: JSON.stringify(saved.meta) } });
    first.dispose();
    tf.dispose([...firstParams.values()]);

    // Resume: fresh variables and optimizer from the files, then step 6.
    const weights = readSafetensors(path.join(dir, 'model.safetensors')).tensors;
    const resumedParams = new Map([...weights].map(([name, t]) => [name, tf.variable(tf.tensor(t.data, t.shape))]));
    const file = readSafetensors(path.join(dir, 'optimizer.safetensors'));
    expect([...file.tensors.keys()].sort()).toEqual([
      'model.embed_tokens.weight.exp_avg',
      'model.embed_tokens.weight.exp_avg_sq',
      'model.layers.0.mlp.up_proj.weight.exp_avg',
      'model.layers.0.mlp.up_proj.weight.exp_avg_sq',
      'model.norm.weight.exp_avg',
      'model.norm.weight.exp_avg_sq',
    ]);
    const resumed = new AdamW(options);
    importOptimizerState(resumed, resumedParams, {
      tensors: file.tensors,
      meta: parseOptimizerStateMeta(JSON.parse(file.metadata.optimizer!), 'optimizer.safetensors'),
    });
    expect(resumed.step).toBe(5);
    runSteps(resumed, resumedParams, 5, 6);

    for (const name of Object.keys(SHAPES)) {
      expect(Array.from(resumedParams.get(name)!.dataSync())).toEqual(Array.from(straightParams.get(name)!.dataSync()));
    }
    const after = exportOptimizerState(resumed);
    const straightAfter = exportOptimizerState(straight);
    expect(after.meta).toEqual(straightAfter.meta);
    for (const [name, t] of straightAfter.tensors) expect(Array.from(after.tensors.get(name)!.data)).toEqual(Array.from(t.data));
    // ...and the update really moved the weights (the comparison above is not between copies of step 5)
    expect(Array.from(resumedParams.get('model.norm.weight')!.dataSync())).not.toEqual(Array.from(weights.get('model.norm.weight')!.data));

    [straight, resumed].forEach((o) => o.dispose());
    tf.dispose([...straightParams.values(), ...resumedParams.values()]);
  });

  it('rejects state that does not fit the parameters, naming the tensor', () => {
    const params = initialParams();
    const opt = new AdamW({ lr: 1e-2 });
    runSteps(opt, params, 0, 3);
    const state = exportOptimizerState(opt);
    const withTensors = (edit: (t: Map<string, NamedTensor>) => void): OptimizerState => {
      const tensors = new Map(state.tensors);
      edit(tensors);
      return { tensors, meta: state.meta };
    };
    const target = new AdamW({ lr: 1e-2 });
    expect(() => importOptimizerState(target, params, withTensors((t) => t.delete('model.norm.weight.exp_avg_sq')))).toThrow(
      /tensor 'model.norm.weight.exp_avg_sq' is missing/,
    );
    expect(() =>
      importOptimizerState(target, params, withTensors((t) => t.set('model.norm.weight.exp_avg', { shape: [3], data: new Float32Array(3) }))),
    ).toThrow(/tensor 'model.norm.weight.exp_avg' has shape \[3\] but the parameter has \[2\]/);
    expect(() =>
      importOptimizerState(target, params, withTensors((t) => t.set('lm_head.weight.exp_avg', { shape: [1], data: new Float32Array(1) }))),
    ).toThrow(/tensor 'lm_head.weight.exp_avg' belongs to no parameter/);
    const fewerParams = new Map(params);
    fewerParams.delete('model.norm.weight');
    expect(() => importOptimizerState(target, fewerParams, state)).toThrow(/parameter 'model.norm.weight' has optimizer state but is not among the model parameters/);
    expect(() => importOptimizerState(target, params, { tensors: state.tensors, meta: { ...state.meta, version: 2 as 1 } })).toThrow(
      /field 'version'/,
    );
    expect(target.step).toBe(0);
    expect(target.stateNames()).toEqual([]);
    [opt, target].forEach((o) => o.dispose());
    tf.dispose([...params.values()]);
  });
});

describe('TrainerState', () => {
  it('round-trips through a JSON file with the rng position', () => {
    const rng = new Rng(2024);
    rng.shuffle([1, 2, 3, 4, 5]);
    const state: TrainerState = { globalStep: 120, epoch: 1, samplesSeen: 3840, rngState: rng.state(), bestMetric: 0.71 };
    const file = path.join(dir, 'trainer_state.json');
    fs.writeFileSync(file, JSON.stringify(state));
    const back = parseTrainerState(JSON.parse(fs.readFileSync(file, 'utf8')), file);
    expect(back).toEqual(state);
    expect(Rng.fromState(back.rngState).next()).toBe(rng.next());
  });

  it('names the bad field', () => {
    const good = { globalStep: 1, epoch: 0, samplesSeen: 8, rngState: new Rng(1).state() };
    expect(parseTrainerState(good, 'x.json').bestMetric).toBeUndefined();
    expect(() => parseTrainerState({ ...good, globalStep: -1 }, 'x.json')).toThrow(/x.json: field 'globalStep'/);
    expect(() => parseTrainerState({ ...good, rngState: { key: 1, words: [1, 2, 3] } }, 'x.json')).toThrow(/field 'rngState.words'/);
    expect(() => parseTrainerState({ ...good, extra: 1 }, 'x.json')).toThrow(/x.json/);
  });
});
