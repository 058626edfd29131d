/**
 * Learning-rate schedules: linear warmup, then cosine, linear or no decay.
 *
 * The shape follows Hugging Face `get_cosine_schedule_with_warmup` /
 * `get_linear_schedule_with_warmup` and nanoGPT's `get_lr`, with a floor `minLr = lr · minLrRatio`
 * (Llama 3 pre-training decays to 1/100 of the peak; SFT/DPO recipes commonly decay to 0).
 *
 * One departure from Hugging Face: warmup gives step s the rate lr · (s + 1) / warmupSteps, not
 * lr · s / warmupSteps, so the first optimizer step is not a no-op and step warmupSteps − 1 already
 * runs at the peak rate.
 */

export type LrDecay = 'cosine' | 'linear' | 'constant';

export interface LrScheduleOptions {
  /** Peak learning rate, reached at the end of warmup. */
  lr: number;
  /** Number of warmup steps (0 = start at the peak). */
  warmupSteps: number;
  /** Step at which the decay reaches `minLr`; steps at or past it use `minLr`. Ignored by `constant`. */
  totalSteps: number;
  /** Shape of the decay after warmup. */
  decay: LrDecay;
  /** Floor as a fraction of `lr`, in [0, 1]; default 0 (decay to zero). */
  minLrRatio?: number;
}

/** Checks the options once per call; errors name the field. Cheap next to an optimizer step. */
function validate(step: number, opts: LrScheduleOptions): void {
  if (!Number.isInteger(step) || step < 0) throw new Error(`schedule: step must be a non-negative integer, got ${step}`);
  if (!(opts.lr >= 0) || !Number.isFinite(opts.lr)) throw new Error(`schedule: field 'lr' must be a finite number ≥ 0, got ${opts.lr}`);
  if (!Number.isInteger(opts.warmupSteps) || opts.warmupSteps < 0) {
    throw new Error(`schedule: field 'warmupSteps' must be a non-negative integer, got ${opts.warmupSteps}`);
  }
  if (!Number.isInteger(opts.totalSteps) || opts.totalSteps < 0) {
    throw new Error(`schedule: field 'totalSteps' must be a non-negative integer, got ${opts.totalSteps}`);
  }
  if (opts.decay !== 'constant' && opts.totalSteps < opts.warmupSteps) {
    throw new Error(`schedule: field 'totalSteps' (${opts.totalSteps}) must be ≥ 'warmupSteps' (${opts.warmupSteps})`);
  }
  const ratio = opts.minLrRatio ?? 0;
  if (!(ratio >= 0 && ratio <= 1)) throw new Error(`schedule: field 'minLrRatio' must be in [0, 1], got ${ratio}`);
  if (opts.decay !== 'cosine' && opts.decay !== 'linear' && opts.decay !== 'constant') {
    throw new Error(`schedule: field 'decay' must be 'cosine', 'linear' or 'constant', got '${String(opts.decay)}'`);
  }
}

/** The learning rate for optimizer step `step` (0-based: the first update is step 0). */
export function learningRateAt(step: number, opts: LrScheduleOptions): number {
  validate(step, opts);
  const { lr, warmupSteps, totalSteps, decay } = opts;
  const minLr = lr * (opts.minLrRatio ?? 0);
  // 1) linear warmup: lr/warmup, 2·lr/warmup, …, lr at step warmup − 1
  if (step < warmupSteps) return (lr * (step + 1)) / warmupSteps;
  // 2) no decay: hold the peak
  if (decay === 'constant') return lr;
  // 3) at or past totalSteps: hold the floor
  if (step >= totalSteps) return minLr;
  // 4) in between: progress goes 0 → 1 from the end of warmup to totalSteps
  const progress = (step - warmupSteps) / (totalSteps - warmupSteps);
  const coeff = decay === 'cosine' ? 0.5 * (1 + Math.cos(Math.PI * progress)) : 1 - progress; // 1 → 0
  return minLr + coeff * (lr - minLr);
}
