/**
 * Numeric limits: the one layer between a config's sizes, counts and steps and the allocations
 * they cause, so that a typo (`batchSize: 1000000000`, `rounds: 1e9`, `workers: 64` on two cores)
 * is a one-line error naming the field, never a V8 abort or a machine swapping to death.
 *
 * 1. Static bounds, in the schemas: every size, count and step field is built here (`limit.rows()`,
 *    `limit.tokens()`, …), with a ceiling far above any run this toolkit can do and far below what
 *    makes V8 give up (an array of 10⁹ batch indices, a loop over 10⁹ rounds).
 * 2. Machine bounds, once the model's config.json is read and before any data, weights or output
 *    is touched (`checkTrainingFits`, `src/train/fits.ts`): `workers` against the cores (each worker is a full replica
 *    of the model; past one per core it only costs memory), and the peak memory of one training
 *    step — weights, gradients and AdamW moments per replica, plus the activations of one
 *    micro-batch (rows × length × (2·vocab + layers × (10·hidden + 4·intermediate + heads·length)))
 *    — against what the backend can hold: 4 GiB of wasm heap per replica on wasm, the machine's
 *    memory otherwise. The estimate is meant to catch orders of magnitude, not the last 10%.
 */
import * as os from 'node:os';
import { z } from 'zod';

/** Rows (sequences, pairs, prompts) in one optimizer step or one forward pass. */
export const MAX_ROWS_PER_BATCH = 1 << 20;
/** Tokens in one sequence (prompt, response, packed row, generation). Llama 3.1's context is 131,072. */
export const MAX_TOKENS_PER_SEQUENCE = 1 << 20;
/** Optimizer steps, and step intervals (logging, evaluation, checkpoints). */
export const MAX_STEPS = 1_000_000_000;
/** Passes over a data set. */
export const MAX_EPOCHS = 10_000;
/** Rounds of an iterative run (Llama 3 ran six; each round is hours of work). */
export const MAX_ROUNDS = 1000;
/** Samples of one prompt (Llama 3 rejection-samples 10–30). */
export const MAX_SAMPLES_PER_PROMPT = 4096;
/** Prompts or documents drawn or generated per round / per corpus. */
export const MAX_ITEMS = 1 << 24;
/** Token ids of a vocabulary (Llama 3: 128,256). */
export const MAX_VOCAB_SIZE = 1 << 20;
/** Data-parallel workers (each a thread holding a model replica). */
export const MAX_WORKERS = 1024;
/** Bytes of wasm heap one tfjs-backend-wasm instance can grow to (its getHeapMax). */
export const WASM_HEAP_BYTES = 4294901760;

const atMost = (max: number, what: string) => ({ message: `must be at most ${max.toLocaleString('en-US')} (${what})` });

/** Schema builders for bounded numeric fields; chain `.default()` and `.describe()` as usual. */
export const limit = {
  /** Rows per batch or forward pass: an integer in [1, MAX_ROWS_PER_BATCH]. */
  rows: () => z.number().int().positive().max(MAX_ROWS_PER_BATCH, atMost(MAX_ROWS_PER_BATCH, 'rows in one batch')),
  /** Tokens per sequence: an integer in [min, MAX_TOKENS_PER_SEQUENCE]. */
  tokens: (min = 1) => z.number().int().min(min).max(MAX_TOKENS_PER_SEQUENCE, atMost(MAX_TOKENS_PER_SEQUENCE, 'tokens in one sequence')),
  /** Optimizer steps: an integer in [1, MAX_STEPS]. */
  steps: () => z.number().int().positive().max(MAX_STEPS, atMost(MAX_STEPS, 'optimizer steps')),
  /** A step interval where 0 means off: an integer in [0, MAX_STEPS]. */
  interval: () => z.number().int().min(0).max(MAX_STEPS, atMost(MAX_STEPS, 'optimizer steps')),
  /** Epochs: a number in (0, MAX_EPOCHS]. */
  epochs: () => z.number().positive().max(MAX_EPOCHS, atMost(MAX_EPOCHS, 'passes over the data')),
  /** Rounds of a run: an integer in [1, MAX_ROUNDS]. */
  rounds: () => z.number().int().positive().max(MAX_ROUNDS, atMost(MAX_ROUNDS, 'rounds of a run')),
  /** Samples per prompt: an integer in [1, MAX_SAMPLES_PER_PROMPT]. */
  samples: () => z.number().int().positive().max(MAX_SAMPLES_PER_PROMPT, atMost(MAX_SAMPLES_PER_PROMPT, 'samples of one prompt')),
  /** Prompts or documents: an integer in [1, MAX_ITEMS]. */
  items: () => z.number().int().positive().max(MAX_ITEMS, atMost(MAX_ITEMS, 'items per round or corpus')),
  /** Data-parallel workers: an integer in [1, MAX_WORKERS] (and at most the cores: `checkWorkers`). */
  workers: () => z.number().int().positive().max(MAX_WORKERS, atMost(MAX_WORKERS, 'worker threads')),
  /** A seed: an integer in [0, 2^53 − 1] (larger numbers lose their low bits). */
  seed: () => z.number().int().nonnegative().max(Number.MAX_SAFE_INTEGER, atMost(Number.MAX_SAFE_INTEGER, 'exact integers')),
  /** A vocabulary size: an integer in [min, MAX_VOCAB_SIZE]. */
  vocab: (min = 1) => z.number().int().min(min).max(MAX_VOCAB_SIZE, atMost(MAX_VOCAB_SIZE, 'token ids')),
} as const;

/** Cores this process may use (`os.availableParallelism`). */
export function numCores(): number {
  return os.availableParallelism();
}

/** `1.5 GiB`, `12 MiB`, `7.6 PiB`. */
export function formatBytes(bytes: number): string {
  const units = ['bytes', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB', 'EiB'];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return unit === 0 ? `${Math.round(value)} bytes` : `${value.toFixed(value >= 100 ? 0 : 1)} ${units[unit]}`;
}

/**
 * Refuses more data-parallel workers than cores unless `force`: `FIELD: 64 is more than the 2
 * cores of this machine …`. `flag` names how the user sets the override.
 */
export function checkWorkers(workers: number | undefined, force: boolean, source: string, names: { field?: string; forceFlag?: string } = {}): void {
  const cores = numCores();
  if (workers === undefined || force || workers <= cores) return;
  const field = names.field ?? 'workers';
  const forceFlag = names.forceFlag ?? 'forceWorkers: true (--force-workers)';
  throw new Error(
    `${source}: ${field}: ${workers} is more than the ${cores} cores of this machine (each worker holds a full copy of the model and computes on one core); ` +
      `use at most ${cores}, or set ${forceFlag} to run them anyway`,
  );
}
