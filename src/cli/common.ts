/**
 * Options and helpers every command shares: the backend flag, number parsing with one-line
 * errors, and a progress reporter (a bar on a TTY, one plain line per update otherwise).
 */
import { Option } from 'commander';
import * as fs from 'node:fs';
import { BACKEND_NAMES, initBackend, type BackendName } from '../backend.js';
import { RunStore, defaultStorePath } from '../store/store.js';

export function backendOption(): Option {
  return new Option('--backend <name>', 'tensor backend: auto tries tfjs-node-gpu, tfjs-node, then wasm')
    .choices([...BACKEND_NAMES])
    .default('auto');
}

export async function useBackend(name: string | undefined): Promise<void> {
  await initBackend((name ?? 'auto') as BackendName);
}

/** Parses an integer option; the message names the flag. */
export function intArg(flag: string, opts: { min?: number } = {}) {
  return (value: string): number => {
    const n = Number(value);
    if (!Number.isInteger(n)) throw new Error(`${flag}: expected an integer, got "${value}"`);
    if (opts.min !== undefined && n < opts.min) throw new Error(`${flag}: must be at least ${opts.min}, got ${n}`);
    return n;
  };
}

/** Parses a number option; the message names the flag. */
export function floatArg(flag: string, opts: { min?: number; max?: number } = {}) {
  return (value: string): number => {
    const n = Number(value);
    if (!Number.isFinite(n)) throw new Error(`${flag}: expected a number, got "${value}"`);
    if (opts.min !== undefined && n < opts.min) throw new Error(`${flag}: must be at least ${opts.min}, got ${n}`);
    if (opts.max !== undefined && n > opts.max) throw new Error(`${flag}: must be at most ${opts.max}, got ${n}`);
    return n;
  };
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
