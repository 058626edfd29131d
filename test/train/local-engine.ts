/** A `LocalStepEngine` over `model` with a training config's AdamW and clipping (what `createStepEngine` builds for one replica from a task). */
import type { LlamaModel } from '../../src/model/llama.js';
import type { TrainingOptions } from '../../src/config/training.js';
import { AdamW } from '../../src/train/adamw.js';
import { LocalStepEngine, type Objective } from '../../src/train/step-engine.js';

export function localEngine<B>(model: LlamaModel, objective: Objective<B>, o: TrainingOptions): LocalStepEngine<B> {
  return new LocalStepEngine<B>(model.params, objective, new AdamW({ lr: o.lr, beta1: o.adamBeta1, beta2: o.adamBeta2, eps: o.adamEps, weightDecay: o.weightDecay }), { maxGradNorm: o.maxGradNorm });
}
