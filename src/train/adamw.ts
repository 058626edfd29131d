/**
 * AdamW: Adam with decoupled weight decay (Loshchilov & Hutter, "Decoupled Weight Decay
 * Regularization", ICLR 2019), computed as PyTorch's `torch.optim.AdamW` does.
 *
 * For each parameter p with gradient g, at its t-th update (t counts from 1), with learning
 * rate lr (from the schedule) and weight decay λ:
 *
 *   p ← p − lr·λ·p                         (decoupled decay; skipped where `noDecay(name)`)
 *   m ← β1·m + (1 − β1)·g                  (first moment)
 *   v ← β2·v + (1 − β2)·g²                 (second moment)
 *   m̂ = m / (1 − β1ᵗ),   v̂ = v / (1 − β2ᵗ)  (bias correction)
 *   p ← p − lr · m̂ / (√v̂ + ε)
 *
 * The arithmetic follows PyTorch's single-tensor implementation step for step, so rounding
 * matches it as closely as float32 allows: the decay is `p · (1 − lr·λ)`; m is updated as
 * `lerp(m, g, 1 − β1)`; v as `v·β2 + ((1 − β2)·g)·g`; the denominator is
 * `√v / √(1 − β2ᵗ) + ε` (ε is added after the bias correction of √v, as in PyTorch); and the
 * step is `p + (−lr / (1 − β1ᵗ))·m / denom`. Scalar coefficients are computed in float64 on
 * the host, then applied as float32.
 *
 * Like PyTorch, t is counted per parameter, and a parameter without a gradient this step (not
 * trainable, or not reached by the loss) is left untouched: no decay, no moment update.
 *
 * Determinism: the update reads only the gradients, the state and the scalars above, and loops
 * over parameters in sorted-name order, so data-parallel workers that apply the same averaged
 * gradients on the same backend keep bit-identical replicas.
 */
import * as tf from '@tensorflow/tfjs';
import { sortedNames, type GradMap } from './grad-accumulator.js';

export interface AdamWOptions {
  /** Peak learning rate; `applyGradients` uses it when no scheduled rate is passed. */
  lr: number;
  /** Decay rate of the first-moment average; default 0.9. */
  beta1?: number;
  /** Decay rate of the second-moment average; default 0.999. */
  beta2?: number;
  /** Added to the denominator for numerical stability; default 1e-8. */
  eps?: number;
  /** Decoupled weight decay λ; default 0 (PyTorch's default is 0.01; recipes set it explicitly). */
  weightDecay?: number;
  /** Parameters exempt from weight decay; default `defaultNoDecay` (norm weights and biases). */
  noDecay?: (name: string) => boolean;
}

/**
 * The common practice for transformers (as in nanoGPT and HF Trainer's decay parameter
 * selection): no weight decay on normalization weights (any name containing "norm", e.g.
 * `model.layers.0.input_layernorm.weight`, `model.norm.weight`) nor on biases.
 */
export function defaultNoDecay(name: string): boolean {
  return /norm/i.test(name) || /(^|\.)bias$/.test(name);
}

/** One parameter's AdamW state as plain data: its update count t and the moments m and v. */
export interface AdamWParamState {
  /** Number of updates this parameter has received (t in the bias corrections). */
  step: number;
  /** Shape of the parameter (and of both moments). */
  shape: number[];
  /** First moment m (PyTorch's `exp_avg`), row-major. */
  expAvg: Float32Array;
  /** Second moment v (PyTorch's `exp_avg_sq`), row-major. */
  expAvgSq: Float32Array;
}

interface Moments {
  step: number;
  m: tf.Variable;
  v: tf.Variable;
}

function sameShape(a: readonly number[], b: readonly number[]): boolean {
  return a.length === b.length && a.every((d, i) => d === b[i]);
}

/** PyTorch's `torch.lerp(start, end, weight)` = start + weight·(end − start), evaluated as PyTorch's kernel does. */
function lerp(start: tf.Tensor, end: tf.Tensor, weight: number): tf.Tensor {
  const diff = tf.sub(end, start);
  return Math.abs(weight) < 0.5 ? tf.add(start, tf.mul(diff, weight)) : tf.sub(end, tf.mul(diff, 1 - weight));
}

export class AdamW {
  readonly lr: number;
  readonly beta1: number;
  readonly beta2: number;
  readonly eps: number;
  readonly weightDecay: number;
  readonly noDecay: (name: string) => boolean;
  private numSteps = 0;
  private readonly moments = new Map<string, Moments>();

  constructor(options: AdamWOptions) {
    this.lr = options.lr;
    this.beta1 = options.beta1 ?? 0.9;
    this.beta2 = options.beta2 ?? 0.999;
    this.eps = options.eps ?? 1e-8;
    this.weightDecay = options.weightDecay ?? 0;
    this.noDecay = options.noDecay ?? defaultNoDecay;
    if (!(this.lr >= 0) || !Number.isFinite(this.lr)) throw new Error(`adamw: option 'lr' must be a finite number ≥ 0, got ${this.lr}`);
    if (!(this.beta1 >= 0 && this.beta1 < 1)) throw new Error(`adamw: option 'beta1' must be in [0, 1), got ${this.beta1}`);
    if (!(this.beta2 >= 0 && this.beta2 < 1)) throw new Error(`adamw: option 'beta2' must be in [0, 1), got ${this.beta2}`);
    if (!(this.eps >= 0) || !Number.isFinite(this.eps)) throw new Error(`adamw: option 'eps' must be a finite number ≥ 0, got ${this.eps}`);
    if (!(this.weightDecay >= 0) || !Number.isFinite(this.weightDecay)) {
      throw new Error(`adamw: option 'weightDecay' must be a finite number ≥ 0, got ${this.weightDecay}`);
    }
  }

  /** Number of `applyGradients` calls so far (the optimizer step; per-parameter counts may be lower). */
  get step(): number {
    return this.numSteps;
  }

  /**
   * One AdamW update of every parameter that has a gradient in `grads`, at learning rate `lr`
   * (the scheduled rate; default the `lr` option). Reads `grads` without taking ownership.
   * Throws before changing anything when a gradient names no parameter or shapes disagree.
   */
  applyGradients(params: Map<string, tf.Variable>, grads: GradMap, lr: number = this.lr): void {
    if (!(lr >= 0) || !Number.isFinite(lr)) throw new Error(`adamw: learning rate must be a finite number ≥ 0, got ${lr}`);
    const names = sortedNames(grads);
    for (const name of names) {
      const param = params.get(name);
      const grad = grads.get(name)!;
      if (!param) throw new Error(`adamw: gradient '${name}' has no parameter of that name`);
      if (!sameShape(param.shape, grad.shape)) {
        throw new Error(`adamw: gradient '${name}' has shape [${grad.shape}] but the parameter has [${param.shape}]`);
      }
      const state = this.moments.get(name);
      if (state && !sameShape(state.m.shape, param.shape)) {
        throw new Error(`adamw: parameter '${name}' has shape [${param.shape}] but its optimizer state has [${state.m.shape}]`);
      }
    }
    for (const name of names) this.updateParameter(name, params.get(name)!, grads.get(name)!, lr);
    this.numSteps += 1;
  }

  private updateParameter(name: string, param: tf.Variable, grad: tf.Tensor, lr: number): void {
    let state = this.moments.get(name);
    if (!state) {
      state = {
        step: 0,
        m: tf.tidy(() => tf.variable(tf.zerosLike(param), false)),
        v: tf.tidy(() => tf.variable(tf.zerosLike(param), false)),
      };
      this.moments.set(name, state);
    }
    state.step += 1;
    const t = state.step;
    // Host-side scalars in float64, as PyTorch computes them in Python floats.
    const decayFactor = this.noDecay(name) ? 1 : 1 - lr * this.weightDecay;
    const biasCorrection1 = 1 - this.beta1 ** t;
    const biasCorrection2Sqrt = Math.sqrt(1 - this.beta2 ** t);
    const stepSize = lr / biasCorrection1;
    const { m, v } = state;
    tf.tidy(() => {
      // 1) decoupled weight decay: p ← p·(1 − lr·λ)
      const decayed = decayFactor === 1 ? param : tf.mul(param, decayFactor);
      // 2) moments: m ← lerp(m, g, 1 − β1), v ← v·β2 + ((1 − β2)·g)·g
      const nextM = lerp(m, grad, 1 - this.beta1);
      const nextV = tf.add(tf.mul(v, this.beta2), tf.mul(tf.mul(grad, 1 - this.beta2), grad));
      // 3) denominator √v / √(1 − β2ᵗ) + ε
      const denom = tf.add(tf.div(tf.sqrt(nextV), biasCorrection2Sqrt), this.eps);
      // 4) p ← p + (−lr / (1 − β1ᵗ))·m / denom
      const nextParam = tf.add(decayed, tf.div(tf.mul(nextM, -stepSize), denom));
      m.assign(nextM);
      v.assign(nextV);
      param.assign(nextParam);
    });
  }

  /** Names of the parameters that have optimizer state (those updated at least once), sorted. */
  stateNames(): string[] {
    return sortedNames(this.moments);
  }

  /** A copy of one parameter's state, or undefined if it was never updated. */
  readState(name: string): AdamWParamState | undefined {
    const state = this.moments.get(name);
    if (!state) return undefined;
    return {
      step: state.step,
      shape: [...state.m.shape],
      expAvg: Float32Array.from(state.m.dataSync() as Float32Array),
      expAvgSq: Float32Array.from(state.v.dataSync() as Float32Array),
    };
  }

  /**
   * Replaces the whole optimizer state (for resume): the optimizer step and each parameter's
   * moments. Parameters absent from `states` start fresh at their next update.
   */
  loadState(step: number, states: Map<string, AdamWParamState>): void {
    if (!Number.isInteger(step) || step < 0) throw new Error(`adamw: state step must be a non-negative integer, got ${step}`);
    for (const name of sortedNames(states)) {
      const state = states.get(name)!;
      const size = state.shape.reduce((a, b) => a * b, 1);
      if (!Number.isInteger(state.step) || state.step < 1 || state.step > step) {
        throw new Error(`adamw: state of '${name}' has step ${state.step}, expected an integer in [1, ${step}]`);
      }
      if (state.expAvg.length !== size || state.expAvgSq.length !== size) {
        throw new Error(`adamw: state of '${name}' has ${state.expAvg.length}/${state.expAvgSq.length} moment values, expected ${size} for shape [${state.shape}]`);
      }
    }
    this.dispose();
    for (const name of sortedNames(states)) {
      const state = states.get(name)!;
      this.moments.set(name, {
        step: state.step,
        m: tf.tidy(() => tf.variable(tf.tensor(Float32Array.from(state.expAvg), state.shape, 'float32'), false)),
        v: tf.tidy(() => tf.variable(tf.tensor(Float32Array.from(state.expAvgSq), state.shape, 'float32'), false)),
      });
    }
    this.numSteps = step;
  }

  /** Disposes the moment variables and forgets all state (the step count included). */
  dispose(): void {
    for (const { m, v } of this.moments.values()) {
      m.dispose();
      v.dispose();
    }
    this.moments.clear();
    this.numSteps = 0;
  }
}
