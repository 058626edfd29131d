/**
 * Options and helpers every command shares: the backend flag, number parsing with one-line
 * errors (bounded by the limits of `config/limits.ts`), the output-folder and worker overrides,
 * and a progress reporter (a bar on a TTY, one plain line per update otherwise).
 */
import { Option, type Command } from 'commander';
import * as fs from 'node:fs';
import { BACKEND_NAMES, type BackendName } from '../util/backend-names.js';
import { RunStore, defaultStorePath } from '../store/store.js';
import { readRunLock } from '../store/lock.js';
import { checkWorkers, MAX_TOKENS_PER_SEQUENCE, MAX_WORKERS } from '../config/limits.js';

export function backendOption(): Option {
  return new Option('--backend <name>', 'tensor backend: auto tries tfjs-node-gpu, tfjs-node, then wasm')
    .choices([...BACKEND_NAMES])
    .default('auto');
}

export async function useBackend(name: string | undefined): Promise<void> {
  const { initBackend } = await import('../backend.js'); // tfjs loads here, not when --help runs
  await initBackend((name ?? 'auto') as BackendName);
}

/** Parses an integer option; the message names the flag. `max` defaults to 2^53 − 1 (an exact integer). */
export function intArg(flag: string, opts: { min?: number; max?: number } = {}) {
  return (value: string): number => {
    const n = Number(value);
    if (!Number.isInteger(n)) throw new Error(`${flag}: expected an integer, got "${value}"`);
    if (opts.min !== undefined && n < opts.min) throw new Error(`${flag}: must be at least ${opts.min}, got ${n}`);
    const max = opts.max ?? Number.MAX_SAFE_INTEGER;
    if (n > max) throw new Error(`${flag}: must be at most ${max.toLocaleString('en-US')}, got ${value}`);
    return n;
  };
}

/** Parses a number option; the message names the flag. `gt` is an exclusive lower bound. */
export function floatArg(flag: string, opts: { min?: number; gt?: number; max?: number } = {}) {
  return (value: string): number => {
    const n = Number(value);
    if (!Number.isFinite(n)) throw new Error(`${flag}: expected a number, got "${value}"`);
    if (opts.min !== undefined && n < opts.min) throw new Error(`${flag}: must be at least ${opts.min}, got ${n}`);
    if (opts.gt !== undefined && n <= opts.gt) throw new Error(`${flag}: must be greater than ${opts.gt}, got ${n}`);
    if (opts.max !== undefined && n > opts.max) throw new Error(`${flag}: must be at most ${opts.max}, got ${n}`);
    return n;
  };
}

/** `--workers N`: an integer in [1, MAX_WORKERS]; checked against the cores by `checkWorkersFlag`. */
export function workersArg() {
  return intArg('--workers', { min: 1, max: MAX_WORKERS });
}

/** `--force-workers`: allow more workers than cores. */
export function forceWorkersOption(): Option {
  return new Option('--force-workers', 'allow more --workers than cores (each still holds a full model copy)');
}

/** Refuses `--workers` above the cores unless `--force-workers` (one line naming the flag). */
export function checkWorkersFlag(command: string, workers: number | undefined, force: boolean | undefined): void {
  checkWorkers(workers, force === true, command, { field: '--workers', forceFlag: '--force-workers' });
}

/** `--overwrite`: write into an existing non-empty output folder this command did not write. */
export function overwriteOption(): Option {
  return new Option('--overwrite', 'write into an existing non-empty --out that is not a previous output of this command (only the files it writes are replaced; nothing else is removed)');
}

/**
 * A line about a run the database says is `running` when nobody holds its lock (the process was
 * killed): `tfalign run` resumes it. Undefined when the run is not marked running or is live.
 */
export function staleRunNote(project: string, run: { name: string; status: string }): string | undefined {
  if (run.status !== 'running') return undefined;
  let lock: ReturnType<typeof readRunLock>;
  try {
    lock = readRunLock(project, run.name);
  } catch {
    return undefined; // an unreadable lock file: `run` names it when it gets there
  }
  if (lock !== null && lock.alive) return undefined;
  const who = lock === null ? 'no process holds its lock' : `its lock holder, pid ${lock.holder.pid} on ${lock.holder.hostname}, is gone`;
  return `note: run "${run.name}" is marked running, but ${who}: it was interrupted; \`tfalign run --config FILE\` resumes it`;
}

/** Adds an "Example:" block to a command's --help. */
export function example(...lines: string[]): string {
  return `\nExample:\n${lines.map((l) => `  ${l}`).join('\n')}\n`;
}

export interface Progress {
  /** Updates the bar (TTY) or prints a line (non-TTY) for step `done` of `total`, with named figures. */
  update(done: number, fields: Record<string, number | string>): void;
  /** Ends the bar with a newline (TTY). */
  done(): void;
}

function formatField(v: number | string): string {
  if (typeof v === 'string') return v;
  if (Number.isInteger(v)) return String(v);
  return Math.abs(v) >= 100 ? v.toFixed(0) : Math.abs(v) >= 1 ? v.toFixed(3) : v.toPrecision(3);
}

/** A progress reporter on stderr: a redrawn bar on a TTY, a plain line every `everyLines` updates otherwise. */
export function progress(label: string, total: number, stream: NodeJS.WriteStream = process.stderr): Progress {
  const isTty = Boolean(stream.isTTY);
  const start = Date.now();
  return {
    update(done, fields) {
      const text = Object.entries(fields).map(([k, v]) => `${k} ${formatField(v)}`).join('  ');
      if (isTty) {
        const width = 24;
        const filled = Math.round((done / Math.max(total, 1)) * width);
        const bar = '█'.repeat(filled) + '░'.repeat(width - filled);
        const secs = ((Date.now() - start) / 1000).toFixed(0);
        stream.write(`\r${label} ${bar} ${done}/${total} ${secs}s  ${text}\x1b[K`);
      } else {
        stream.write(`${label} ${done}/${total}  ${text}\n`);
      }
    },
    done() {
      if (isTty) stream.write('\n');
    },
  };
}

/**
 * Opens a project's database read-only (no lock: `status`, `report` and `annotate export` work
 * while a run is in progress); a missing one is a one-line error naming the file.
 */
export function openStoreReadOnly(project: string): RunStore {
  const file = defaultStorePath(project);
  if (!fs.existsSync(file)) throw new Error(`${file}: no such database (run \`tfalign run --config FILE\` first, or pass --project)`);
  return RunStore.open(file, { readonly: true });
}

/** Adds each of `options` to `command` (commander has none of its own); returns the command, for chaining. */
export function addOptions(command: Command, options: readonly Option[]): Command {
  for (const option of options) command.addOption(option);
  return command;
}

/**
 * The decoding flags of the sampling commands (generate, sample, eval quantization):
 * `--max-new-tokens`, `--temperature`, `--top-k`, `--top-p`, `--seed`; each command says what its
 * temperature and seed mean. samplers/decoding.ts's schema validates the values again.
 */
export function decodingOptions(o: { maxNewTokens: number; temperature?: string; seed: string }): Option[] {
  return [
    new Option('--max-new-tokens <n>', 'most tokens generated per sample').argParser(intArg('--max-new-tokens', { min: 1, max: MAX_TOKENS_PER_SEQUENCE })).default(o.maxNewTokens),
    new Option('--temperature <t>', o.temperature ?? 'sampling temperature; 0 = greedy').argParser(floatArg('--temperature', { min: 0 })).default(1),
    new Option('--top-k <k>', 'keep the k most likely tokens (0 = off)').argParser(intArg('--top-k', { min: 0 })).default(0),
    new Option('--top-p <p>', 'nucleus sampling mass in (0, 1] (1 = off)').argParser(floatArg('--top-p', { gt: 0, max: 1 })).default(1),
    new Option('--seed <s>', o.seed).argParser(intArg('--seed', { min: 0 })).default(0),
  ];
}

/**
 * The memory options of the post-training commands (sft, dpo, rm train), added with
 * `.addOption` each: `--lora` and its rank and alpha, `--gradient-checkpointing`,
 * `--head-chunk-tokens`. Other LoRA fields go through `--set lora.dropout=0.05` or the config
 * file's `lora:` section.
 */
export function memoryOptions(): Option[] {
  return [
    new Option('--lora', 'train LoRA adapters on a frozen base (r 16, alpha 32, all seven projections); OUT is then a PEFT adapter folder'),
    new Option('--lora-r <n>', 'LoRA rank (implies --lora)').argParser(intArg('--lora-r', { min: 1, max: 4096 })),
    new Option('--lora-alpha <a>', 'LoRA alpha: updates are scaled by alpha/r (implies --lora)').argParser(floatArg('--lora-alpha', { gt: 0 })),
    new Option('--gradient-checkpointing', 'recompute each decoder layer in backward instead of keeping its activations'),
    new Option('--head-chunk-tokens <n|auto>', 'positions whose LM-head logits exist at once (default auto: sized to the vocabulary; 0: all at once)').argParser(headChunkArg),
  ];
}

/** `--head-chunk-tokens`: `auto` or an integer ≥ 0. */
function headChunkArg(value: string): number | 'auto' {
  return value === 'auto' ? 'auto' : intArg('--head-chunk-tokens', { min: 0 })(value);
}

/** The config fields of `memoryOptions`' flags (undefined where a flag is absent, so a config file's value stands). */
export function memoryFlags(o: { lora?: boolean; loraR?: number; loraAlpha?: number; gradientCheckpointing?: boolean; headChunkTokens?: number | 'auto' }): Record<string, unknown> {
  const wanted = o.lora === true || o.loraR !== undefined || o.loraAlpha !== undefined;
  const lora = wanted ? { ...(o.loraR !== undefined ? { r: o.loraR } : {}), ...(o.loraAlpha !== undefined ? { alpha: o.loraAlpha } : {}) } : undefined;
  return { lora, gradientCheckpointing: o.gradientCheckpointing ? true : undefined, headChunkTokens: o.headChunkTokens };
}
