/**
 * The FP8 E4M3 format (OCP 8-bit floating point, `float8_e4m3fn` in PyTorch, `F8_E4M3` in
 * safetensors), emulated exactly: CPUs and TensorFlow.js have no FP8 arithmetic, so values are
 * rounded onto the E4M3 grid in float32/float64 and stored as their 8-bit codes.
 *
 * Bits `s eeee mmm`, exponent bias 7:
 *   - normal   (e = 1…15): (−1)^s · 2^(e−7) · (1 + m/8)   — 2^−6 … 448
 *   - subnormal (e = 0):   (−1)^s · 2^−6 · m/8 = m · 2^−9  — steps of 2^−9 ≈ 0.00195
 *   - NaN: e = 15, m = 7 (0x7F, 0xFF); the "fn" variant has no infinities, so 1111.111 is the
 *     only non-finite pattern and 1111.110 = 448 is the largest finite value.
 *
 * Encoding rounds to nearest, ties to even mantissa (IEEE's default), and saturates: |x| ≥ 448
 * becomes ±448, as FBGEMM's and PyTorch's saturating casts do (an overflow to NaN would poison a
 * whole output row). NaN encodes to 0x7F.
 */

/** Largest finite E4M3 magnitude (1111.110 = 2^8 · 1.75). */
export const E4M3_MAX = 448;
/** Smallest positive E4M3 value (subnormal 0000.001 = 2^−9). */
export const E4M3_MIN_SUBNORMAL = 2 ** -9;
/** Smallest positive normal E4M3 value (0001.000 = 2^−6). */
export const E4M3_MIN_NORMAL = 2 ** -6;
/** The NaN code written for a NaN input. */
export const E4M3_NAN_CODE = 0x7f;

/** The value of one 8-bit code. */
export function decodeE4M3(code: number): number {
  const sign = code & 0x80 ? -1 : 1;
  const exponent = (code >> 3) & 0xf;
  const mantissa = code & 0x7;
  if (exponent === 0xf && mantissa === 0x7) return NaN;
  if (exponent === 0) return sign * mantissa * E4M3_MIN_SUBNORMAL;
  return sign * 2 ** (exponent - 7) * (1 + mantissa / 8);
}

/** All 256 code values, built once (index = code). */
export const E4M3_VALUES: Float32Array = (() => {
  const table = new Float32Array(256);
  for (let code = 0; code < 256; code++) table[code] = decodeE4M3(code);
  return table;
})();

/**
 * Midpoints between consecutive non-negative E4M3 values (codes 0…0x7E are increasing): a value
 * strictly between midpoints i−1 and i rounds to code i; one exactly on midpoint i is a tie between
 * codes i and i+1, which goes to the even code (its mantissa's last bit is the code's last bit).
 * Searching these 126 numbers replaces a log2 and two powers per value (~5× faster).
 */
const MIDPOINTS: Float64Array = (() => {
  const m = new Float64Array(0x7e);
  for (let i = 0; i < 0x7e; i++) m[i] = (E4M3_VALUES[i]! + E4M3_VALUES[i + 1]!) / 2;
  return m;
})();

/**
 * The code of `x` rounded to the nearest E4M3 value (ties to the even mantissa), saturating at
 * ±448; −0 keeps its sign (0x80).
 */
export function encodeE4M3(x: number): number {
  if (Number.isNaN(x)) return E4M3_NAN_CODE;
  const signBit = x < 0 || Object.is(x, -0) ? 0x80 : 0;
  const a = Math.abs(x);
  if (a >= E4M3_MAX) return signBit | 0x7e;
  // Binary search: the number of midpoints below a is the nearest code.
  let lo = 0;
  let hi = MIDPOINTS.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (MIDPOINTS[mid]! < a) lo = mid + 1;
    else hi = mid;
  }
  const code = lo < MIDPOINTS.length && a === MIDPOINTS[lo] && (lo & 1) === 1 ? lo + 1 : lo;
  return signBit | code;
}

/** Round half to even (IEEE roundTiesToEven), as `torch.round` and the hardware casts do. */
export function roundHalfEven(x: number): number {
  const r = Math.round(x);
  // Math.round rounds .5 up; move exact ties that landed on an odd integer back down.
  return Math.abs(x % 1) === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

/** `x` rounded onto the E4M3 grid (saturating), as a number: `decode(encode(x))`. */
export function roundToE4M3(x: number): number {
  return E4M3_VALUES[encodeE4M3(x)]!;
}
