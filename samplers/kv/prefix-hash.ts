/**
 * Hash chain over full KV blocks: the key of the prefix cache.
 *
 * A block's KV depends on every token before it, not only on its own tokens, so a block is
 * named by `hash(parentHash, tokenIds)` where `parentHash` names everything before it (vLLM
 * v1 `kv_cache_utils.hash_block_tokens`). Two prompts reach the same hash for block i exactly
 * when their first (i + 1) · blockSize tokens agree (up to sha256 collisions).
 *
 * sha256 rather than a fast non-cryptographic hash: a collision here silently hands one prompt
 * another prompt's keys and values, and hashing 16 int32 tokens is negligible next to the
 * attention that computes them.
 */
import { createHash } from 'node:crypto';

/** The hash of the block before; `null` for the first block of a sequence. */
export type ParentHash = bigint | string | null;

/** Domain tags so that a `null`, a string and a bigint parent can never encode to the same bytes. */
const PARENT_NULL = 0;
const PARENT_STRING = 1;
const PARENT_BIGINT = 2;

/** Largest token id that fits the Int32 encoding. */
const MAX_TOKEN_ID = 0x7fffffff;

/**
 * The hash of one block: sha256 over (tag, parent hash, token ids as little-endian Int32),
 * as a 64-character hex string. Deterministic across runs and machines.
 */
export function hashBlock(parentHash: ParentHash, tokenIds: readonly number[]): string {
  const hash = createHash('sha256');
  if (parentHash === null) {
    hash.update(Uint8Array.of(PARENT_NULL));
  } else {
    const text = typeof parentHash === 'bigint' ? parentHash.toString(16) : parentHash;
    const textBytes = Buffer.from(text, 'utf8');
    const header = Buffer.alloc(5);
    header.writeUInt8(typeof parentHash === 'bigint' ? PARENT_BIGINT : PARENT_STRING, 0);
    header.writeUInt32LE(textBytes.length, 1); // length prefix: the parent ends where the tokens begin
    hash.update(header);
    hash.update(textBytes);
  }
  const tokenBytes = Buffer.alloc(4 * tokenIds.length);
  for (let i = 0; i < tokenIds.length; i++) {
    const tokenId = tokenIds[i]!;
    if (!Number.isInteger(tokenId) || tokenId < 0 || tokenId > MAX_TOKEN_ID) {
      throw new Error(`samplers/kv/prefix-hash: tokenIds[${i}] = ${tokenId} is not a non-negative 32-bit integer`);
    }
    tokenBytes.writeInt32LE(tokenId, 4 * i);
  }
  hash.update(tokenBytes);
  return hash.digest('hex');
}
