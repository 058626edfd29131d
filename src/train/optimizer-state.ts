/**
 * Resume state in memory: the AdamW state as a safetensors-ready pair (named tensors + JSON
 * metadata), and the trainer's own counters (`TrainerState`).
 *
 * Layout of the tensors, one pair per parameter that has been updated, with PyTorch's state
 * names: `<param>.exp_avg` (m) and `<param>.exp_avg_sq` (v), each of the parameter's shape.
 * The metadata carries the optimizer step, each parameter's own update count t, and the
 * hyperparameters in force when it was saved. Writing both to disk is the checkpoint layer's job
 * (`writeSafetensors(path, tensors, { metadata: { optimizer: JSON.stringify(meta) } })`).
 *
 * On import, the state (step, t, m, v) is restored exactly, so the next update equals the one an
 * uninterrupted run would make. The hyperparameters stay those the new optimizer was built with
 * (the run config is the authority, unlike PyTorch's `load_state_dict`, which silently brings
 * back the saved learning rate); the saved ones are there to inspect.
 */
import * as tf from '@tensorflow/tfjs';
import { z } from 'zod';
import { numElements, type NamedTensor } from '../model/safetensors.js';
import { AdamW, type AdamWParamState } from './adamw.js';

/** Suffix of the first-moment tensor of each parameter (PyTorch's name). */
export const EXP_AVG_SUFFIX = '.exp_avg';
/** Suffix of the second-moment tensor of each parameter (PyTorch's name). */
export const EXP_AVG_SQ_SUFFIX = '.exp_avg_sq';

export const OptimizerStateMetaSchema = z
  .object({
    format: z.literal('tfalign.adamw').describe('Identifies the producer and optimizer; only AdamW state is written.'),
    version: z.literal(1).describe('Layout version of this metadata and the tensor names.'),
    step: z.number().int().nonnegative().describe('Number of optimizer steps taken (AdamW.step).'),
    paramSteps: z
      .record(z.string(), z.number().int().positive())
      .describe('Per-parameter update count t used in the bias corrections; keys are the parameters with state.'),
    hyperparameters: z
      .object({
        lr: z.number().describe('Peak learning rate of the saving optimizer.'),
        beta1: z.number().describe('First-moment decay.'),
        beta2: z.number().describe('Second-moment decay.'),
        eps: z.number().describe('Denominator epsilon.'),
        weightDecay: z.number().describe('Decoupled weight decay λ.'),
      })
      .describe('Hyperparameters when saved; informational — import keeps the new optimizer’s own.'),
  })
  .strict();

export type OptimizerStateMeta = z.infer<typeof OptimizerStateMetaSchema>;

/** The AdamW state, ready for a safetensors file: tensors plus JSON-serialisable metadata. */
export interface OptimizerState {
  tensors: Map<string, NamedTensor>;
  meta: OptimizerStateMeta;
}

/** Formats the first zod issue as `field 'a.b': message`. */
function firstIssue(error: z.ZodError): string {
  const issue = error.issues[0]!;
  return `field '${issue.path.join('.') || '(root)'}': ${issue.message}`;
}

/** Validates metadata read back from JSON (e.g. a safetensors `__metadata__` string); `source` names the file in errors. */
export function parseOptimizerStateMeta(json: unknown, source: string): OptimizerStateMeta {
  const result = OptimizerStateMetaSchema.safeParse(json);
  if (!result.success) throw new Error(`optimizer-state: ${source}: ${firstIssue(result.error)}`);
  return result.data;
}

/** Copies the optimizer's state out of tf memory (the optimizer is left unchanged). */
export function exportOptimizerState(opt: AdamW): OptimizerState {
  const tensors = new Map<string, NamedTensor>();
  const paramSteps: Record<string, number> = {};
  for (const name of opt.stateNames()) {
    const state = opt.readState(name)!;
    tensors.set(name + EXP_AVG_SUFFIX, { shape: [...state.shape], data: state.expAvg });
    tensors.set(name + EXP_AVG_SQ_SUFFIX, { shape: [...state.shape], data: state.expAvgSq });
    paramSteps[name] = state.step;
  }
  return {
    tensors,
    meta: {
      format: 'tfalign.adamw',
      version: 1,
      step: opt.step,
      paramSteps,
      hyperparameters: { lr: opt.lr, beta1: opt.beta1, beta2: opt.beta2, eps: opt.eps, weightDecay: opt.weightDecay },
    },
  };
}

function formatShape(shape: readonly number[]): string {
  return `[${shape.join(', ')}]`;
}

/**
 * Loads `state` into `opt`, replacing whatever it held, after checking it against `params`:
 * every parameter with state must exist with the same shape, both moments must be present with
 * that shape, and no other tensor may appear. Parameters without state start fresh (as in
 * PyTorch, state exists only for parameters that have been updated).
 */
export function importOptimizerState(opt: AdamW, params: Map<string, tf.Variable>, state: OptimizerState): void {
  const meta = parseOptimizerStateMeta(state.meta, 'metadata');
  const expected = new Set<string>();
  const states = new Map<string, AdamWParamState>();
  for (const name of Object.keys(meta.paramSteps).sort()) {
    const param = params.get(name);
    if (!param) throw new Error(`optimizer-state: parameter '${name}' has optimizer state but is not among the model parameters`);
    const step = meta.paramSteps[name]!;
    if (step > meta.step) throw new Error(`optimizer-state: parameter '${name}' has step ${step}, more than the optimizer step ${meta.step}`);
    const moments: NamedTensor[] = [];
    for (const suffix of [EXP_AVG_SUFFIX, EXP_AVG_SQ_SUFFIX]) {
      const tensorName = name + suffix;
      const tensor = state.tensors.get(tensorName);
      if (!tensor) throw new Error(`optimizer-state: tensor '${tensorName}' is missing`);
      const shapeMatches = tensor.shape.length === param.shape.length && tensor.shape.every((d, i) => d === param.shape[i]);
      if (!shapeMatches) {
        throw new Error(`optimizer-state: tensor '${tensorName}' has shape ${formatShape(tensor.shape)} but the parameter has ${formatShape(param.shape)}`);
      }
      if (tensor.data.length !== numElements(tensor.shape)) {
        throw new Error(`optimizer-state: tensor '${tensorName}' has ${tensor.data.length} values but shape ${formatShape(tensor.shape)} needs ${numElements(tensor.shape)}`);
      }
      expected.add(tensorName);
      moments.push(tensor);
    }
    states.set(name, { step, shape: [...param.shape], expAvg: moments[0]!.data, expAvgSq: moments[1]!.data });
  }
  for (const tensorName of [...state.tensors.keys()].sort()) {
    if (!expected.has(tensorName)) throw new Error(`optimizer-state: tensor '${tensorName}' belongs to no parameter listed in paramSteps`);
  }
  opt.loadState(meta.step, states);
}

export const RngStateSchema = z
  .object({
    key: z.number().int().min(0).max(0xffffffff).describe('32-bit key derived from the run seed (Rng.state().key).'),
    words: z
      .tuple([
        z.number().int().min(0).max(0xffffffff),
        z.number().int().min(0).max(0xffffffff),
        z.number().int().min(0).max(0xffffffff),
        z.number().int().min(0).max(0xffffffff),
      ])
      .describe('The four xoshiro128** state words (Rng.state().words).'),
  })
  .strict();

export const TrainerStateSchema = z
  .object({
    globalStep: z.number().int().nonnegative().describe('Optimizer steps completed; the schedule resumes at this step.'),
    epoch: z.number().int().nonnegative().describe('Passes over the training data started so far (0-based index of the current one).'),
    samplesSeen: z.number().int().nonnegative().describe('Training examples consumed, to skip them on resume.'),
    rngState: RngStateSchema.describe('Position of the trainer RNG (data order, sampling), for an exact resume.'),
    bestMetric: z.number().optional().describe('Best evaluation metric so far, for keeping the best checkpoint; absent before the first evaluation.'),
  })
  .strict();

/** The trainer's counters saved next to the weights and optimizer state (trainer_state.json). */
export type TrainerState = z.infer<typeof TrainerStateSchema>;

/** Validates a trainer state read from JSON; `source` names the file in errors. */
export function parseTrainerState(json: unknown, source: string): TrainerState {
  const result = TrainerStateSchema.safeParse(json);
  if (!result.success) throw new Error(`optimizer-state: ${source}: ${firstIssue(result.error)}`);
  return result.data;
}
