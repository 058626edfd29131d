/**
 * Losses of the Llama 3 post-training recipe: pure functions over tensors (only tfjs imported).
 * Pair losses return per-example losses, token losses a batch mean; each also gives what trainers log.
 */
export { tokenLogprobs, sequenceLogps, maskedMean, tokenNllSum } from './logprobs.js';
export { formattingTokenMask } from './masks.js';
export { sftLoss } from './sft.js';
export type { SftLossResult } from './sft.js';
export {
  bradleyTerryLoss,
  rankingLoss,
  rewardMetrics,
  strengthMargins,
  PREFERENCE_STRENGTHS,
  STRENGTH_MARGINS,
} from './reward.js';
export type { BradleyTerryInputs, PreferenceStrength, RankingLossResult, RewardLossOptions, RewardLossResult } from './reward.js';
export { dpoSigmoidLoss, dpoIpoLoss, dpoIpoSumLoss, dpoHingeLoss, dpoMetrics, DPO_LOSSES, DPO_LOSS_TYPES, type DpoLossType } from './dpo.js';
export type { DpoMetrics, PreferenceLogps, PreferenceLoss, PreferenceLossOptions, PreferenceLossResult } from './dpo.js';
export { chosenNllLoss, preferenceWithNllLoss } from './nll.js';
