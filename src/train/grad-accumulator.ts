/**
 * Gradients as values: compute them for a parameter map, accumulate them over micro-batches,
 * and flatten them to one Float32Array (and back) for an all-reduce between data-parallel workers.
 *
 * A training step is split into separate pieces so that a data-parallel worker can run each
 * on its own: (a) `computeGradients` per micro-batch, (b) `GradientAccumulator` and the
 * flatten/unflatten pair to reduce, (c) `clipByGlobalNorm` (grad-clip.ts), (d) `AdamW.applyGradients`
 * (adamw.ts). Every loop over parameters goes in `sortedNames` order so that float sums are
 * performed in the same order on every worker.
 *
 * Ownership: a gradient map returned here belongs to the caller, who disposes it
 * (`disposeGrads`) once done; functions that take a gradient map only read it.
 */
import * as tf from '@tensorflow/tfjs';

/** Gradients by parameter name (HF-style, e.g. `model.layers.0.mlp.up_proj.weight`). */
export type GradMap = Map<string, tf.Tensor>;

/** The keys of `map` in the fixed order every parameter loop uses (JavaScript's default string order). */
export function sortedNames(map: ReadonlyMap<string, unknown>): string[] {
  return [...map.keys()].sort();
}

/** Disposes every tensor of a gradient map (and empties it so a second call is harmless). */
export function disposeGrads(grads: GradMap): void {
  for (const g of grads.values()) g.dispose();
  grads.clear();
}

function sameShape(a: readonly number[], b: readonly number[]): boolean {
  return a.length === b.length && a.every((d, i) => d === b[i]);
}

/**
 * Runs `lossFn` and returns its value with the gradients of every trainable parameter it reaches.
 *
 * The variable list is passed to `tf.variableGrads` in sorted-name order, and the result is keyed
 * by the parameter-map names (not the tf.Variable names, which models need not set). Parameters
 * with `trainable = false`, and parameters the loss does not reach, get no entry — like PyTorch's
 * `p.grad is None` — and AdamW leaves them untouched.
 */
export function computeGradients(params: Map<string, tf.Variable>, lossFn: () => tf.Scalar): { loss: number; grads: GradMap } {
  const names = sortedNames(params);
  const nameOfVariable = new Map<tf.Variable, string>();
  for (const name of names) {
    const variable = params.get(name)!;
    const other = nameOfVariable.get(variable);
    if (other !== undefined) {
      throw new Error(`grad-accumulator: parameters '${other}' and '${name}' are the same tf.Variable; list a tied weight once`);
    }
    nameOfVariable.set(variable, name);
  }
  const trainableNames = names.filter((name) => params.get(name)!.trainable);
  if (trainableNames.length === 0) throw new Error(`grad-accumulator: none of the ${names.length} parameters is trainable`);
  const varList = trainableNames.map((name) => params.get(name)!);
  const { value, grads: byVariableName } = tf.variableGrads(lossFn, varList);
  const loss = value.dataSync()[0];
  value.dispose();
  const grads: GradMap = new Map();
  for (const name of trainableNames) {
    const grad = byVariableName[params.get(name)!.name];
    if (grad != null) grads.set(name, grad);
  }
  return { loss, grads };
}

/**
 * Sums micro-batch gradients:
 *
 *   g = Σᵢ ∇ℓᵢ
 *
 * Each ℓᵢ is a micro-batch's contribution to the global batch's objective, already normalised by
 * the global unit counts (`src/train/objective.ts`), so the plain sum is the gradient of the whole
 * batch's loss — what one big batch would give — with no weights and no averaging.
 *
 * A parameter missing from some micro-batch counts as a zero gradient there (as when PyTorch
 * accumulates into `.grad`). The accumulator owns its running sums; `sum()` returns new tensors
 * owned by the caller.
 */
export class GradientAccumulator {
  private readonly sums: GradMap = new Map();
  private numAdded = 0;

  /** Number of micro-batches added since the last reset. */
  get numMicroBatches(): number {
    return this.numAdded;
  }

  /** Adds gᵢ to the running sums. Reads `grads` without taking ownership. */
  add(grads: GradMap): void {
    const names = sortedNames(grads);
    // Check every shape before changing anything, so a bad call leaves the sums as they were.
    for (const name of names) {
      const previous = this.sums.get(name);
      const shape = grads.get(name)!.shape;
      if (previous && !sameShape(previous.shape, shape)) {
        throw new Error(`grad-accumulator: gradient '${name}' has shape [${shape}] but earlier micro-batches gave [${previous.shape}]`);
      }
    }
    for (const name of names) {
      const grad = grads.get(name)!;
      const previous = this.sums.get(name);
      const next = previous ? tf.add(previous, grad) : tf.clone(grad);
      previous?.dispose();
      this.sums.set(name, next);
    }
    this.numAdded += 1;
  }

  /** Σᵢ gᵢ as new tensors owned by the caller. */
  sum(): GradMap {
    if (this.numAdded === 0) throw new Error('grad-accumulator: sum() called before any add()');
    const out: GradMap = new Map();
    for (const name of sortedNames(this.sums)) out.set(name, tf.clone(this.sums.get(name)!));
    return out;
  }

  /** Disposes the running sums and starts over (call after each optimizer step). */
  reset(): void {
    disposeGrads(this.sums);
    this.numAdded = 0;
  }
}

/**
 * Concatenates the gradients named in `names`, in that order, into one Float32Array — the
 * layout a SharedArrayBuffer all-reduce sums element-wise. Writes into `out` when given (e.g. a
 * Float32Array view of a SharedArrayBuffer), whose length must equal the total element count.
 */
export function flattenGrads(grads: GradMap, names: string[], out?: Float32Array): Float32Array {
  let numElements = 0;
  for (const name of names) {
    const grad = grads.get(name);
    if (!grad) throw new Error(`grad-accumulator: flattenGrads: gradient '${name}' is missing`);
    if (grad.dtype !== 'float32') throw new Error(`grad-accumulator: flattenGrads: gradient '${name}' has dtype ${grad.dtype}, expected float32`);
    numElements += grad.size;
  }
  if (out && out.length !== numElements) {
    throw new Error(`grad-accumulator: flattenGrads: output has ${out.length} elements but the gradients hold ${numElements}`);
  }
  const flat = out ?? new Float32Array(numElements);
  let offset = 0;
  for (const name of names) {
    const grad = grads.get(name)!;
    flat.set(grad.dataSync() as Float32Array, offset);
    offset += grad.size;
  }
  return flat;
}

/**
 * The inverse of `flattenGrads`: slices `flat` into tensors of `shapes[i]` named `names[i]`.
 * The slices are copied, so later writes to `flat` (a shared buffer) do not reach the tensors.
 */
export function unflattenGrads(flat: Float32Array, names: string[], shapes: number[][]): GradMap {
  if (names.length !== shapes.length) {
    throw new Error(`grad-accumulator: unflattenGrads: ${names.length} names but ${shapes.length} shapes`);
  }
  const sizes = shapes.map((shape) => shape.reduce((a, b) => a * b, 1));
  const numElements = sizes.reduce((a, b) => a + b, 0);
  if (numElements !== flat.length) {
    throw new Error(`grad-accumulator: unflattenGrads: shapes hold ${numElements} elements but the flat buffer has ${flat.length}`);
  }
  const grads: GradMap = new Map();
  let offset = 0;
  names.forEach((name, i) => {
    grads.set(name, tf.tensor(flat.slice(offset, offset + sizes[i]), shapes[i], 'float32'));
    offset += sizes[i];
  });
  return grads;
}
