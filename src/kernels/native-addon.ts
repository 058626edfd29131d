/**
 * The `tfalign_native` N-API addon (native/*.cc, built by node-gyp at `npm ci`): packed,
 * cache-blocked AVX2+FMA or AVX-512 SGEMM (native/sgemm.cc), a vectorised exp,
 * sums over any contiguous block of axes (native/elementwise.cc) and block copies (native/addon.cc), running on several threads straight on the wasm heap — operands are read
 * and results written at their offsets in WebAssembly.Memory's buffer, so nothing is copied.
 *
 * The addon is optional: when it did not build (no compiler, no Node headers), the CPU lacks AVX2
 * and FMA, or `TFALIGN_NATIVE_MATMUL=0` is set, `loadNativeAddon` says why and the wasm kernels
 * keep their XNNPACK / wasm paths (wasm-kernels.ts).
 *
 * Threads: every thread (main or worker) that loads the addon counts as one user of the cores, so
 * a kernel runs on ⌊cores / users⌋ threads (at least 1): one process alone uses every core, while
 * two data-parallel replicas on two cores use one each. `TFALIGN_NATIVE_THREADS=N` fixes the count.
 */
import { createRequire } from 'node:module';
import { packageFile } from '../util/package-root.js';

/** The functions of `build/Release/tfalign_native.node` (native/addon.cc). */
export interface NativeAddon {
  /** Best instruction set of this CPU: 0 none, 1 AVX2+FMA, 2 AVX-512F. */
  isa(): number;
  /** Restricts the micro-kernel to an instruction set ≤ `isa()` (tests compare both); returns the one used. */
  setIsa(isa: number): number;
  /** Threads of this process that loaded the addon and have not exited. */
  numInstances(): number;
  /** Cores this process may run on (its CPU affinity mask). */
  numCores(): number;
  /** C[batch, m, n] = op(A) · op(B) on `heap`; offsets in bytes, batch strides in elements (0: shared). */
  matmul(
    heap: Uint8Array, batch: number, m: number, n: number, k: number,
    aOffset: number, aBatchStride: number, transposeA: boolean,
    bOffset: number, bBatchStride: number, transposeB: boolean,
    cOffset: number, numThreads: number,
  ): void;
  /** out = exp(x) over `count` float32 values at byte offsets of `heap`. */
  exp(heap: Uint8Array, xOffset: number, outOffset: number, count: number, numThreads: number): void;
  /** out[a, c] = Σ_r x[a, r, c] for x viewed as [A, R, C] float32 at byte offsets of `heap`. */
  sum(heap: Uint8Array, xOffset: number, outOffset: number, A: number, R: number, C: number, numThreads: number): void;
  /** Copies the float32 block `blockShape` from corner srcBegin of one row-major tensor to corner dstBegin of another (byte offsets). */
  copyBlock(heap: Uint8Array, srcOffset: number, srcShape: number[], srcBegin: number[], dstOffset: number, dstShape: number[], dstBegin: number[], blockShape: number[]): void;
}

export type NativeLoad = { addon: NativeAddon; isaName: string } | { addon: undefined; reason: string };

const ADDON_PATH = packageFile('build', 'Release', 'tfalign_native.node'); // the same from src/ (tsx, vitest) and dist/

let loaded: NativeLoad | undefined;

/** Loads the addon once per thread; says why not when it cannot be used. */
export function loadNativeAddon(): NativeLoad {
  if (loaded) return loaded;
  if (process.env.TFALIGN_NATIVE_MATMUL === '0') return (loaded = { addon: undefined, reason: 'native matmul off (TFALIGN_NATIVE_MATMUL=0)' });
  let addon: NativeAddon;
  try {
    addon = createRequire(import.meta.url)(ADDON_PATH) as NativeAddon;
  } catch (err) {
    const missing = (err as NodeJS.ErrnoException).code === 'MODULE_NOT_FOUND';
    const why = missing ? 'addon not built; `npm run build:native` builds it' : `addon failed to load: ${(err as Error).message.split('\n')[0]}`;
    return (loaded = { addon: undefined, reason: `native matmul unavailable (${why}), using XNNPACK` });
  }
  const isa = addon.isa();
  if (isa === 0) return (loaded = { addon: undefined, reason: 'native matmul unavailable (CPU lacks AVX2+FMA), using XNNPACK' });
  return (loaded = { addon, isaName: isa === 2 ? 'AVX-512' : 'AVX2' });
}

/** Threads one kernel call may use now (see the file comment). */
export function nativeThreads(addon: NativeAddon): number {
  const fixed = Number(process.env.TFALIGN_NATIVE_THREADS);
  if (Number.isInteger(fixed) && fixed >= 1) return fixed;
  return Math.max(1, Math.floor(addon.numCores() / Math.max(1, addon.numInstances())));
}
