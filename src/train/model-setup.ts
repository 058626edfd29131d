/**
 * How a trainer's options shape the model it trains, applied once before the step engine is made
 * (workers copy these settings from the parent's model):
 *   - `lora`: adapters on a frozen base (src/model/lora.ts), seeded from `seed`;
 *   - `gradientCheckpointing`: decoder layers recomputed in backward;
 *   - `headChunkTokens`: the LM head and cross-entropy over chunks of positions.
 */
import type { LlamaModel } from '../model/llama.js';
import { freezeBaseForLora, LoraAdapters } from '../model/lora.js';
import type { TrainingOptions } from '../config/training.js';

export function configureTrainingModel(model: LlamaModel, o: Pick<TrainingOptions, 'lora' | 'gradientCheckpointing' | 'headChunkTokens' | 'seed'>): LoraAdapters | undefined {
  model.gradientCheckpointing = o.gradientCheckpointing;
  model.headChunkTokens = o.headChunkTokens;
  if (!o.lora) return undefined;
  const adapters = LoraAdapters.create(model, o.lora, o.seed);
  freezeBaseForLora(model);
  return adapters;
}
