/**
 * A small deterministic pseudo-random number generator for everything a run must be able to
 * replay: data shuffling, dropout masks drawn on the host, per-sample sampling seeds.
 *
 * The generator is xoshiro128** (Blackman & Vigna, "Scrambled linear pseudorandom number
 * generators", 2018): 128 bits of state, period 2^128 − 1, only 32-bit integer operations
 * (`Math.imul`, shifts), so it gives the same stream on every JavaScript engine. The state is
 * seeded through splitmix32 so that neighbouring seeds (0, 1, 2, …) give unrelated streams.
 *
 * `fork(i)` derives the stream for item `i` (sample i of a prompt, worker i, epoch i) from this
 * generator's *seed* and `i` only — not from how many numbers were drawn — so sample 7 gets the
 * same seed whether or not samples 0–6 were generated in this process. It plays the role of the
 * usual "seed + i", but hashed: `Rng(s).fork(1)` and `Rng(s + 1).fork(0)` do not collide.
 *
 * `state()` / `Rng.fromState()` save and restore the exact position for resume.
 */

/** JSON-serialisable position of an `Rng`: its seed key and the four xoshiro128** words. */
export interface RngState {
  /** 32-bit key derived from the seed; `fork` hashes it with the fork index. */
  key: number;
  /** The four 32-bit unsigned words of xoshiro128** state. */
  words: [number, number, number, number];
}

/** splitmix32 finaliser: a bijective 32-bit mix with good avalanche (every input bit flips ~half the output bits). */
function mix32(x: number): number {
  let z = (x + 0x9e3779b9) >>> 0;
  z = Math.imul(z ^ (z >>> 16), 0x85ebca6b) >>> 0;
  z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35) >>> 0;
  return (z ^ (z >>> 16)) >>> 0;
}

/** Folds a safe integer seed (up to 2^53) into a 32-bit key, using both its low and high words. */
function keyFromSeed(seed: number): number {
  if (!Number.isSafeInteger(seed)) throw new Error(`seed: seed must be a safe integer, got ${seed}`);
  const low = seed >>> 0;
  const high = Math.floor(seed / 0x1_0000_0000) >>> 0; // for negative seeds this is the two's-complement-like high word
  return mix32(low ^ mix32(high));
}

/** Rotate a 32-bit word left by k bits. */
function rotl(x: number, k: number): number {
  return ((x << k) | (x >>> (32 - k))) >>> 0;
}

export class Rng {
  private key: number;
  private s0: number;
  private s1: number;
  private s2: number;
  private s3: number;

  /** A generator for `seed` (any safe integer). Equal seeds give equal streams. */
  constructor(seed: number) {
    this.key = keyFromSeed(seed);
    [this.s0, this.s1, this.s2, this.s3] = Rng.wordsFromKey(this.key);
  }

  /** Four state words from a key via successive splitmix32 outputs; never all zero (xoshiro's one bad state). */
  private static wordsFromKey(key: number): [number, number, number, number] {
    const words: [number, number, number, number] = [0, 0, 0, 0];
    let x = key;
    for (let i = 0; i < 4; i++) {
      x = (x + 0x9e3779b9) >>> 0;
      words[i] = mix32(x);
    }
    if ((words[0] | words[1] | words[2] | words[3]) === 0) words[0] = 1;
    return words;
  }

  /** Builds a generator at exactly the position recorded by `state()`. */
  static fromState(state: RngState): Rng {
    const isWord = (x: unknown): x is number => Number.isInteger(x) && (x as number) >= 0 && (x as number) <= 0xffffffff;
    if (!isWord(state.key)) throw new Error(`seed: rng state field 'key' must be a 32-bit unsigned integer, got ${String(state.key)}`);
    if (!Array.isArray(state.words) || state.words.length !== 4 || !state.words.every(isWord)) {
      throw new Error(`seed: rng state field 'words' must be four 32-bit unsigned integers, got ${JSON.stringify(state.words)}`);
    }
    if (state.words.every((w) => w === 0)) throw new Error(`seed: rng state field 'words' must not be all zero`);
    const rng = new Rng(0);
    rng.key = state.key;
    [rng.s0, rng.s1, rng.s2, rng.s3] = state.words;
    return rng;
  }

  /** The current position, to store in a checkpoint's trainer state. */
  state(): RngState {
    return { key: this.key, words: [this.s0, this.s1, this.s2, this.s3] };
  }

  /** Next 32-bit unsigned integer (one xoshiro128** step). */
  nextUint32(): number {
    const result = Math.imul(rotl(Math.imul(this.s1, 5) >>> 0, 7), 9) >>> 0;
    const t = (this.s1 << 9) >>> 0;
    this.s2 = (this.s2 ^ this.s0) >>> 0;
    this.s3 = (this.s3 ^ this.s1) >>> 0;
    this.s1 = (this.s1 ^ this.s2) >>> 0;
    this.s0 = (this.s0 ^ this.s3) >>> 0;
    this.s2 = (this.s2 ^ t) >>> 0;
    this.s3 = rotl(this.s3, 11);
    return result;
  }

  /** Uniform float in [0, 1) with 53 random bits (two 32-bit draws: 27 high bits + 26 low bits). */
  next(): number {
    const high = this.nextUint32() >>> 5; // 27 bits
    const low = this.nextUint32() >>> 6; // 26 bits
    return (high * 0x4000000 + low) / 0x20000000000000; // (high·2^26 + low) / 2^53
  }

  /** Uniform integer in [0, n), without modulo bias (rejection of the incomplete top range). n ≤ 2^32. */
  nextInt(n: number): number {
    if (!Number.isInteger(n) || n <= 0 || n > 0x1_0000_0000) throw new Error(`seed: nextInt bound must be an integer in [1, 2^32], got ${n}`);
    const limit = 0x1_0000_0000 - (0x1_0000_0000 % n); // largest multiple of n that fits in 2^32
    for (;;) {
      const u = this.nextUint32();
      if (u < limit) return u % n;
    }
  }

  /** Shuffles `array` in place (Fisher–Yates, from the last index down) and returns it. */
  shuffle<T>(array: T[]): T[] {
    for (let i = array.length - 1; i > 0; i--) {
      const j = this.nextInt(i + 1);
      const tmp = array[i];
      array[i] = array[j];
      array[j] = tmp;
    }
    return array;
  }

  /**
   * A normal draw N(mean, std²) by Box–Muller: z = √(−2 ln u₁) · cos(2π u₂) with u₁ ∈ (0, 1].
   * The sine partner is discarded so that the state is just the four words (nothing cached).
   */
  normal(mean = 0, std = 1): number {
    const u1 = 1 - this.next(); // (0, 1]: ln(0) never happens
    const u2 = this.next();
    return mean + std * Math.sqrt(-2 * Math.log(u1)) * Math.cos(2 * Math.PI * u2);
  }

  /**
   * An independent generator for item `index` (a non-negative safe integer), a pure function of
   * this generator's seed and `index` — drawing from the parent before or after does not change it.
   */
  fork(index: number): Rng {
    if (!Number.isSafeInteger(index) || index < 0) throw new Error(`seed: fork index must be a non-negative safe integer, got ${index}`);
    const child = new Rng(0);
    const low = index >>> 0;
    const high = Math.floor(index / 0x1_0000_0000) >>> 0;
    child.key = mix32((mix32(this.key ^ 0x5bd1e995) + mix32(low) + Math.imul(mix32(high), 0x27d4eb2f)) >>> 0);
    [child.s0, child.s1, child.s2, child.s3] = Rng.wordsFromKey(child.key);
    return child;
  }
}
