/**
 * Direct preference losses over sequence log-probs of the policy πθ and the frozen reference π_ref.
 *
 * Every variant is a function of the log-ratio difference
 *
 *   h = (log πθ(y_w|x) − log π_ref(y_w|x)) − (log πθ(y_l|x) − log π_ref(y_l|x))
 *
 * and reports the implicit rewards r_w = β(log πθ(y_w|x) − log π_ref(y_w|x)), r_l likewise
 * (Rafailov et al. 2023, §5). The log-probs are the masked sums from `sequenceLogps` (Llama 3
 * masks header and end-of-turn tokens out of both; see `formattingTokenMask`). The rewards are
 * for logging; trainers differentiate the per-pair losses only (their mean over the global batch:
 * each micro-batch's sum, divided by the step's pair count — `src/tasks/dpo.ts`).
 *
 * Each variant is its own function; `DPO_LOSSES` maps the TRL `loss_type` names to them so a
 * trainer picks one by name without branching on it.
 */
import * as tf from '@tensorflow/tfjs';
import { DPO_LOSS_TYPES, type DpoLossType } from './dpo-loss-types.js';

export { DPO_LOSS_TYPES, type DpoLossType };

/** Sequence log-probs of a batch of pairs, each [B]. */
export interface PreferenceLogps {
  policyChosenLogps: tf.Tensor1D;
  policyRejectedLogps: tf.Tensor1D;
  refChosenLogps: tf.Tensor1D;
  refRejectedLogps: tf.Tensor1D;
  /**
   * [B] how many tokens each chosen sequence log-prob sums over (the same mask for policy and
   * reference). Needed by the length-normalised `ipo` loss only.
   */
  chosenNumTokens?: tf.Tensor1D;
  /** [B] the same for the rejected sequences. */
  rejectedNumTokens?: tf.Tensor1D;
}

export interface PreferenceLossOptions {
  /** β > 0: the KL strength (DPO, hinge) or the regularisation τ (IPO). Llama 3 uses 0.1. */
  beta: number;
  /** ε in [0, 0.5): the assumed rate of flipped labels (cDPO). Sigmoid loss only; 0 when omitted. */
  labelSmoothing?: number;
}

export interface PreferenceLossResult {
  /** [B] per-pair loss; the training loss is its mean. */
  losses: tf.Tensor1D;
  /** [B] β(log πθ(y_w|x) − log π_ref(y_w|x)). */
  chosenRewards: tf.Tensor1D;
  /** [B] β(log πθ(y_l|x) − log π_ref(y_l|x)). */
  rejectedRewards: tf.Tensor1D;
}

export interface PreferenceLoss {
  name: DpoLossType;
  /** Needs reference log-probs (all DPO variants do). */
  needsReference: true;
  compute(inputs: PreferenceLogps, opts: PreferenceLossOptions): PreferenceLossResult;
}

/**
 * DPO (Rafailov et al. 2023, "Direct Preference Optimization", eq. 7), with conservative label
 * smoothing ε (cDPO, Mitchell 2023):
 *
 *   L = −(1 − ε) log σ(βh) − ε log σ(−βh) = (1 − ε) softplus(−βh) + ε softplus(βh)
 *
 * When the policy equals the reference, h = 0 and L = ln 2 for every ε.
 */
export function dpoSigmoidLoss(inputs: PreferenceLogps, opts: PreferenceLossOptions): PreferenceLossResult {
  const beta = checkedBeta(opts);
  const smoothing = opts.labelSmoothing ?? 0;
  if (!(smoothing >= 0 && smoothing < 0.5)) throw new Error(`losses/dpo.ts: labelSmoothing = ${smoothing}; expected a number in [0, 0.5)`);
  return withLogRatios(inputs, beta, (h) => {
    const scaled = tf.mul(beta, h); // [B]
    const agree = tf.softplus(tf.neg(scaled)); // [B] −log σ(βh)
    if (smoothing === 0) return agree;
    const disagree = tf.softplus(scaled); // [B] −log σ(−βh)
    return tf.add(tf.mul(1 - smoothing, agree), tf.mul(smoothing, disagree));
  });
}

/**
 * IPO as TRL computes it (`loss_type="ipo"`): Azar et al. 2023 ("A General Theoretical Paradigm
 * to Understand Learning from Human Preferences", eq. 17), L = (h̄ − 1/(2β))², on
 * length-normalised log-probs — every sequence log-prob (policy and reference) is divided by the
 * number of tokens it sums over (`chosenNumTokens`, `rejectedNumTokens`) before the log-ratios:
 *
 *   h̄ = (log πθ(y_w|x) − log π_ref(y_w|x)) / |y_w| − (log πθ(y_l|x) − log π_ref(y_l|x)) / |y_l|
 *
 * The IPO authors confirmed this per-token average is what their experiments used; it keeps h̄,
 * and so a good β, independent of response length. The implicit rewards are β times the
 * normalised log-ratios, as in TRL. A sequence with no tokens counts as one (its sum is 0).
 */
export function dpoIpoLoss(inputs: PreferenceLogps, opts: PreferenceLossOptions): PreferenceLossResult {
  const beta = checkedBeta(opts);
  rejectSmoothing('ipo', opts);
  const { chosenNumTokens, rejectedNumTokens } = inputs;
  if (!chosenNumTokens || !rejectedNumTokens) throw new Error('losses/dpo.ts: the ipo loss needs chosenNumTokens and rejectedNumTokens (use ipo_sum for summed log-probs)');
  assertPairShapes(inputs);
  return tf.tidy(() => {
    const perChosen = tf.maximum(chosenNumTokens, 1); // [B]
    const perRejected = tf.maximum(rejectedNumTokens, 1); // [B]
    const normalised: PreferenceLogps = {
      policyChosenLogps: tf.div(inputs.policyChosenLogps, perChosen), // [B]
      refChosenLogps: tf.div(inputs.refChosenLogps, perChosen), // [B]
      policyRejectedLogps: tf.div(inputs.policyRejectedLogps, perRejected), // [B]
      refRejectedLogps: tf.div(inputs.refRejectedLogps, perRejected), // [B]
    };
    const { losses, chosenRewards, rejectedRewards } = withLogRatios(normalised, beta, (h) => tf.square(tf.sub(h, 1 / (2 * beta))));
    return { losses, chosenRewards, rejectedRewards };
  });
}

/**
 * IPO on summed sequence log-probs (`loss_type: ipo_sum`): Azar et al. 2023, eq. 17 as written,
 * L = (h − 1/(2β))² with h the log-ratio difference of the sums. Departs from TRL's `ipo`: h (and
 * a good β) grow with response length. tfalign's `ipo` before it followed TRL.
 */
export function dpoIpoSumLoss(inputs: PreferenceLogps, opts: PreferenceLossOptions): PreferenceLossResult {
  const beta = checkedBeta(opts);
  rejectSmoothing('ipo_sum', opts);
  return withLogRatios(inputs, beta, (h) => tf.square(tf.sub(h, 1 / (2 * beta))));
}

/**
 * Hinge loss of SLiC (Zhao et al. 2023, "SLiC-HF: Sequence Likelihood Calibration with Human
 * Feedback"), on the reference-normalised log-ratio as in TRL: L = max(0, 1 − βh)
 * = β · max(0, 1/β − h), so SLiC's margin δ is 1/β here.
 */
export function dpoHingeLoss(inputs: PreferenceLogps, opts: PreferenceLossOptions): PreferenceLossResult {
  const beta = checkedBeta(opts);
  rejectSmoothing('hinge', opts);
  return withLogRatios(inputs, beta, (h) => tf.relu(tf.sub(1, tf.mul(beta, h))));
}

/** The preference losses by TRL `loss_type` name. */
export const DPO_LOSSES: Readonly<Record<DpoLossType, PreferenceLoss>> = Object.freeze({
  sigmoid: { name: 'sigmoid', needsReference: true, compute: dpoSigmoidLoss },
  ipo: { name: 'ipo', needsReference: true, compute: dpoIpoLoss },
  ipo_sum: { name: 'ipo_sum', needsReference: true, compute: dpoIpoSumLoss },
  hinge: { name: 'hinge', needsReference: true, compute: dpoHingeLoss },
});

/** The DPO metrics under TRL's names, as batch means. */
export interface DpoMetrics {
  'rewards/chosen': number;
  'rewards/rejected': number;
  /** Fraction of pairs with r_w > r_l (ties count as wrong). */
  'rewards/accuracies': number;
  'rewards/margins': number;
  'logps/chosen': number;
  'logps/rejected': number;
  /** Present when an NLL term was passed (RPO / Llama 3). */
  nll_loss?: number;
}

/** Reads the DPO metrics to numbers for logging (one download). */
export function dpoMetrics(
  inputs: Pick<PreferenceLogps, 'policyChosenLogps' | 'policyRejectedLogps'>,
  result: Pick<PreferenceLossResult, 'chosenRewards' | 'rejectedRewards'>,
  nllLoss?: tf.Scalar,
): DpoMetrics {
  const values = tf.tidy(() => {
    const { chosenRewards, rejectedRewards } = result;
    const means = [
      tf.mean(chosenRewards),
      tf.mean(rejectedRewards),
      tf.mean(tf.cast(tf.greater(chosenRewards, rejectedRewards), 'float32')),
      tf.mean(tf.sub(chosenRewards, rejectedRewards)),
      tf.mean(inputs.policyChosenLogps),
      tf.mean(inputs.policyRejectedLogps),
    ];
    if (nllLoss) means.push(nllLoss);
    return tf.stack(means).dataSync(); // [6] or [7]
  });
  const metrics: DpoMetrics = {
    'rewards/chosen': values[0],
    'rewards/rejected': values[1],
    'rewards/accuracies': values[2],
    'rewards/margins': values[3],
    'logps/chosen': values[4],
    'logps/rejected': values[5],
  };
  if (nllLoss) metrics.nll_loss = values[6];
  return metrics;
}

/** Computes the log-ratios once, the per-pair loss from h, and the implicit rewards, in one tidy. */
function withLogRatios(inputs: PreferenceLogps, beta: number, lossOfH: (h: tf.Tensor) => tf.Tensor): PreferenceLossResult {
  assertPairShapes(inputs);
  return tf.tidy(() => {
    const chosenLogRatio = tf.sub(inputs.policyChosenLogps, inputs.refChosenLogps); // [B]
    const rejectedLogRatio = tf.sub(inputs.policyRejectedLogps, inputs.refRejectedLogps); // [B]
    const h = tf.sub(chosenLogRatio, rejectedLogRatio); // [B]
    return {
      losses: lossOfH(h) as tf.Tensor1D,
      chosenRewards: tf.mul(beta, chosenLogRatio) as tf.Tensor1D,
      rejectedRewards: tf.mul(beta, rejectedLogRatio) as tf.Tensor1D,
    };
  });
}

function assertPairShapes(inputs: PreferenceLogps): void {
  const expected = inputs.policyChosenLogps.shape;
  for (const [name, t] of Object.entries(inputs) as [keyof PreferenceLogps, tf.Tensor][]) {
    if (t.rank !== 1 || t.shape[0] !== expected[0]) {
      throw new Error(`losses/dpo.ts: ${name} shape [${t.shape}] does not match policyChosenLogps [${expected}]`);
    }
  }
}

function checkedBeta(opts: PreferenceLossOptions): number {
  if (!(opts.beta > 0) || !Number.isFinite(opts.beta)) throw new Error(`losses/dpo.ts: beta = ${opts.beta}; expected a finite number > 0`);
  return opts.beta;
}

function rejectSmoothing(name: PreferenceLoss['name'], opts: PreferenceLossOptions): void {
  if ((opts.labelSmoothing ?? 0) !== 0) {
    throw new Error(`losses/dpo.ts: labelSmoothing = ${opts.labelSmoothing} is defined for the sigmoid loss only, not ${name}`);
  }
}
