/**
 * How good a best-of-K selection is, measured by an independent judge rather than by the reward
 * model that made it. For each prompt j with K samples, reward-model rewards r_j and judge scores
 * s_j, and the selected sample b_j = argmax r_j:
 *
 *   rm gain     = mean_j (r_j[b_j] − mean r_j)      what the RM thinks it bought (its own units)
 *   judge gain  = mean_j (s_j[b_j] − mean s_j)      what it bought in judged quality
 *   spearman    = mean_j ρ(r_j, s_j)                 within-prompt rank agreement of RM and judge
 *                                                    (prompts whose judge or RM scores are all
 *                                                    equal carry no ranking and are left out)
 *
 * A positive RM gain with a non-positive judge gain is the signature of reward hacking: the
 * selection climbs the RM's score while judged quality does not follow (Gao et al. 2023,
 * "Scaling laws for reward model overoptimization").
 */
import { bootstrapMeanInterval, mean, spearman, type Interval } from './statistics.js';

export interface SelectionQualityInput {
  /** Per prompt, the RM reward of each sample: [P][K]. */
  rewards: readonly (readonly number[])[];
  /** Per prompt, the judge score of each sample: [P][K]. */
  judgeScores: readonly (readonly number[])[];
  /** Per prompt, the index of the selected sample. */
  selected: readonly number[];
}

export interface SelectionQuality {
  numPrompts: number;
  rmMean: number;
  rmBest: number;
  rmGain: number;
  judgeMean: number;
  judgeBest: number;
  /** judgeBest − judgeMean, with a bootstrap 95% interval over prompts. */
  judgeGain: Interval;
  /** Mean within-prompt Spearman ρ between RM rewards and judge scores. */
  spearman: number;
  /** Prompts that entered the Spearman mean (not all-tied on either side). */
  numRankedPrompts: number;
  /** RM gain > 0 while judge gain ≤ 0. */
  rewardHacking: boolean;
}

export function selectionQuality(input: SelectionQualityInput, opts: { seed?: number } = {}): SelectionQuality {
  const { rewards, judgeScores, selected } = input;
  if (rewards.length !== judgeScores.length || rewards.length !== selected.length) {
    throw new Error(`selectionQuality: ${rewards.length} reward rows, ${judgeScores.length} judge rows, ${selected.length} selections`);
  }
  const rmMeans: number[] = [];
  const rmBests: number[] = [];
  const judgeMeans: number[] = [];
  const judgeBests: number[] = [];
  const judgeGains: number[] = [];
  const rhos: number[] = [];
  rewards.forEach((r, j) => {
    const s = judgeScores[j]!;
    const b = selected[j]!;
    if (r.length !== s.length || b < 0 || b >= r.length) throw new Error(`selectionQuality: prompt ${j}: ${r.length} rewards, ${s.length} judge scores, selected ${b}`);
    rmMeans.push(mean(r));
    rmBests.push(r[b]!);
    judgeMeans.push(mean(s));
    judgeBests.push(s[b]!);
    judgeGains.push(s[b]! - mean(s));
    const rho = spearman(r, s);
    if (!Number.isNaN(rho)) rhos.push(rho);
  });
  const rmGain = mean(rmBests) - mean(rmMeans);
  const judgeGain = bootstrapMeanInterval(judgeGains, { seed: opts.seed ?? 0 });
  return {
    numPrompts: rewards.length,
    rmMean: mean(rmMeans),
    rmBest: mean(rmBests),
    rmGain,
    judgeMean: mean(judgeMeans),
    judgeBest: mean(judgeBests),
    judgeGain,
    spearman: mean(rhos),
    numRankedPrompts: rhos.length,
    rewardHacking: rmGain > 0 && judgeGain.estimate <= 0,
  };
}
