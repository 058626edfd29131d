/**
 * LoRA adapters (Hu et al. 2021, "LoRA: Low-Rank Adaptation of Large Language Models", eq. 3):
 *
 *   h = W x + (α / r) · B A x
 *
 * on the projections PEFT names in `target_modules` (q_proj k_proj v_proj o_proj gate_proj
 * up_proj down_proj), with W frozen and only A [r, in], B [out, r] trained. As in PEFT, A starts
 * Kaiming-uniform (a = √5, so U(−1/√in, 1/√in)) and B at zero: an untrained adapter is the
 * identity. PEFT's `use_rslora` (scaling α/√r) is honoured when read from a file.
 *
 * Internally the product runs as `x·W + s · dropout(x)·A·B` with A stored [in, r] and B [r, out]
 * (no transpose flag: the wasm backend's fast matmul); PEFT's files hold `lora_A.weight` [r, in]
 * and `lora_B.weight` [out, r], transposed at the file boundary like the base weights.
 *
 * The adapters plug into the model through `LlamaModel.linearOverrides`; `withDisabled` runs a
 * function on the base weights alone (DPO's reference, as TRL does with a PEFT policy). Dropout
 * acts only while a gradient tape records (training), with masks seeded by `dropoutSeed` and the
 * module, so a recompute (gradient checkpointing) draws the same mask.
 */
import * as tf from '@tensorflow/tfjs';
import type { z } from 'zod';
import { LORA_TARGET_MODULES, LoraOptionsSchema } from '../config/lora.js';
import { parameterSpecs, type LinearFn, type LlamaModel } from './llama.js';
import type { NamedTensor } from './safetensors.js';
import { CheckpointError } from './safetensors.js';
import { transpose2d } from './weights.js';
import { Rng } from '../util/rng.js';

export { LORA_TARGET_MODULES, LoraOptionsSchema };
export type LoraOptionsInput = z.input<typeof LoraOptionsSchema>;
export type LoraOptions = z.infer<typeof LoraOptionsSchema> & {
  /** rsLoRA (Kalajdzievski 2023): scale α/√r instead of α/r (read from PEFT files only). */
  useRslora?: boolean;
};

const ADAPTER_KEY = /^model\.layers\.(\d+)\.(self_attn|mlp)\.([a-z_]+)\.lora_([AB])\.weight$/;

/** True for an adapter variable's name (`….lora_A.weight`, `….lora_B.weight`). */
export function isAdapterParameter(name: string): boolean {
  return ADAPTER_KEY.test(name);
}

/** The HF weight name a target module of layer `l` adapts, e.g. `model.layers.0.self_attn.q_proj.weight`. */
export function targetWeightName(layer: number, module: string): string {
  const block = ['q_proj', 'k_proj', 'v_proj', 'o_proj'].includes(module) ? 'self_attn' : 'mlp';
  return `model.layers.${layer}.${block}.${module}.weight`;
}

/** Adapter parameter name of a target weight: `…q_proj.weight` → `…q_proj.lora_A.weight`. */
export function adapterName(weightName: string, which: 'A' | 'B'): string {
  return weightName.replace(/\.weight$/, `.lora_${which}.weight`);
}

/** Number of adapter parameters LoRA adds to a model of these sizes. */
export function numLoraParameters(dims: { numLayers: number; hiddenSize: number; intermediateSize: number; numHeads: number; numKvHeads: number; headDim: number }, o: Pick<LoraOptions, 'r' | 'targetModules'>): number {
  const q = dims.numHeads * dims.headDim;
  const kv = dims.numKvHeads * dims.headDim;
  const c = dims.hiddenSize;
  const i = dims.intermediateSize;
  const sizes: Record<string, [number, number]> = { q_proj: [c, q], k_proj: [c, kv], v_proj: [c, kv], o_proj: [q, c], gate_proj: [c, i], up_proj: [c, i], down_proj: [i, c] };
  return dims.numLayers * o.targetModules.reduce((a, m) => a + o.r * (sizes[m][0] + sizes[m][1]), 0);
}

const attached = new WeakMap<LlamaModel, LoraAdapters>();

/** The adapters attached to `model`, if any. */
export function attachedAdapters(model: LlamaModel): LoraAdapters | undefined {
  return attached.get(model);
}

/**
 * What a training step differentiates and updates: the model's parameters and, with LoRA, the
 * adapters' (the frozen base is in the map with `trainable = false`, so workers can rebuild it).
 */
export function trainingParameters(model: LlamaModel): Map<string, tf.Variable> {
  const adapters = attached.get(model);
  if (!adapters) return model.params;
  return new Map([...model.params, ...adapters.params]);
}

export class LoraAdapters {
  /** Adapter variables by name: `…q_proj.lora_A.weight` [in, r], `…q_proj.lora_B.weight` [r, out]. */
  readonly params: Map<string, tf.Variable>;
  /** False: the model computes with its base weights only. */
  enabled = true;
  /** Seeds the dropout masks of the next training forward (set per micro-batch by the trainer). */
  dropoutSeed = 0;
  /** α/r (α/√r with rsLoRA). */
  readonly scaling: number;
  /** HF names of the adapted weights, in model order. */
  readonly targets: string[];
  /** The projections' own overrides before the adapters came (8-bit weights), restored by `detach`. */
  private readonly baseOverrides = new Map<string, LinearFn>();

  private constructor(
    private readonly model: LlamaModel,
    readonly options: LoraOptions,
    params: Map<string, tf.Variable>,
  ) {
    if (attached.has(model)) throw new Error('lora: the model already has adapters attached');
    this.params = params;
    this.scaling = options.useRslora ? options.alpha / Math.sqrt(options.r) : options.alpha / options.r;
    this.targets = loraTargets(model, options);
    this.targets.forEach((name, index) => {
      const a = params.get(adapterName(name, 'A'));
      const b = params.get(adapterName(name, 'B'));
      if (!a || !b) throw new Error(`lora: missing adapter for ${name}`);
      // a projection computed by something else (8-bit weights: QLoRA) stays the base of its adapter
      const base = model.linearOverrides.get(name);
      if (base) this.baseOverrides.set(name, base);
      const override: LinearFn = (x, weight) => this.project(x, weight, a, b, index, base);
      override.variables = [a, b];
      model.linearOverrides.set(name, override);
    });
    attached.set(model, this);
  }

  /** New adapters on `model` (A Kaiming-uniform from `seed`, B zero), attached. */
  static create(model: LlamaModel, options: LoraOptions, seed: number): LoraAdapters {
    const rng = new Rng(seed).fork(0x10a);
    const params = new Map<string, tf.Variable>();
    for (const name of loraTargets(model, options)) {
      const [numIn, numOut] = targetShape(model, name); // internal [in, out]
      const bound = 1 / Math.sqrt(numIn); // kaiming_uniform_(a=√5) on [r, in]: gain·√(3/fan_in) = 1/√in
      const a = Float32Array.from({ length: numIn * options.r }, () => (2 * rng.next() - 1) * bound);
      params.set(adapterName(name, 'A'), tf.tidy(() => tf.variable(tf.tensor2d(a, [numIn, options.r]), true)));
      params.set(adapterName(name, 'B'), tf.tidy(() => tf.variable(tf.zeros([options.r, numOut]), true)));
    }
    return new LoraAdapters(model, options, params);
  }

  /** Adapters over existing variables (a data-parallel worker's copy of the parent's), attached. */
  static fromVariables(model: LlamaModel, options: LoraOptions, params: Map<string, tf.Variable>): LoraAdapters {
    const expected = new Set(loraTargets(model, options).flatMap((name) => [adapterName(name, 'A'), adapterName(name, 'B')]));
    for (const name of params.keys()) if (!expected.has(name)) throw new Error(`lora: ${name} is not an adapter of this configuration`);
    return new LoraAdapters(model, options, params);
  }

  /**
   * Adapters from PEFT tensors (names relative to the model, `model.layers.N.…lora_A.weight`,
   * PEFT shapes [r, in] / [out, r]), attached. `source` names the file in errors.
   */
  static fromPeftTensors(model: LlamaModel, options: LoraOptions, tensors: Map<string, NamedTensor>, source: string): LoraAdapters {
    const params = new Map<string, tf.Variable>();
    try {
      const expected = new Set<string>();
      for (const name of loraTargets(model, options)) {
        const [numIn, numOut] = targetShape(model, name);
        for (const [which, shape] of [['A', [options.r, numIn]], ['B', [numOut, options.r]]] as const) {
          const key = adapterName(name, which);
          expected.add(key);
          const t = tensors.get(key);
          if (!t) throw new CheckpointError(`lora: ${source}: tensor base_model.model.${key}: missing`);
          if (t.shape.join(',') !== shape.join(',')) {
            throw new CheckpointError(`lora: ${source}: tensor base_model.model.${key}: shape [${t.shape}], adapter_config and base model imply [${shape}]`);
          }
          const data = transpose2d(t.data, shape[0], shape[1]); // → [in, r] / [r, out]
          params.set(key, tf.tidy(() => tf.variable(tf.tensor2d(data, [shape[1], shape[0]]), true)));
        }
      }
      for (const key of tensors.keys()) {
        if (ADAPTER_KEY.test(key) && !expected.has(key)) throw new CheckpointError(`lora: ${source}: tensor base_model.model.${key}: not a target of adapter_config.json`);
      }
    } catch (err) {
      for (const p of params.values()) p.dispose();
      throw err;
    }
    return new LoraAdapters(model, options, params);
  }

  /** x [N, in] → x·W + s · dropout(x)·A·B [N, out] (the base product alone when disabled). */
  private project(x: tf.Tensor2D, weight: tf.Variable | undefined, a: tf.Variable, b: tf.Variable, index: number, baseFn: LinearFn | undefined): tf.Tensor2D {
    const base: tf.Tensor2D = baseFn ? baseFn(x, weight) : tf.matMul(x, weight as tf.Tensor2D); // [N, out]
    if (!this.enabled) return base;
    return tf.tidy(() => {
      const rate = this.options.dropout;
      // Dropout only while a tape records (PyTorch's train mode with grad on); same seed, same mask.
      const training = rate > 0 && tf.engine().state.gradientDepth > 0;
      const input = training ? tf.dropout(x, rate, undefined, (this.dropoutSeed * 7919 + index * 104729) % 2147483647) : x; // [N, in]
      const low = tf.matMul(input, a); // [N, r]
      return tf.add(base, tf.mul(tf.matMul(low, b), this.scaling)) as tf.Tensor2D; // [N, out]
    });
  }

  /** Runs `fn` with the adapters switched off (the base model), restoring the switch afterwards. */
  withDisabled<T>(fn: () => T): T {
    const was = this.enabled;
    this.enabled = false;
    try {
      return fn();
    } finally {
      this.enabled = was;
    }
  }

  /** Adapter tensors with PEFT's names (`base_model.model.` prefix) and shapes ([r, in], [out, r]). */
  toPeftTensors(): Map<string, NamedTensor> {
    const out = new Map<string, NamedTensor>();
    for (const [key, v] of this.params) {
      const [rows, cols] = v.shape;
      out.set(`base_model.model.${key}`, { shape: [cols, rows], data: transpose2d(v.dataSync() as Float32Array, rows, cols) });
    }
    return out;
  }

  /** Adds s·A·B into each target weight (W' = W + s·(B A)ᵀ in HF's layout) and detaches the adapters. */
  mergeIntoBase(): void {
    const quantized = this.targets.find((name) => !this.model.params.has(name));
    if (quantized) throw new Error(`lora: cannot merge into ${quantized}: it is stored in 8 bits; merge the adapter onto the full-precision base (tfalign model merge --base FLOAT_DIR)`);
    for (const name of this.targets) {
      const w = this.model.params.get(name)!;
      const a = this.params.get(adapterName(name, 'A'))!;
      const b = this.params.get(adapterName(name, 'B'))!;
      tf.tidy(() => w.assign(tf.add(w, tf.mul(tf.matMul(a, b), this.scaling)) as tf.Tensor)); // [in, out]
    }
    this.detach();
  }

  /** Removes the overrides from the model and frees the adapter variables. */
  detach(): void {
    for (const name of this.targets) {
      const base = this.baseOverrides.get(name);
      if (base) this.model.linearOverrides.set(name, base);
      else this.model.linearOverrides.delete(name);
    }
    attached.delete(this.model);
    for (const p of this.params.values()) p.dispose();
    this.params.clear();
  }

  /** Number of adapter parameters. */
  numParameters(): number {
    let n = 0;
    for (const p of this.params.values()) n += p.size;
    return n;
  }
}

/** HF names of the weights `options.targetModules` selects in `model`. */
/** [in, out] of a target projection, whether the model holds it in float or in 8 bits (no float parameter). */
function targetShape(model: LlamaModel, name: string): [number, number] {
  const param = model.params.get(name);
  if (param) return param.shape as [number, number];
  const spec = parameterSpecs(model.config).find((p) => p.name === name);
  if (!spec) throw new Error(`lora: ${name} is not a parameter of this model`);
  return [spec.shape[0]!, spec.shape[1]!]; // internal [in, out], as the float parameter would be
}

function loraTargets(model: LlamaModel, options: Pick<LoraOptions, 'targetModules'>): string[] {
  const names: string[] = [];
  for (let l = 0; l < model.dims.numLayers; l++) {
    for (const m of LORA_TARGET_MODULES) if (options.targetModules.includes(m)) names.push(targetWeightName(l, m));
  }
  return names;
}

/**
 * Freezes the base for LoRA training: every model parameter `trainable = false` except a reward
 * model's `score.weight` (a new head has to learn; PEFT's `modules_to_save: ["score"]`).
 */
export function freezeBaseForLora(model: LlamaModel): void {
  for (const [name, v] of model.params) v.trainable = model.dims.isRewardModel && name === 'score.weight';
}
