import { describe, expect, it } from 'vitest';
import { decodeE4M3, E4M3_MAX, E4M3_VALUES, encodeE4M3, roundHalfEven, roundToE4M3 } from '../../../src/model/quantization/e4m3.js';

describe('E4M3 codec', () => {
  // Hand-checked: code = s eeee mmm, bias 7. value → (code, value it rounds to).
  const table: [number, number, number][] = [
    [0, 0x00, 0],
    [1, 0x38, 1], // e = 7 → 0111.000
    [-1, 0xb8, -1],
    [1.0625, 0x38, 1], // 8.5 steps of 1/8 in [1, 2): tie → even mantissa 0
    [1.1875, 0x3a, 1.25], // 9.5 steps: tie → 10 (mantissa 2)
    [0.3, 0x2a, 0.3125], // [0.25, 0.5): step 1/32, 9.6 → 10; e = −2 + 7 = 5
    [17, 0x58, 16], // [16, 32): step 2, 8.5 → 8 (even); e = 11
    [19, 0x5a, 20], // 9.5 → 10
    [15.5, 0x58, 16], // [8, 16): step 1, 15.5 → 16 carries into the next binade
    [240, 0x77, 240], // 2^7 · 1.875: e = 14, m = 7
    [448, 0x7e, 448], // largest finite: 1111.110
    [447, 0x7e, 448],
    [464, 0x7e, 448], // saturates (would round to 480 = NaN pattern)
    [1e6, 0x7e, 448],
    [-1e6, 0xfe, -448],
    [2 ** -6, 0x08, 2 ** -6], // smallest normal 0001.000
    [2 ** -9, 0x01, 2 ** -9], // smallest subnormal 0000.001
    [7 * 2 ** -9, 0x07, 7 * 2 ** -9], // largest subnormal 0000.111
    [2 ** -10, 0x00, 0], // half the smallest subnormal: tie → 0 (even)
    [3 * 2 ** -10, 0x02, 2 * 2 ** -9], // 1.5 subnormal steps → 2 (even)
    [2.5 * 2 ** -9, 0x02, 2 * 2 ** -9], // 2.5 steps → 2 (even)
    [7.5 * 2 ** -9, 0x08, 2 ** -6], // 7.5 subnormal steps → 8 = the first normal
    [1e-5, 0x00, 0],
  ];

  it.each(table)('encodes %d as code %i (value %d)', (x, code, value) => {
    expect(encodeE4M3(x)).toBe(code);
    expect(decodeE4M3(code)).toBe(value);
    expect(roundToE4M3(x)).toBe(value);
  });

  it('keeps the sign of zero, maps NaN to 0x7F and decodes both NaN patterns', () => {
    expect(encodeE4M3(-0)).toBe(0x80);
    expect(Object.is(decodeE4M3(0x80), -0)).toBe(true);
    expect(encodeE4M3(NaN)).toBe(0x7f);
    expect(decodeE4M3(0x7f)).toBeNaN();
    expect(decodeE4M3(0xff)).toBeNaN();
    expect(encodeE4M3(Infinity)).toBe(0x7e);
  });

  it('round-trips every finite code, and the grid has 253 distinct finite values', () => {
    const finite = new Set<number>();
    for (let code = 0; code < 256; code++) {
      const v = E4M3_VALUES[code]!;
      if (Number.isNaN(v)) continue;
      finite.add(v);
      if (code === 0x80) continue; // −0 encodes to 0x80 too, checked above; Set merges ±0
      expect(encodeE4M3(v)).toBe(code);
    }
    expect(finite.size).toBe(253); // 254 finite codes, ±0 counted once
    expect(Math.max(...finite)).toBe(E4M3_MAX);
  });

  it('rounds to the nearest grid value everywhere (brute force against the table)', () => {
    const grid = Array.from(E4M3_VALUES).filter((v) => Number.isFinite(v)).sort((a, b) => a - b);
    for (let i = 0; i < 20000; i++) {
      const x = (Math.sin(i * 12.9898) * 43758.5453) % 460; // deterministic spread over (−460, 460)
      const r = roundToE4M3(x);
      const nearest = grid.reduce((best, g) => (Math.abs(g - x) < Math.abs(best - x) ? g : best), grid[0]!);
      expect(Math.abs(r - x)).toBeCloseTo(Math.abs(nearest - x), 12);
    }
  });

  it('rounds half to even', () => {
    expect([0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 2.4, -2.6].map(roundHalfEven)).toEqual([0, 2, 2, -0, -2, -2, 2, -3]);
  });
});
