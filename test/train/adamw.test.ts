import * as tf from '@tensorflow/tfjs';
import { beforeAll, describe, expect, it } from 'vitest';
import { initBackend } from '../../src/backend.js';
import { AdamW, defaultNoDecay } from '../../src/train/adamw.js';
import { learningRateAt } from '../../src/train/schedule.js';
import { Rng } from '../../src/util/rng.js';

beforeAll(async () => {
  await initBackend('cpu', { quiet: true });
});

function expectClose(actual: ArrayLike<number>, expected: ArrayLike<number>, tol: number): void {
  expect(actual.length).toBe(expected.length);
  for (let i = 0; i < expected.length; i++) expect(Math.abs(actual[i]! - expected[i]!)).toBeLessThan(tol);
}

function values(t: tf.Tensor): number[] {
  return Array.from(t.dataSync());
}

/** Float64 AdamW, the equations as written in the paper / adamw.ts doc comment, as a reference. */
class ReferenceAdamW {
  private m = new Map<string, Float64Array>();
  private v = new Map<string, Float64Array>();
  private t = new Map<string, number>();
  constructor(private readonly o: { beta1: number; beta2: number; eps: number; weightDecay: number; noDecay: (n: string) => boolean }) {}
  step(params: Map<string, Float64Array>, grads: Map<string, Float64Array>, lr: number): void {
    for (const [name, g] of grads) {
      const p = params.get(name)!;
      const m = this.m.get(name) ?? new Float64Array(p.length);
      const v = this.v.get(name) ?? new Float64Array(p.length);
      const t = (this.t.get(name) ?? 0) + 1;
      const lambda = this.o.noDecay(name) ? 0 : this.o.weightDecay;
      for (let i = 0; i < p.length; i++) {
        p[i] -= lr * lambda * p[i]!;
        m[i] = this.o.beta1 * m[i]! + (1 - this.o.beta1) * g[i]!;
        v[i] = this.o.beta2 * v[i]! + (1 - this.o.beta2) * g[i]! * g[i]!;
        const mHat = m[i]! / (1 - this.o.beta1 ** t);
        const vHat = v[i]! / (1 - this.o.beta2 ** t);
        p[i] -= (lr * mHat) / (Math.sqrt(vHat) + this.o.eps);
      }
      this.m.set(name, m);
      this.v.set(name, v);
      this.t.set(name, t);
    }
  }
}

describe('AdamW', () => {
  it.each(['cpu', 'wasm'] as const)('matches a hand-computed two-step example, with decay on weights and none on norms (%s)', async (backend) => {
    await initBackend(backend, { quiet: true });
    expect(tf.getBackend()).toBe(backend);
    // lr = 0.1, λ = 0.1, β1 = 0.9, β2 = 0.999, ε = 1e-8; p₀ = [1, −2]; g₁ = [0.5, −1]; g₂ = [0.1, 0.3].
    //
    // Step 1 (t = 1), decayed weight:
    //   p ← p·(1 − 0.1·0.1) = [0.99, −1.98]
    //   m = 0.1·g₁ = [0.05, −0.1];  v = 0.001·g₁² = [0.00025, 0.001]
    //   m̂ = m/0.1 = [0.5, −1];  v̂ = v/0.001 = [0.25, 1];  √v̂ = [0.5, 1]
    //   p ← p − 0.1·m̂/(√v̂ + ε) = [0.99 − 0.1, −1.98 + 0.1] = [0.89, −1.88]
    // Step 2 (t = 2):
    //   p ← p·0.99 = [0.8811, −1.8612]
    //   m = 0.9·[0.05, −0.1] + 0.1·[0.1, 0.3] = [0.055, −0.06]
    //   v = 0.999·[0.00025, 0.001] + 0.001·[0.01, 0.09] = [0.00025975, 0.001089]
    //   m̂ = m/(1 − 0.81) = [0.2894737, −0.3157895];  v̂ = v/(1 − 0.998001) = [0.1299400, 0.5447724]
    //   √v̂ = [0.3604719, 0.7380870];  0.1·m̂/√v̂ = [0.0803041, −0.0427849]
    //   p = [0.8811 − 0.0803041, −1.8612 + 0.0427849] = [0.8007959, −1.8184151]
    // The norm weight (same p₀ and grads) skips both decays:
    //   step 1: [1 − 0.1, −2 + 0.1] = [0.9, −1.9];  step 2: [0.9 − 0.0803041, −1.9 + 0.0427849] = [0.8196959, −1.8572151]
    const params = new Map<string, tf.Variable>([
      ['model.layers.0.mlp.up_proj.weight', tf.variable(tf.tensor1d([1, -2]))],
      ['model.layers.0.input_layernorm.weight', tf.variable(tf.tensor1d([1, -2]))],
    ]);
    const opt = new AdamW({ lr: 0.1, weightDecay: 0.1 });
    const g1 = tf.tensor1d([0.5, -1]);
    const g2 = tf.tensor1d([0.1, 0.3]);
    opt.applyGradients(params, new Map([['model.layers.0.mlp.up_proj.weight', g1], ['model.layers.0.input_layernorm.weight', g1]]), 0.1);
    expectClose(values(params.get('model.layers.0.mlp.up_proj.weight')!), [0.89, -1.88], 1e-6);
    expectClose(values(params.get('model.layers.0.input_layernorm.weight')!), [0.9, -1.9], 1e-6);
    const state1 = opt.readState('model.layers.0.mlp.up_proj.weight')!;
    expectClose(state1.expAvg, [0.05, -0.1], 1e-8);
    expectClose(state1.expAvgSq, [0.00025, 0.001], 1e-10);
    opt.applyGradients(params, new Map([['model.layers.0.mlp.up_proj.weight', g2], ['model.layers.0.input_layernorm.weight', g2]]), 0.1);
    expectClose(values(params.get('model.layers.0.mlp.up_proj.weight')!), [0.8007959, -1.8184151], 1e-6);
    expectClose(values(params.get('model.layers.0.input_layernorm.weight')!), [0.8196959, -1.8572151], 1e-6);
    const state2 = opt.readState('model.layers.0.mlp.up_proj.weight')!;
    expect(state2.step).toBe(2);
    expectClose(state2.expAvg, [0.055, -0.06], 1e-7);
    expectClose(state2.expAvgSq, [0.00025975, 0.001089], 1e-9);
    expect(opt.step).toBe(2);
    opt.dispose();
    tf.dispose([g1, g2, ...params.values()]);
    await initBackend('cpu', { quiet: true });
  });

  it('default noDecay exempts norms and biases only', () => {
    expect(defaultNoDecay('model.norm.weight')).toBe(true);
    expect(defaultNoDecay('model.layers.3.post_attention_layernorm.weight')).toBe(true);
    expect(defaultNoDecay('score.bias')).toBe(true);
    expect(defaultNoDecay('model.layers.3.self_attn.q_proj.weight')).toBe(false);
    expect(defaultNoDecay('model.embed_tokens.weight')).toBe(false);
    expect(defaultNoDecay('lm_head.weight')).toBe(false);
  });

  it('follows a float64 reference over 20 steps with random gradients and a schedule', () => {
    const rng = new Rng(7);
    const shapes: Record<string, number[]> = { 'a.weight': [3, 4], 'a.bias': [4], 'model.norm.weight': [5] };
    const params = new Map<string, tf.Variable>();
    const refParams = new Map<string, Float64Array>();
    for (const [name, shape] of Object.entries(shapes)) {
      const init = Float32Array.from({ length: shape.reduce((a, b) => a * b, 1) }, () => rng.normal());
      params.set(name, tf.variable(tf.tensor(init, shape)));
      refParams.set(name, Float64Array.from(init));
    }
    const options = { beta1: 0.8, beta2: 0.95, eps: 1e-6, weightDecay: 0.05, noDecay: defaultNoDecay };
    const opt = new AdamW({ lr: 0.01, ...options });
    const ref = new ReferenceAdamW(options);
    for (let step = 0; step < 20; step++) {
      const lr = learningRateAt(step, { lr: 0.01, warmupSteps: 3, totalSteps: 20, decay: 'cosine' });
      const grads = new Map<string, tf.Tensor>();
      const refGrads = new Map<string, Float64Array>();
      for (const [name, shape] of Object.entries(shapes)) {
        const g = Float32Array.from({ length: shape.reduce((a, b) => a * b, 1) }, () => rng.normal(0, 0.5));
        grads.set(name, tf.tensor(g, shape));
        refGrads.set(name, Float64Array.from(g));
      }
      opt.applyGradients(params, grads, lr);
      ref.step(refParams, refGrads, lr);
      tf.dispose([...grads.values()]);
    }
    for (const name of Object.keys(shapes)) expectClose(values(params.get(name)!), refParams.get(name)!, 2e-5);
    opt.dispose();
    tf.dispose([...params.values()]);
  });

  it('leaves a parameter without a gradient untouched and starts its bias correction at its own first update', () => {
    const params = new Map<string, tf.Variable>([
      ['w', tf.variable(tf.tensor1d([1, 2]))],
      ['u', tf.variable(tf.tensor1d([3, -1]))],
    ]);
    const opt = new AdamW({ lr: 0.1, weightDecay: 0.5 });
    const g = tf.tensor1d([0.2, -0.4]);
    opt.applyGradients(params, new Map([['w', g]]));
    expect(values(params.get('u')!)).toEqual([3, -1]); // no decay either
    expect(opt.stateNames()).toEqual(['w']);
    opt.applyGradients(params, new Map([['w', g], ['u', g]]));
    // u's first update (t = 1): p·(1 − 0.1·0.5) − 0.1·sign(g) = [3·0.95 − 0.1, −1·0.95 + 0.1]
    expectClose(values(params.get('u')!), [2.75, -0.85], 1e-6);
    expect(opt.readState('u')!.step).toBe(1);
    expect(opt.readState('w')!.step).toBe(2);
    opt.dispose();
    tf.dispose([g, ...params.values()]);
  });

  it('rejects a gradient with no parameter or the wrong shape before changing anything', () => {
    const params = new Map<string, tf.Variable>([['w', tf.variable(tf.tensor1d([1, 2]))]]);
    const opt = new AdamW({ lr: 0.1 });
    const good = tf.tensor1d([1, 1]);
    const bad = tf.tensor1d([1, 1, 1]);
    expect(() => opt.applyGradients(params, new Map([['w', good], ['x', good]]))).toThrow(/gradient 'x' has no parameter/);
    expect(() => opt.applyGradients(params, new Map([['w', bad]]))).toThrow(/gradient 'w' has shape \[3\] but the parameter has \[2\]/);
    expect(values(params.get('w')!)).toEqual([1, 2]);
    expect(opt.step).toBe(0);
    expect(() => new AdamW({ lr: 0.1, beta2: 1 })).toThrow(/'beta2'/);
    opt.dispose();
    tf.dispose([good, bad, ...params.values()]);
  });

  it('keeps tf.memory().numTensors constant over 200 steps', () => {
    const params = new Map<string, tf.Variable>([
      ['model.layers.0.mlp.up_proj.weight', tf.variable(tf.randomNormal([8, 4], 0, 1, 'float32', 1))],
      ['model.layers.0.input_layernorm.weight', tf.variable(tf.ones([4]))],
      ['score.bias', tf.variable(tf.zeros([1]))],
    ]);
    const grads = new Map<string, tf.Tensor>([
      ['model.layers.0.mlp.up_proj.weight', tf.randomNormal([8, 4], 0, 1, 'float32', 2)],
      ['model.layers.0.input_layernorm.weight', tf.randomNormal([4], 0, 1, 'float32', 3)],
      ['score.bias', tf.tensor1d([0.3])],
    ]);
    const opt = new AdamW({ lr: 1e-3, weightDecay: 0.1 });
    let afterStep2 = -1;
    for (let step = 0; step < 200; step++) {
      opt.applyGradients(params, grads, learningRateAt(step, { lr: 1e-3, warmupSteps: 10, totalSteps: 200, decay: 'linear' }));
      if (step === 1) afterStep2 = tf.memory().numTensors;
    }
    expect(tf.memory().numTensors).toBe(afterStep2);
    expect(opt.step).toBe(200);
    const before = tf.memory().numTensors;
    opt.dispose();
    expect(tf.memory().numTensors).toBe(before - 6); // m and v of three parameters
    tf.dispose([...grads.values(), ...params.values()]);
  });
});
