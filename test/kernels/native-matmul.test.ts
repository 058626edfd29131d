/**
 * The native matrix-product path (native/sgemm.cc via src/kernels/native-matmul.ts) against the
 * XNNPACK route it replaces: same products on odd shapes, transposes and batch patterns, both
 * instruction sets, one and several threads, a training step's gradients, no leaked tensors; and
 * the fallback when the addon is switched off.
 */
import { spawnSync } from 'node:child_process';
import * as tf from '@tensorflow/tfjs';
import { afterEach, describe, expect, it } from 'vitest';
import { native, readOnce, useWasmBackend } from './native-helpers.js';
import { matMulStatus, setMatMulPath } from '../../src/kernels/wasm-kernels.js';
import { parseLlamaConfig } from '../../src/model/config.js';
import { initModel } from '../../src/model/weights.js';
import { causalLmLoss, causalLmUnits } from '../../src/tasks/causal-lm.js';
import { normalizedLoss } from '../../src/train/objective.js';
import { padRows } from '../../data/collate.js';
import { Rng } from '../../src/util/rng.js';

useWasmBackend();

afterEach(() => {
  delete process.env.TFALIGN_NATIVE_THREADS;
  native.addon?.setIsa(native.addon.isa());
  if (native.addon) setMatMulPath('native');
});

/** tf.matMul on the chosen path; the result read back as a plain array. */
function product(path: 'native' | 'xnnpack', a: tf.Tensor, b: tf.Tensor, transposeA: boolean, transposeB: boolean): Float32Array {
  setMatMulPath(path);
  return readOnce(() => tf.matMul(a, b, transposeA, transposeB));
}

function maxAbsDiff(x: Float32Array, y: Float32Array): number {
  expect(x.length).toBe(y.length);
  let worst = 0;
  for (let i = 0; i < x.length; i++) worst = Math.max(worst, Math.abs(x[i] - y[i]));
  return worst;
}

/** [aShape, bShape, transposeA, transposeB]: odd sizes around the 6/12-row and 16/32-column tiles, K across the 256 block. */
const CASES: [number[], number[], boolean, boolean][] = [
  [[1, 1], [1, 1], false, false],
  [[7, 13], [13, 5], false, false],
  [[37, 300], [300, 53], false, false], // K spans two depth blocks
  [[300, 37], [300, 53], true, false],
  [[37, 300], [53, 300], false, true],
  [[300, 37], [53, 300], true, true],
  [[3, 150, 17], [17, 33], false, false], // shared right operand: batch folded into rows
  [[3, 17, 150], [17, 33], true, false], // shared right operand, transposed left
  [[2, 3, 25, 9], [2, 3, 9, 31], false, false], // true batch, rank 4
  [[2, 3, 25, 9], [2, 3, 31, 9], false, true], // attention scores: Q·Kᵀ
  [[4, 9, 25], [4, 9, 31], true, false],
  [[11, 6], [5, 6, 40], false, false], // shared left operand
  [[200, 145], [145, 170], false, false], // more than one 144-row block
];

describe.skipIf(!native.addon)('native matmul on the wasm heap', () => {
  it('is the path wasm runs by default, and its line names the instruction set', () => {
    expect(matMulStatus()?.path).toBe('native');
    expect(matMulStatus()?.description).toMatch(/^matmul: native (AVX2|AVX-512)$/);
  });

  it('gives the hand-worked product [[1,2],[3,4]]·[[5,6],[7,8]] = [[19,22],[43,50]] and its transposes', () => {
    const a = tf.tensor2d([[1, 2], [3, 4]]);
    const b = tf.tensor2d([[5, 6], [7, 8]]);
    expect(Array.from(product('native', a, b, false, false))).toEqual([19, 22, 43, 50]);
    expect(Array.from(product('native', a, b, true, false))).toEqual([26, 30, 38, 44]); // Aᵀ·B
    expect(Array.from(product('native', a, b, false, true))).toEqual([17, 23, 39, 53]); // A·Bᵀ
    tf.dispose([a, b]);
  });

  it('matches the XNNPACK route on odd shapes, transposes and batch patterns, with both instruction sets and 1 or 2 threads', () => {
    const isas = native.addon!.isa() === 2 ? [2, 1] : [1];
    let numCompared = 0;
    for (const [aShape, bShape, tA, tB] of CASES) {
      const a = tf.randomNormal(aShape, 0, 1, 'float32', 1);
      const b = tf.randomNormal(bShape, 0, 1, 'float32', 2);
      const reference = product('xnnpack', a, b, tA, tB);
      const k = tA ? aShape[aShape.length - 2] : aShape[aShape.length - 1];
      for (const isa of isas) {
        expect(native.addon!.setIsa(isa)).toBe(isa);
        for (const threads of ['1', '2']) {
          process.env.TFALIGN_NATIVE_THREADS = threads;
          const got = product('native', a, b, tA, tB);
          // Sums of k products of N(0,1) values: float32 rounding grows like √k.
          expect(maxAbsDiff(got, reference), `${aShape}·${bShape} tA=${tA} tB=${tB} isa=${isa} threads=${threads}`).toBeLessThan(1e-5 * Math.sqrt(k) * 10);
          numCompared++;
        }
      }
      tf.dispose([a, b]);
    }
    expect(numCompared).toBe(CASES.length * isas.length * 2);
  });

  it('splits a product across threads without changing a bit of it', () => {
    const a = tf.randomNormal([260, 300], 0, 1, 'float32', 3);
    const b = tf.randomNormal([300, 70], 0, 1, 'float32', 4);
    process.env.TFALIGN_NATIVE_THREADS = '1';
    const one = product('native', a, b, false, false);
    process.env.TFALIGN_NATIVE_THREADS = '2';
    const two = product('native', a, b, false, false);
    expect(maxAbsDiff(one, two)).toBe(0); // each element is summed in the same order by one thread
    tf.dispose([a, b]);
  });

  it('refuses operands outside the heap (products, exp, sum, block copies) instead of reading past them', () => {
    const heap = new Uint8Array(64);
    expect(() => native.addon!.matmul(heap, 1, 2, 2, 2, 0, 0, false, 16, 0, false, 60, 1)).toThrow(/outside the heap/);
    expect(() => native.addon!.matmul(heap, 1, 2, 2, 2, 2, 0, false, 16, 0, false, 32, 1)).toThrow(/multiples of 4/);
    expect(() => native.addon!.exp(heap, 0, 32, 9, 1)).toThrow(/outside the heap/);
    expect(() => native.addon!.sum(heap, 0, 0, 1, 17, 1, 1)).toThrow(/outside the heap/);
    expect(() => native.addon!.copyBlock(heap, 0, [4, 4], [0, 0], 32, [4, 4], [0, 0], [4, 4])).toThrow(/outside the heap/);
    expect(() => native.addon!.copyBlock(heap, 0, [2, 2], [1, 0], 32, [2, 2], [0, 0], [2, 2])).toThrow(/does not fit/);
  });

  it('a training step gives the same loss and gradients as on XNNPACK, and leaks no tensor', () => {
    const config = parseLlamaConfig(
      { vocab_size: 97, hidden_size: 48, intermediate_size: 100, num_hidden_layers: 2, num_attention_heads: 4, num_key_value_heads: 2, max_position_embeddings: 64, tie_word_embeddings: true },
      'test',
    );
    const model = initModel(config, 0);
    const rng = new Rng(5);
    const rows = Array.from({ length: 3 }, () => {
      const ids = Array.from({ length: 19 }, () => rng.nextInt(config.vocab_size));
      return { ids, targetMask: ids.map((_, i) => (i === 0 ? 0 : 1)) };
    });
    const batch = padRows(rows, 0, 19);
    const step = (path: 'native' | 'xnnpack') => {
      setMatMulPath(path);
      const { value, grads } = tf.variableGrads(() => normalizedLoss(causalLmLoss(model, batch).sums, causalLmUnits(batch)));
      const out = { loss: value.dataSync()[0], grads: new Map([...Object.entries(grads)].map(([name, g]) => [name, g.dataSync() as Float32Array])) };
      tf.dispose([value, ...Object.values(grads)]);
      return out;
    };
    step('native'); // first call creates lazily cached tensors (e.g. RoPE tables)
    const before = tf.memory().numTensors;
    const viaNative = step('native');
    expect(tf.memory().numTensors).toBe(before);
    const viaXnnpack = step('xnnpack');
    expect(viaNative.loss).toBeCloseTo(viaXnnpack.loss, 5);
    expect(viaNative.loss).toBeGreaterThan(Math.log(config.vocab_size) - 0.5); // near-uniform predictions at init
    expect(viaNative.grads.size).toBe(model.params.size);
    for (const [name, g] of viaNative.grads) {
      const ref = viaXnnpack.grads.get(name)!;
      const scale = Math.max(...ref.map(Math.abs));
      expect(scale, name).toBeGreaterThan(0);
      expect(maxAbsDiff(g, ref) / scale, name).toBeLessThan(1e-4);
    }
    model.dispose();
  });
});

describe('fallback', () => {
  it('with TFALIGN_NATIVE_MATMUL=0 the backend line says XNNPACK runs, and products still agree with the hand values', () => {
    const child = spawnSync(process.execPath, ['bin/run-ts.js', 'test/kernels/fixtures/matmul-path.ts'], {
      encoding: 'utf8',
      env: { ...process.env, TFALIGN_NATIVE_MATMUL: '0' },
    });
    expect(child.status, child.stderr).toBe(0);
    expect(child.stderr).toContain('backend: wasm');
    expect(child.stderr).toContain('matmul: native matmul off (TFALIGN_NATIVE_MATMUL=0)');
    expect(JSON.parse(child.stdout)).toEqual({ path: 'xnnpack', product: [19, 22, 43, 50] });
  });
});
