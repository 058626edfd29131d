/**
 * The stages of an alignment round, in the order a round runs them (Llama 3, arXiv 2407.21783 §4):
 *
 *   collect_preferences → train_reward_model → rejection_sample → sft → dpo → evaluate
 *
 * `curate` (filtering the rejection-sampled data before SFT, §4.2.3) is a known stage that a round
 * runs only when the config asks for it; `roundStages` inserts it. Adding a stage means adding its
 * name to `STAGE_NAMES` (and, for the default order, to `ROUND_STAGES`): every name the store
 * accepts is checked against that list, so a typo (`stf`) fails at once instead of creating a
 * stage that never completes.
 */

/** The stages every round runs, in order. */
export const ROUND_STAGES = ['collect_preferences', 'train_reward_model', 'rejection_sample', 'sft', 'dpo', 'evaluate'] as const;

/** Stages of round 0, before the rounds: building a base model from scratch (quickstart). */
export const BASE_STAGES = ['build_base'] as const;

/** Stages a round runs only when its config asks (see `roundStages`). */
export const OPTIONAL_STAGES = ['curate'] as const;

/** Every stage name the store accepts: the round's stages, the optional ones, and round 0's. */
export const STAGE_NAMES = [...ROUND_STAGES, ...OPTIONAL_STAGES, ...BASE_STAGES] as const;
export type StageName = (typeof STAGE_NAMES)[number];

/** A stage of a round (1…N), the default ones and the optional ones; not round 0's. */
export type RoundStageName = (typeof ROUND_STAGES)[number] | (typeof OPTIONAL_STAGES)[number];

/** A stage of round 0 (before the rounds). */
export type BaseStageName = (typeof BASE_STAGES)[number];

/** Where the optional stages go in a round: each runs right after the named stage. */
const OPTIONAL_STAGE_AFTER: Readonly<Record<(typeof OPTIONAL_STAGES)[number], RoundStageName>> = {
  curate: 'rejection_sample',
};

export function isStageName(name: string): name is StageName {
  return (STAGE_NAMES as readonly string[]).includes(name);
}

/** The name as a `StageName`, or a one-line error listing the valid names (for `--stage NAME`). */
export function parseStageName(name: string, where = 'stage'): StageName {
  if (!isStageName(name)) throw new Error(`${where}: unknown stage "${name}"; expected one of ${STAGE_NAMES.join(', ')}`);
  return name;
}

/** The stage order of a round: `ROUND_STAGES`, with `curate` after `rejection_sample` when asked. */
export function roundStages(options: { curate?: boolean } = {}): RoundStageName[] {
  const order: RoundStageName[] = [...ROUND_STAGES];
  if (options.curate === true) order.splice(order.indexOf(OPTIONAL_STAGE_AFTER.curate) + 1, 0, 'curate');
  return order;
}

/**
 * Checks a stage order given from outside (config, API): known names, no repeats, not empty.
 * Returns it typed.
 */
export function validateStageOrder(names: readonly string[], where = 'stages'): StageName[] {
  if (names.length === 0) throw new Error(`${where}: the stage list is empty`);
  const seen = new Set<string>();
  return names.map((name, i) => {
    if (seen.has(name)) throw new Error(`${where}.${i}: stage "${name}" is listed twice`);
    seen.add(name);
    return parseStageName(name, `${where}.${i}`);
  });
}

/** Position of a stage in `STAGE_NAMES` order with `curate` in its round place, for sorting listings. */
export function stageRank(name: StageName): number {
  const order: readonly StageName[] = roundStages({ curate: true });
  return order.indexOf(name);
}
