/**
 * The skeleton the four recipes (pretrain, reward, sft, dpo) share, so that each reads top to
 * bottom and none drifts from the others:
 *
 *   1) validate  — the trainer's own schema (in the trainer), then `setupRecipe`: the model's
 *                  config.json (cheap), the kind of model, the backend, whether one step fits
 *                  this machine (workers, memory), the length against the model's context —
 *                  all before data or weights;
 *   2) setup     — the tokenizer and the pad id (`Tokenizer.batchPadId`, one rule everywhere),
 *                  then the trainer's data, with the eval hold-out done by `holdOut`;
 *   3) train     — `trainWithTask`: the step engine for the trainer's task (this thread, or
 *                  data-parallel workers), then the loop;
 *   4) save      — by the loop (`runTrainingLoop`): checkpoints, metrics.jsonl, the final model.
 *
 * The objective itself is not here: it is the trainer's task (`src/tasks/`), which the engine
 * builds on every replica.
 */
import { initBackend, type BackendInfo, type BackendName } from '../backend.js';
import { loadConfig as loadModelConfig } from '../model/pretrained.js';
import { quantizedParameterCount } from '../model/quantization/hf-format.js';
import { modelDims, type ModelDims, type RewardHead } from '../model/config.js';
import type { LlamaModel } from '../model/llama.js';
import { Tokenizer } from '../tokenizer/tokenizer.js';
import type { TrainingOptions } from '../config/training.js';
import { checkTrainingFits } from '../train/fits.js';
import { runTrainingLoop, type TrainingLoopArgs, type TrainingResult } from '../train/loop.js';
import type { TaskDescriptor } from '../train/task.js';
import { Rng } from '../util/rng.js';
import { createTrainerEngine } from '../parallel/factory.js';
import { configureTrainingModel } from '../train/model-setup.js';

export interface RecipeSpec {
  /** The command, for errors (`sft`, `dpo`, `rm train`, `pretrain`); config errors read `<command> config: …`. */
  command: string;
  /** The method in prose, for errors (`SFT`, `DPO`, `pretraining`, `reward-model training`). */
  method: string;
  /** `causal-lm`: a reward model is refused; `any`: a causal LM (which gets a score head) or a reward model. */
  model: 'causal-lm' | 'any';
  /** The reward head of the trained reward model, for the memory check (a `score` head is one output, a `logprob` head the vocabulary). */
  rewardHead?: RewardHead;
  /** The longest sequence in tokens, and the field that sets it (`maxLength`, `seqLen`). */
  length: number;
  lengthField: string;
  /**
   * A `length` past the model's context: `refuse` (a one-line error naming the field) or
   * `drop-rows` (rows longer than the context are dropped as too long, like rows longer than
   * `length`; `contextLength` is then the bound to tokenize with).
   */
  longerThanContext: 'refuse' | 'drop-rows';
  /** Sequences per row: 1 (pretraining, SFT), 2 (DPO pairs), up to 3 (reward-model rows). */
  sequencesPerRow: number;
  /** Models held per replica besides the trained one (DPO's resident reference: 1). */
  frozenModels?: number;
}

export interface RecipeSetup {
  backend: BackendInfo;
  dims: ModelDims;
  tokenizer: Tokenizer;
  /** The id every right-padded batch of this run is filled with. */
  padId: number;
  /** min(length, the model's context): the bound rows are tokenized with. */
  contextLength: number;
}

/** Steps 1 and 2a of every recipe: checks before anything is read or written, the backend, the tokenizer and the pad id. */
export async function setupRecipe(config: Pick<TrainingOptions, 'batchSize' | 'microBatchSize' | 'workers' | 'forceWorkers' | 'lora' | 'gradientCheckpointing' | 'headChunkTokens'> & { model: string; backend: BackendName }, spec: RecipeSpec): Promise<RecipeSetup> {
  const modelConfig = loadModelConfig(config.model);
  const dims = modelDims(modelConfig);
  if (spec.model === 'causal-lm' && dims.isRewardModel) throw new Error(`${spec.command}: ${config.model} is a reward model; ${spec.method} needs a causal LM`);
  const backend = await initBackend(config.backend);
  checkTrainingFits(
    config,
    spec.rewardHead !== undefined ? { ...dims, isRewardModel: true, rewardHead: spec.rewardHead } : dims,
    { backend: backend.name, length: spec.length, lengthField: spec.lengthField, sequencesPerRow: spec.sequencesPerRow, frozenModels: spec.frozenModels, quantizedParameters: quantizedParameterCount(modelConfig, config.model) },
    `${spec.command} config`,
  );
  if (spec.longerThanContext === 'refuse' && spec.length > dims.maxPositions) {
    throw new Error(`${spec.command}: ${spec.lengthField} ${spec.length} exceeds the model's max_position_embeddings ${dims.maxPositions}; set ${spec.lengthField} to at most ${dims.maxPositions}`);
  }
  const tokenizer = await Tokenizer.fromFolder(config.model);
  return { backend, dims, tokenizer, padId: tokenizer.batchPadId, contextLength: Math.min(spec.length, dims.maxPositions) };
}

/**
 * The eval hold-out when no eval file is given: a seeded shuffle of the rows, the first
 * max(1, round(n · evalFraction)) held out, the rest trained on (both in shuffled order). Nothing
 * is held out when `evalFraction` is 0 or there is a single row, unless `atLeastOne` (pretraining
 * always reports a held-out loss).
 */
export function holdOut<T>(rows: readonly T[], o: { evalFraction: number; seed: number; atLeastOne?: boolean }): { train: T[]; eval: T[] } {
  if (rows.length < 2 || (o.evalFraction <= 0 && o.atLeastOne !== true)) return { train: [...rows], eval: [] };
  const order = rows.map((_, i) => i);
  new Rng(o.seed).shuffle(order);
  const numEval = Math.max(1, Math.round(rows.length * o.evalFraction));
  return { eval: order.slice(0, numEval).map((i) => rows[i]), train: order.slice(numEval).map((i) => rows[i]) };
}

export interface TaskTrainingArgs<B> extends Omit<TrainingLoopArgs<B>, 'engine'> {
  backend: BackendInfo;
  /** The objective, as every replica builds it. */
  task: TaskDescriptor;
  model: LlamaModel;
}

/**
 * Steps 3 and 4: the model set up for training (`configureTrainingModel`: LoRA, gradient
 * checkpointing, chunked head), the step engine for `task` over `model` (this thread, or `options.workers`
 * data-parallel replicas), the training loop (which saves checkpoints, metrics and the final
 * model), and the engine stopped whatever happens. The model's weights stay the caller's.
 */
export async function trainWithTask<B>(args: TaskTrainingArgs<B>): Promise<TrainingResult> {
  const { backend, task, ...loop } = args;
  // LoRA adapters, gradient checkpointing and the chunked head, before the engine copies the model to workers
  configureTrainingModel(args.model, args.options);
  const engine = await createTrainerEngine<B>(args.options, { backend: backend.name, model: args.model, task });
  try {
    return await runTrainingLoop<B>({ ...loop, engine });
  } finally {
    await engine.close();
  }
}
