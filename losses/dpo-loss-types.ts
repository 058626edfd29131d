/**
 * The preference losses of `losses/dpo.ts` by TRL `loss_type` name (plain data, no tfjs, so
 * config schemas and the command line can list them without loading tensors):
 *   `sigmoid` (DPO) · `ipo` (IPO on length-normalised log-probs, as TRL) · `ipo_sum` (IPO on
 *   summed log-probs, Azar et al.'s eq. 17 as written) · `hinge` (SLiC).
 */
export const DPO_LOSS_TYPES = ['sigmoid', 'ipo', 'ipo_sum', 'hinge'] as const;
export type DpoLossType = (typeof DPO_LOSS_TYPES)[number];
