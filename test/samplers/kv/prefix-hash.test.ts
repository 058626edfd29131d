import { describe, expect, it } from 'vitest';
import { hashBlock } from '../../../samplers/kv/prefix-hash.js';
import { hashFullBlocks } from '../helpers.js';

describe('hashBlock', () => {
  it('is sha256 over (tag, parent, little-endian Int32 tokens), checked against coreutils sha256sum', () => {
    // printf '\x00\x01\x00\x00\x00\x02\x00\x00\x00' | sha256sum   (tag 0 = no parent, tokens 1, 2)
    const first = hashBlock(null, [1, 2]);
    expect(first).toBe('f64ec6aeff74ab2ec8b028c776a3b3f9be625617a26723900b440416ba72c7ec');
    // (printf '\x01\x40\x00\x00\x00'; printf "$first"; printf '\x07\x00\x00\x00') | sha256sum
    // tag 1 = string parent, its length 64 as u32 LE, the 64 hex characters, then token 7.
    expect(hashBlock(first, [7])).toBe('e22cfc94e2a3fadfca4ec4268bdbd01551457cc0e3ecbebd9dcf8f546447f90f');
  });

  it('is deterministic and depends on the parent, the tokens and their order', () => {
    expect(hashBlock(null, [5, 6, 7])).toBe(hashBlock(null, [5, 6, 7]));
    expect(hashBlock(null, [5, 6, 7])).not.toBe(hashBlock(null, [7, 6, 5]));
    expect(hashBlock('abc', [5])).not.toBe(hashBlock('abd', [5]));
    expect(hashBlock(null, [5])).not.toBe(hashBlock('', [5]));
    // A bigint parent and the string of its hex digits are different parents.
    expect(hashBlock(0xabcn, [5])).not.toBe(hashBlock('abc', [5]));
    expect(hashBlock(0xabcn, [5])).toBe(hashBlock(0xabcn, [5]));
  });

  it('rejects token ids that do not fit a non-negative Int32', () => {
    expect(() => hashBlock(null, [1, 1.5])).toThrow('tokenIds[1] = 1.5');
    expect(() => hashBlock(null, [-1])).toThrow('tokenIds[0] = -1');
    expect(() => hashBlock(null, [2 ** 31])).toThrow('not a non-negative 32-bit integer');
  });
});

describe('hashFullBlocks', () => {
  it('chains over full blocks only and agrees with hashBlock step by step', () => {
    const tokens = [10, 11, 12, 13, 14, 15, 16]; // blockSize 3: two full blocks, one partial token
    const hashes = hashFullBlocks(tokens, 3);
    expect(hashes).toHaveLength(2);
    const h0 = hashBlock(null, [10, 11, 12]);
    expect(hashes[0]).toBe(h0);
    expect(hashes[1]).toBe(hashBlock(h0, [13, 14, 15]));
  });

  it('gives two prompts the same hashes exactly over their common full-block prefix', () => {
    const a = hashFullBlocks([1, 2, 3, 4, 5, 6, 7, 8], 2);
    const b = hashFullBlocks([1, 2, 3, 4, 9, 6, 7, 8], 2);
    expect(b.slice(0, 2)).toEqual(a.slice(0, 2));
    // Block 3 has the same tokens (7, 8) in both, but a different prefix, so a different hash.
    expect(b[2]).not.toBe(a[2]);
    expect(b[3]).not.toBe(a[3]);
  });

  it('returns nothing for fewer tokens than a block and rejects a bad block size', () => {
    expect(hashFullBlocks([1, 2, 3], 4)).toEqual([]);
    expect(() => hashFullBlocks([1], 0)).toThrow('blockSize = 0');
  });
});
