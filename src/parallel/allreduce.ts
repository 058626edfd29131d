/**
 * The gradient all-reduce of data-parallel training, through one `SharedArrayBuffer`.
 *
 * Every replica r (0 = the parent thread, 1…N−1 the workers) owns a *slot*: a Float32Array view
 * of the shared buffer, laid out as `flattenGrads` lays gradients out (trainable parameters in
 * sorted-name order, each row-major). One step:
 *   1) each replica writes the sum of its micro-batches' gradients into its slot (`writeSlot`);
 *      each is the gradient of a contribution already normalised by the global batch's unit
 *      counts (`src/train/objective.ts`), so the reduction is a plain sum;
 *   2) each replica reduces its own contiguous range of elements (`partitionRange`) over all
 *      slots into slot 0: g[k] = s₀[k] + s₁[k] + … + s_{N−1}[k] — the slots are summed in
 *      replica order in float64 and rounded once, so the result does not depend on which thread
 *      reduces which range (a reduce-scatter whose "gather" is free: the memory is shared);
 *   3) every replica reads the same g from slot 0 (`readReduced`), clips and applies it.
 * Element k of slot 0 is read and written only by the replica whose range holds k, so the
 * in-place reduction needs no extra buffer. Messages only say "go" and "done"; no gradient is
 * ever copied through a message.
 */
import * as tf from '@tensorflow/tfjs';
import { sortedNames, type GradMap } from '../train/grad-accumulator.js';

/** Where each trainable parameter's gradient sits in a slot. */
export interface GradientLayout {
  /** Trainable parameter names in sorted order (the order every parameter loop uses). */
  names: string[];
  /** Shape of each, as the parameter has it. */
  shapes: number[][];
  /** First element of each in a slot. */
  offsets: number[];
  /** Elements of each. */
  sizes: number[];
  /** Elements of a whole slot. */
  numElements: number;
}

/** The layout of parameters `names` with `shapes` (same order). */
export function gradientLayout(names: string[], shapes: number[][]): GradientLayout {
  if (names.length !== shapes.length) throw new Error(`allreduce: ${names.length} names but ${shapes.length} shapes`);
  const sizes = shapes.map((shape) => shape.reduce((a, b) => a * b, 1));
  const offsets: number[] = [];
  let numElements = 0;
  for (const size of sizes) {
    offsets.push(numElements);
    numElements += size;
  }
  return { names, shapes: shapes.map((s) => [...s]), offsets, sizes, numElements };
}

/** The layout of a parameter map's trainable parameters. */
export function layoutOfParams(params: Map<string, tf.Variable>): GradientLayout {
  const names = sortedNames(params).filter((name) => params.get(name)!.trainable);
  return gradientLayout(names, names.map((name) => params.get(name)!.shape));
}

/** A shared buffer with one slot of `numElements` float32 per replica. */
export function createSlotBuffer(numReplicas: number, numElements: number): SharedArrayBuffer {
  return new SharedArrayBuffer(numReplicas * numElements * Float32Array.BYTES_PER_ELEMENT);
}

/** The slot views of a buffer made by `createSlotBuffer` (slot 0 also receives the reduced gradient). */
export function slotViews(buffer: SharedArrayBuffer, numReplicas: number, numElements: number): Float32Array[] {
  const expected = numReplicas * numElements * Float32Array.BYTES_PER_ELEMENT;
  if (buffer.byteLength !== expected) throw new Error(`allreduce: slot buffer has ${buffer.byteLength} bytes, expected ${expected} for ${numReplicas} slots of ${numElements}`);
  return Array.from({ length: numReplicas }, (_, r) => new Float32Array(buffer, r * numElements * Float32Array.BYTES_PER_ELEMENT, numElements));
}

/**
 * Writes `grads` into `slot` at the layout's offsets; a parameter without a gradient gets zeros
 * there. Returns the layout indices of the parameters that had one.
 */
export function writeSlot(layout: GradientLayout, grads: GradMap, slot: Float32Array): number[] {
  if (slot.length !== layout.numElements) throw new Error(`allreduce: slot has ${slot.length} elements, the layout ${layout.numElements}`);
  const known = new Set(layout.names);
  for (const name of grads.keys()) {
    if (!known.has(name)) throw new Error(`allreduce: gradient '${name}' is not in the layout (not a trainable parameter)`);
  }
  const present: number[] = [];
  layout.names.forEach((name, i) => {
    const grad = grads.get(name);
    const offset = layout.offsets[i];
    if (!grad) {
      slot.fill(0, offset, offset + layout.sizes[i]);
      return;
    }
    if (grad.size !== layout.sizes[i]) throw new Error(`allreduce: gradient '${name}' has ${grad.size} elements, the layout ${layout.sizes[i]}`);
    if (grad.dtype !== 'float32') throw new Error(`allreduce: gradient '${name}' has dtype ${grad.dtype}, expected float32`);
    slot.set(grad.dataSync() as Float32Array, offset);
    present.push(i);
  });
  return present;
}

/**
 * Part `part` of `numParts` contiguous ranges covering `[0, numElements)`, boundaries rounded
 * to multiples of 16 elements (64 bytes) so that two threads never write the same cache line.
 */
export function partitionRange(numElements: number, numParts: number, part: number): [number, number] {
  if (!Number.isInteger(numParts) || numParts < 1 || !Number.isInteger(part) || part < 0 || part >= numParts) {
    throw new Error(`allreduce: part ${part} of ${numParts} is not a valid partition index`);
  }
  const boundary = (p: number) => Math.min(numElements, Math.ceil((numElements * p) / numParts / 16) * 16);
  return [boundary(part), part === numParts - 1 ? numElements : boundary(part + 1)];
}

/**
 * slots[0][k] ← slots[0][k] + … + slots[N−1][k] for k in [start, end): summed in slot order as
 * float64, rounded to float32 once.
 */
export function reduceSlotRange(slots: Float32Array[], start: number, end: number): void {
  const [first, ...rest] = slots;
  if (start < 0 || end > first.length || start > end) throw new Error(`allreduce: range [${start}, ${end}) is outside a slot of ${first.length}`);
  if (rest.length === 1) {
    // The common two-replica case without the inner loop.
    const second = rest[0];
    for (let k = start; k < end; k++) first[k] = first[k] + second[k];
    return;
  }
  for (let k = start; k < end; k++) {
    let sum = first[k];
    for (const slot of rest) sum += slot[k];
    first[k] = sum;
  }
}

/** The reduced gradients of the parameters at layout indices `present`, copied out of `reduced` as new tensors. */
export function readReduced(layout: GradientLayout, reduced: Float32Array, present: number[]): GradMap {
  const grads: GradMap = new Map();
  for (const i of present) {
    const offset = layout.offsets[i];
    // slice() copies: the tensor must not alias the shared buffer, which the next step overwrites.
    grads.set(layout.names[i], tf.tensor(reduced.slice(offset, offset + layout.sizes[i]), layout.shapes[i], 'float32'));
  }
  return grads;
}
