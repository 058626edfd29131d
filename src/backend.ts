/**
 * Backend selection: tfjs-node-gpu → tfjs-node → wasm → cpu.
 *
 * `auto` tries the native bindings first (optional peer dependencies: loaded only when the
 * user installed them), then the bundled WebAssembly backend. The pure-JS `cpu` backend is
 * used only when asked for by name (tests use it as an oracle) — never as a silent fallback,
 * since its matrix products are ~40× slower than wasm's on this kind of machine.
 *
 * One line on stderr says which backend runs and why the others were passed over.
 */
import * as tf from '@tensorflow/tfjs';
import { createRequire } from 'node:module';
import { registerWasmKernels } from './kernels/wasm-kernels.js';
import { BACKEND_NAMES, type BackendName } from './util/backend-names.js';

export { BACKEND_NAMES, type BackendName };

export interface BackendInfo {
  /** The tfjs backend name that now runs (`tensorflow`, `wasm` or `cpu`). */
  name: 'tensorflow' | 'wasm' | 'cpu';
  /** Which package provides it (`@tensorflow/tfjs-node-gpu`, `@tensorflow/tfjs-node`, `@tensorflow/tfjs-backend-wasm`, `@tensorflow/tfjs`). */
  provider: string;
  /** Why each candidate tried before it was passed over. */
  skipped: string[];
  /** wasm only: which kernel runs matrix products, e.g. `matmul: native AVX-512`, or why XNNPACK does. */
  matMul?: string;
}

let current: BackendInfo | undefined;

/** The backend chosen by the last `initBackend` call, if any. */
export function currentBackend(): BackendInfo | undefined {
  return current;
}

/** The line printed on stderr, e.g. `backend: wasm (tfjs-node-gpu not installed, tfjs-node not installed); matmul: native AVX2`. */
export function describeBackend(info: BackendInfo): string {
  const why = info.skipped.length > 0 ? ` (${info.skipped.join(', ')})` : '';
  return `backend: ${info.name}${why}${info.matMul ? `; ${info.matMul}` : ''}`;
}

const require = createRequire(import.meta.url);

/** True when `pkg` can be resolved from this package (an optional peer dependency is installed). */
function isInstalled(pkg: string): boolean {
  try {
    require.resolve(pkg);
    return true;
  } catch {
    return false;
  }
}

/**
 * Loads a native binding. tfjs-node(-gpu) registers the `tensorflow` backend on import; it must
 * be the same `@tensorflow/tfjs-core` instance as ours, which npm's deduplication gives when
 * both are 4.22.
 */
async function tryNative(pkg: '@tensorflow/tfjs-node-gpu' | '@tensorflow/tfjs-node', short: string): Promise<string | undefined> {
  if (!isInstalled(pkg)) return `${short} not installed`;
  try {
    await import(pkg);
    if (!(await tf.setBackend('tensorflow'))) return `${short} failed to initialise`;
    return undefined;
  } catch (err) {
    return `${short} failed to load: ${(err as Error).message.split('\n')[0]}`;
  }
}

/**
 * The cpu backend prints a multi-line "install tfjs-node" banner on first use in Node. Our own
 * stderr line already says which backend runs and why, so mark the banner as shown.
 */
function silenceCpuBanner(): void {
  const cpu = tf.findBackend('cpu') as unknown as { firstUse?: boolean } | null;
  if (cpu && 'firstUse' in cpu) cpu.firstUse = false;
}

/** Initialises wasm and the project's kernels; returns the matrix-product line. */
async function useWasm(): Promise<string | undefined> {
  await import('@tensorflow/tfjs-backend-wasm');
  if (!(await tf.setBackend('wasm'))) throw new Error('backend: the wasm backend failed to initialise');
  return registerWasmKernels()?.description;
}

/**
 * Selects and initialises a backend. Idempotent for the same name; `quiet` suppresses the stderr line.
 */
export async function initBackend(name: BackendName = 'auto', opts: { quiet?: boolean } = {}): Promise<BackendInfo> {
  silenceCpuBanner();
  if (current && (name === 'auto' || name === current.name) && tf.getBackend() === current.name) return current;
  const skipped: string[] = [];
  let info: BackendInfo | undefined;
  if (name === 'auto' || name === 'tensorflow') {
    const gpu = await tryNative('@tensorflow/tfjs-node-gpu', 'tfjs-node-gpu');
    if (gpu === undefined) info = { name: 'tensorflow', provider: '@tensorflow/tfjs-node-gpu', skipped };
    else {
      skipped.push(gpu);
      const cpuNative = await tryNative('@tensorflow/tfjs-node', 'tfjs-node');
      if (cpuNative === undefined) info = { name: 'tensorflow', provider: '@tensorflow/tfjs-node', skipped };
      else skipped.push(cpuNative);
    }
    if (!info && name === 'tensorflow') {
      throw new Error(
        `backend: tensorflow requested but unavailable (${skipped.join(', ')}); install @tensorflow/tfjs-node-gpu or @tensorflow/tfjs-node, or use --backend wasm`,
      );
    }
  }
  if (!info && (name === 'auto' || name === 'wasm')) {
    const matMul = await useWasm();
    info = { name: 'wasm', provider: '@tensorflow/tfjs-backend-wasm', skipped, matMul };
  }
  if (!info) {
    if (!(await tf.setBackend('cpu'))) throw new Error('backend: the cpu backend failed to initialise');
    info = { name: 'cpu', provider: '@tensorflow/tfjs', skipped };
  }
  await tf.ready();
  current = info;
  if (!opts.quiet) process.stderr.write(describeBackend(info) + '\n');
  return info;
}
