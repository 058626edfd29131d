/**
 * Reward-model losses: Bradley–Terry on pairs, and its average over every pair of a ranking.
 *
 * Bradley–Terry (Ouyang et al. 2022, "Training language models to follow instructions with human
 * feedback", eq. 1), with the Llama 2 margin (Touvron et al. 2023, "Llama 2", eq. 2):
 *
 *   L_BT = −log σ(r_c − r_r − m) = softplus(−(r_c − r_r − m))
 *
 * softplus(−x) = log(1 + e^(−x)) is the stable form of −log σ(x): it neither overflows for very
 * negative x nor rounds to log(1) = 0 too early for large x. Llama 3 (arXiv 2407.21783 §4.1.2)
 * removed the margin term, having seen diminishing improvements from it after data scaling, so
 * margins are optional and absent by default.
 *
 * Reward centering (Eisenstein et al. 2023, "Helping or Herding? Reward Model Ensembles Mitigate
 * but do not Eliminate Reward Hacking"; TRL's `center_rewards_coefficient`) adds
 * c · (r_c + r_r)² per pair, pushing the rewards of each pair to sum to zero so that scores are
 * comparable across prompts. TRL adds c · mean((r_c + r_r)²) to the mean loss; adding it to each
 * per-example loss gives the same mean.
 */
import * as tf from '@tensorflow/tfjs';
import { PREFERENCE_STRENGTHS, type PreferenceStrength } from './preference-strengths.js';

export { PREFERENCE_STRENGTHS, type PreferenceStrength };

/**
 * Llama 2's discrete margins m(r) for the Bradley–Terry loss, the "margin small" variant
 * (Touvron et al. 2023, Table 27: 1, 2/3, 1/3, 0; "margin large" is the same scaled by 3).
 * Llama 2 names the weakest level "negligibly better / unsure"; Llama 3 calls it "marginally
 * better". Pass another table to `strengthMargins` to change them. Llama 3 uses no margin.
 */
export const STRENGTH_MARGINS: Readonly<Record<PreferenceStrength, number>> = Object.freeze({
  significantly_better: 1,
  better: 2 / 3,
  slightly_better: 1 / 3,
  marginally_better: 0,
});

/** The margins for a batch of pairs labelled with strengths: [B] float32. */
export function strengthMargins(
  strengths: readonly PreferenceStrength[],
  table: Readonly<Record<PreferenceStrength, number>> = STRENGTH_MARGINS,
): tf.Tensor1D {
  return tf.tensor1d(strengths.map((s, i) => {
    const margin = table[s];
    if (margin === undefined) throw new Error(`losses/reward.ts: strengths[${i}] = '${s}' is not one of ${PREFERENCE_STRENGTHS.join(', ')}`);
    return margin;
  }), 'float32');
}

export interface BradleyTerryInputs {
  /** [B] reward of the preferred response. */
  chosenRewards: tf.Tensor1D;
  /** [B] reward of the other response. */
  rejectedRewards: tf.Tensor1D;
  /** [B] Llama 2 margins m (e.g. from `strengthMargins`); omitted means m = 0 (Llama 3). */
  margins?: tf.Tensor1D;
}

export interface RewardLossOptions {
  /** c ≥ 0 in c · (r_c + r_r)²; 0 or omitted disables reward centering. TRL suggests 0.01. */
  centeringCoefficient?: number;
}

export interface RewardLossResult {
  /** [B] per-example loss (Bradley–Terry plus the centering term, if any). */
  losses: tf.Tensor1D;
  /** Fraction of pairs with r_c > r_r (ties count as wrong), logged as `accuracy`. */
  accuracy: tf.Scalar;
  /** Mean of r_c − r_r (without the margin), logged as `margin`. */
  margin: tf.Scalar;
}

/** L = softplus(−(r_c − r_r − m)) + c · (r_c + r_r)², per pair. */
export function bradleyTerryLoss(inputs: BradleyTerryInputs, opts: RewardLossOptions = {}): RewardLossResult {
  const { chosenRewards, rejectedRewards, margins } = inputs;
  const numPairs = chosenRewards.shape[0];
  for (const [name, t] of [['rejectedRewards', rejectedRewards], ['margins', margins]] as const) {
    if (t && (t.rank !== 1 || t.shape[0] !== numPairs)) {
      throw new Error(`losses/reward.ts: ${name} shape [${t.shape}] does not match chosenRewards [${chosenRewards.shape}]`);
    }
  }
  const centering = checkedCentering(opts);
  return tf.tidy(() => {
    const rewardGap = tf.sub(chosenRewards, rejectedRewards); // [B]
    const logit = margins ? tf.sub(rewardGap, margins) : rewardGap; // [B]
    let losses = tf.softplus(tf.neg(logit)); // [B]
    if (centering > 0) losses = tf.add(losses, tf.mul(centering, tf.square(tf.add(chosenRewards, rejectedRewards))));
    const accuracy = tf.mean(tf.cast(tf.greater(rewardGap, 0), 'float32')) as tf.Scalar;
    const margin = tf.mean(rewardGap) as tf.Scalar;
    return { losses: losses as tf.Tensor1D, accuracy, margin };
  });
}

export interface RankingLossResult extends RewardLossResult {
  /** Number of valid ordered pairs in the batch (the denominator of `accuracy` and `margin`). */
  numPairs: number;
}

/**
 * Bradley–Terry over a ranking of R responses per prompt, best first (Llama 3: edited > chosen >
 * rejected). Every pair (i, j) with i < j whose two responses are both valid is one comparison
 * "i beats j"; a row's loss is the mean over its valid pairs, as in Ouyang et al. 2022 (eq. 1:
 * the C(K, 2) comparisons of a prompt are one batch element, weighted 1/C(K, 2)). A row with only
 * chosen and rejected valid has 1 pair and equals `bradleyTerryLoss`; with edited too, 3 pairs.
 * Centering, if on, applies per pair: c · (r_i + r_j)². No margin: strengths label pairs, not
 * rankings, and Llama 3 dropped it.
 *
 * @param rewards [B, R] scores, column 0 the best; a missing response's score may be any finite value.
 * @param validMask [B, R] float32, 1 where the response exists; each row needs at least 2. It is
 *   read on the host to check that (small: [B, R]).
 */
export function rankingLoss(rewards: tf.Tensor2D, validMask: tf.Tensor2D, opts: RewardLossOptions = {}): RankingLossResult {
  const [numRows, numRanks] = rewards.shape;
  if (validMask.shape[0] !== numRows || validMask.shape[1] !== numRanks) {
    throw new Error(`losses/reward.ts: validMask shape [${validMask.shape}] does not match rewards [${rewards.shape}]`);
  }
  const centering = checkedCentering(opts);
  const maskValues = validMask.dataSync();
  for (let b = 0; b < numRows; b++) {
    let numValid = 0;
    for (let r = 0; r < numRanks; r++) if (maskValues[b * numRanks + r] !== 0) numValid++;
    if (numValid < 2) throw new Error(`losses/reward.ts: validMask row ${b} has ${numValid} valid responses; a ranking needs at least 2`);
  }
  const betterIndex: number[] = [];
  const worseIndex: number[] = [];
  for (let i = 0; i < numRanks; i++) {
    for (let j = i + 1; j < numRanks; j++) {
      betterIndex.push(i);
      worseIndex.push(j);
    }
  }
  let numPairs = 0;
  for (let b = 0; b < numRows; b++) {
    for (let p = 0; p < betterIndex.length; p++) {
      if (maskValues[b * numRanks + betterIndex[p]] !== 0 && maskValues[b * numRanks + worseIndex[p]] !== 0) numPairs++;
    }
  }
  const result = tf.tidy(() => {
    const better = tf.tensor1d(betterIndex, 'int32'); // [P], P = R(R−1)/2
    const worse = tf.tensor1d(worseIndex, 'int32'); // [P]
    const betterRewards = tf.gather(rewards, better, 1); // [B, P]
    const worseRewards = tf.gather(rewards, worse, 1); // [B, P]
    const pairMask = tf.mul(tf.gather(validMask, better, 1), tf.gather(validMask, worse, 1)); // [B, P]
    const rewardGap = tf.sub(betterRewards, worseRewards); // [B, P]
    let pairLosses = tf.softplus(tf.neg(rewardGap)); // [B, P]
    if (centering > 0) pairLosses = tf.add(pairLosses, tf.mul(centering, tf.square(tf.add(betterRewards, worseRewards))));
    const pairsPerRow = tf.sum(pairMask, 1); // [B], ≥ 1 by the check above
    const losses = tf.div(tf.sum(tf.mul(pairLosses, pairMask), 1), pairsPerRow) as tf.Tensor1D; // [B]
    const correct = tf.cast(tf.greater(rewardGap, 0), 'float32'); // [B, P]
    const accuracy = tf.div(tf.sum(tf.mul(correct, pairMask)), numPairs) as tf.Scalar;
    const margin = tf.div(tf.sum(tf.mul(rewardGap, pairMask)), numPairs) as tf.Scalar;
    return { losses, accuracy, margin };
  });
  return { ...result, numPairs };
}

/** Reads `accuracy` and `margin` to numbers for logging (one download). */
export function rewardMetrics(result: RewardLossResult): { accuracy: number; margin: number } {
  const values = tf.tidy(() => tf.stack([result.accuracy, result.margin]).dataSync());
  return { accuracy: values[0], margin: values[1] };
}

function checkedCentering(opts: RewardLossOptions): number {
  const c = opts.centeringCoefficient ?? 0;
  if (!(c >= 0) || !Number.isFinite(c)) throw new Error(`losses/reward.ts: centeringCoefficient = ${c}; expected a finite number ≥ 0`);
  return c;
}
