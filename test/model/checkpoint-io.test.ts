import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import {
  copyTokenizerFiles,
  loadTensorsFromFolder,
  readJsonFile,
  saveFolder,
  shardFileName,
} from '../../src/model/checkpoint-io.js';
import { CheckpointError, readSafetensorsHeader, type NamedTensor } from '../../src/model/safetensors.js';
import { OUTPUT_MARKER } from '../../src/util/atomic.js';

/** A folder's entries without the output marker saveFolder/writeTokenizerFolder add (`src/util/atomic.ts`). */
const outputFiles = (dir: string) => fs.readdirSync(dir).filter((name) => name !== OUTPUT_MARKER).sort();

const tmpRoot = fs.mkdtempSync(path.join(os.tmpdir(), 'tfalign-checkpoint-'));
afterAll(() => fs.rmSync(tmpRoot, { recursive: true, force: true }));

/** A fresh empty parent folder, so sibling `.tmp-`/`.old-` folders can be counted. */
function freshParent(): string {
  return fs.mkdtempSync(path.join(tmpRoot, 'p-'));
}

function tensor(shape: number[], values: number[]): NamedTensor {
  return { shape, data: new Float32Array(values) };
}

function asPlain(tensors: Map<string, NamedTensor>): Record<string, { shape: number[]; data: number[] }> {
  return Object.fromEntries([...tensors].map(([name, t]) => [name, { shape: t.shape, data: Array.from(t.data) }]));
}

async function rejectionOf(promise: Promise<unknown>): Promise<CheckpointError> {
  try {
    await promise;
  } catch (err) {
    expect(err).toBeInstanceOf(CheckpointError);
    expect((err as Error).message).not.toContain('\n');
    return err as CheckpointError;
  }
  throw new Error('expected a rejection');
}

const config = { architectures: ['LlamaForCausalLM'], hidden_size: 4, num_hidden_layers: 1, torch_dtype: 'bfloat16' };

/** Sorted names: a 16 B, b 8 B, c 12 B, d 4 B in F32 (40 B in all). */
function smallModel(): Map<string, NamedTensor> {
  return new Map([
    ['d', tensor([1], [4])],
    ['a', tensor([2, 2], [1, 2, 3, 4.25])],
    ['c', tensor([3], [-1, 0.5, 7])],
    ['b', tensor([2], [8, 9])],
  ]);
}

describe('single-file folders', () => {
  it('saves config.json (2-space JSON, torch_dtype float32) and model.safetensors, and loads them back', async () => {
    const dir = path.join(freshParent(), 'ckpt');
    await saveFolder(dir, { tensors: smallModel(), config, files: { 'tokenizer.json': '{"v":1}' } });
    expect(outputFiles(dir)).toEqual(['config.json', 'model.safetensors', 'tokenizer.json']);
    expect(fs.readFileSync(path.join(dir, 'config.json'), 'utf8')).toBe(
      `${JSON.stringify({ ...config, torch_dtype: 'float32' }, null, 2)}\n`,
    );
    expect(readSafetensorsHeader(path.join(dir, 'model.safetensors')).metadata).toEqual({ format: 'pt' });
    const loaded = await loadTensorsFromFolder(dir);
    expect(asPlain(loaded.tensors)).toEqual(asPlain(smallModel()));
    expect([...loaded.dtypes.values()]).toEqual(['F32', 'F32', 'F32', 'F32']);
  });

  it('saves BF16 with torch_dtype bfloat16 (and the newer `dtype` key when the config has it)', async () => {
    const dir = path.join(freshParent(), 'ckpt');
    await saveFolder(dir, { tensors: smallModel(), config: { ...config, dtype: 'float32' }, dtype: 'BF16' });
    const written = readJsonFile(path.join(dir, 'config.json')) as Record<string, unknown>;
    expect(written.torch_dtype).toBe('bfloat16');
    expect(written.dtype).toBe('bfloat16');
    const loaded = await loadTensorsFromFolder(dir);
    // Every value of smallModel has at most 8 significant bits, so bf16 keeps it exactly.
    expect(asPlain(loaded.tensors)).toEqual(asPlain(smallModel()));
    expect(loaded.dtypes.get('a')).toBe('BF16');
    const header = readSafetensorsHeader(path.join(dir, 'model.safetensors'));
    expect(header.fileSize - header.dataStart).toBe(20); // 10 values × 2 bytes
  });
});

describe('sharded folders', () => {
  it('splits greedily by sorted name, writes the HF index, and loads back', async () => {
    const dir = path.join(freshParent(), 'ckpt');
    // 40 B > 20 B: a(16) | b(8)+c(12)=20 | d(4).
    await saveFolder(dir, { tensors: smallModel(), config, maxShardBytes: 20 });
    expect(outputFiles(dir)).toEqual([
      'config.json',
      'model-00001-of-00003.safetensors',
      'model-00002-of-00003.safetensors',
      'model-00003-of-00003.safetensors',
      'model.safetensors.index.json',
    ]);
    expect(readJsonFile(path.join(dir, 'model.safetensors.index.json'))).toEqual({
      metadata: { total_size: 40 },
      weight_map: {
        a: 'model-00001-of-00003.safetensors',
        b: 'model-00002-of-00003.safetensors',
        c: 'model-00002-of-00003.safetensors',
        d: 'model-00003-of-00003.safetensors',
      },
    });
    expect([...readSafetensorsHeader(path.join(dir, 'model-00002-of-00003.safetensors')).tensors.keys()]).toEqual(['b', 'c']);
    const loaded = await loadTensorsFromFolder(dir);
    expect(asPlain(loaded.tensors)).toEqual(asPlain(smallModel()));
  });

  it('gives a tensor larger than the limit its own shard, and does not shard at exactly the limit', async () => {
    const parent = freshParent();
    const big = new Map([['a', tensor([1], [1])], ['big', tensor([10], Array.from({ length: 10 }, (_, i) => i))], ['c', tensor([1], [3])]]);
    await saveFolder(path.join(parent, 'big'), { tensors: big, config, maxShardBytes: 8 });
    const index = readJsonFile(path.join(parent, 'big', 'model.safetensors.index.json')) as { weight_map: Record<string, string> };
    expect(index.weight_map).toEqual({ a: shardFileName(0, 3), big: shardFileName(1, 3), c: shardFileName(2, 3) });
    expect(asPlain((await loadTensorsFromFolder(path.join(parent, 'big'))).tensors)).toEqual(asPlain(big));

    // BF16 halves the 40 B to 20 B, which is not more than 20.
    await saveFolder(path.join(parent, 'exact'), { tensors: smallModel(), config, maxShardBytes: 20, dtype: 'BF16' });
    expect(outputFiles(path.join(parent, 'exact'))).toEqual(['config.json', 'model.safetensors']);
  });

  it('reads only the tensors the index lists from each shard', async () => {
    const dir = path.join(freshParent(), 'ckpt');
    await saveFolder(dir, { tensors: smallModel(), config, maxShardBytes: 20 });
    const indexPath = path.join(dir, 'model.safetensors.index.json');
    const index = readJsonFile(indexPath) as { weight_map: Record<string, string> };
    delete index.weight_map.c;
    fs.writeFileSync(indexPath, JSON.stringify(index));
    expect([...(await loadTensorsFromFolder(dir)).tensors.keys()].sort()).toEqual(['a', 'b', 'd']);
  });
});

describe('loading errors', () => {
  it('names a missing folder, an empty folder and a pytorch_model.bin-only folder', async () => {
    const parent = freshParent();
    const missing = path.join(parent, 'nope');
    expect((await rejectionOf(loadTensorsFromFolder(missing))).message).toBe(`checkpoint: ${missing}: no such directory`);
    const empty = path.join(parent, 'empty');
    fs.mkdirSync(empty);
    expect((await rejectionOf(loadTensorsFromFolder(empty))).message).toBe(
      `checkpoint: ${empty}: no model.safetensors or model.safetensors.index.json`,
    );
    const pickle = path.join(parent, 'pickle');
    fs.mkdirSync(pickle);
    fs.writeFileSync(path.join(pickle, 'pytorch_model.bin'), 'x');
    expect((await rejectionOf(loadTensorsFromFolder(pickle))).message).toMatch(
      /^checkpoint: .*pickle: holds only pytorch_model\.bin \(PyTorch pickle\).*convert it to safetensors first/,
    );
  });

  it('points at the .old- folder a save interrupted between its renames left behind', async () => {
    const parent = freshParent();
    const dir = path.join(parent, 'ckpt');
    fs.mkdirSync(`${dir}.old-123-abcd`);
    expect((await rejectionOf(loadTensorsFromFolder(dir))).message).toBe(
      `checkpoint: ${dir}: no such directory (an interrupted save left ${dir}.old-123-abcd; rename it back to ${dir})`,
    );
  });

  it('names a shard the index lists that is missing, and a tensor missing from its shard', async () => {
    const dir = path.join(freshParent(), 'ckpt');
    await saveFolder(dir, { tensors: smallModel(), config, maxShardBytes: 20 });
    const indexPath = path.join(dir, 'model.safetensors.index.json');
    const index = readJsonFile(indexPath) as { weight_map: Record<string, string> };

    fs.writeFileSync(indexPath, JSON.stringify({ ...index, weight_map: { ...index.weight_map, z: 'model-00001-of-00003.safetensors' } }));
    expect((await rejectionOf(loadTensorsFromFolder(dir))).message).toBe(
      `checkpoint: ${dir}: tensor z listed in model.safetensors.index.json is missing from model-00001-of-00003.safetensors`,
    );

    fs.writeFileSync(indexPath, JSON.stringify(index));
    fs.rmSync(path.join(dir, 'model-00003-of-00003.safetensors'));
    expect((await rejectionOf(loadTensorsFromFolder(dir))).message).toBe(
      `checkpoint: ${dir}: shard model-00003-of-00003.safetensors listed in model.safetensors.index.json is missing`,
    );
  });

  it('rejects an index that is not JSON, lacks weight_map, or points outside the folder', async () => {
    const dir = path.join(freshParent(), 'ckpt');
    fs.mkdirSync(dir);
    const indexPath = path.join(dir, 'model.safetensors.index.json');
    fs.writeFileSync(indexPath, '{"weight_map": ');
    expect((await rejectionOf(loadTensorsFromFolder(dir))).message).toMatch(
      /^checkpoint: .*model\.safetensors\.index\.json: not valid JSON \(.+\)$/,
    );
    fs.writeFileSync(indexPath, '{"metadata": {}}');
    expect((await rejectionOf(loadTensorsFromFolder(dir))).message).toBe(
      `checkpoint: ${indexPath}: weight_map is missing or not an object`,
    );
    fs.writeFileSync(indexPath, JSON.stringify({ weight_map: { w: '../model.safetensors' } }));
    expect((await rejectionOf(loadTensorsFromFolder(dir))).message).toBe(
      `checkpoint: ${indexPath}: weight_map.w is "../model.safetensors", not a shard file name`,
    );
  });

  it('passes safetensors errors through, naming the shard file', async () => {
    const dir = path.join(freshParent(), 'ckpt');
    fs.mkdirSync(dir);
    fs.writeFileSync(path.join(dir, 'model.safetensors'), Buffer.from([1, 2, 3]));
    expect((await rejectionOf(loadTensorsFromFolder(dir))).message).toBe(
      `safetensors: ${path.join(dir, 'model.safetensors')}: file is 3 bytes, shorter than the 8-byte header length field`,
    );
  });
});

describe('readJsonFile', () => {
  it('parses, and names the file when it is missing or malformed', () => {
    const parent = freshParent();
    const good = path.join(parent, 'good.json');
    fs.writeFileSync(good, '{"a": [1, 2]}');
    expect(readJsonFile(good)).toEqual({ a: [1, 2] });
    const bad = path.join(parent, 'bad.json');
    fs.writeFileSync(bad, '{"a": ');
    expect(() => readJsonFile(bad)).toThrow(new RegExp(`^checkpoint: ${bad.replace(/[.\\]/g, '\\$&')}: not valid JSON \\(`));
    expect(() => readJsonFile(path.join(parent, 'none.json'))).toThrow(`checkpoint: ${path.join(parent, 'none.json')}: cannot read (ENOENT)`);
  });
});

describe('atomic save', () => {
  /** Siblings of `dir` other than `dir` itself: leftover `.tmp-`/`.old-` folders. */
  function strays(dir: string): string[] {
    return fs.readdirSync(path.dirname(dir)).filter((name) => name !== path.basename(dir));
  }

  async function saveVersionOne(dir: string): Promise<void> {
    await saveFolder(dir, {
      tensors: smallModel(),
      config,
      maxShardBytes: 20,
      files: { 'tokenizer.json': '{"v":1}', 'optimizer/state.bin': Buffer.from([1, 2, 3]) },
    });
  }

  it('replaces an existing folder completely and leaves nothing beside it', async () => {
    const dir = path.join(freshParent(), 'ckpt');
    await saveVersionOne(dir);
    const second = new Map([['w', tensor([2], [5, 6])]]);
    await saveFolder(dir, { tensors: second, config: { hidden_size: 2 } });
    // Shards, the index, the optimizer folder and tokenizer.json of version one are gone.
    expect(outputFiles(dir)).toEqual(['config.json', 'model.safetensors']);
    expect(asPlain((await loadTensorsFromFolder(dir)).tensors)).toEqual(asPlain(second));
    expect(readJsonFile(path.join(dir, 'config.json'))).toEqual({ hidden_size: 2, torch_dtype: 'float32' });
    expect(strays(dir)).toEqual([]);
  });

  it('leaves the previous folder intact when a tensor is invalid', async () => {
    const dir = path.join(freshParent(), 'ckpt');
    await saveVersionOne(dir);
    const before = outputFiles(dir);
    const bad = new Map([['w', tensor([2, 3], [1, 2, 3, 4, 5])]]);
    expect((await rejectionOf(saveFolder(dir, { tensors: bad, config }))).message).toBe(
      `checkpoint: ${dir}: tensor w: data has 5 values but shape [2, 3] needs 6`,
    );
    expect(outputFiles(dir)).toEqual(before);
    expect(asPlain((await loadTensorsFromFolder(dir)).tensors)).toEqual(asPlain(smallModel()));
    expect(strays(dir)).toEqual([]);
  });

  it('leaves the previous folder intact and no .tmp- folder when writing fails after the weights are on disk', async () => {
    const dir = path.join(freshParent(), 'ckpt');
    await saveVersionOne(dir);
    const before = outputFiles(dir);
    // Extra files are written after config and weights; `a/b` needs `a` to be a folder, but `a` was just written as a file.
    const failing = saveFolder(dir, { tensors: new Map([['w', tensor([1], [1])]]), config, files: { a: 'x', 'a/b': 'y' } });
    await expect(failing).rejects.toThrow(/EEXIST|ENOTDIR/);
    expect(outputFiles(dir)).toEqual(before);
    expect(fs.readFileSync(path.join(dir, 'tokenizer.json'), 'utf8')).toBe('{"v":1}');
    expect(asPlain((await loadTensorsFromFolder(dir)).tensors)).toEqual(asPlain(smallModel()));
    expect(strays(dir)).toEqual([]);
  });

  it('creates missing parents, and refuses reserved or escaping file names and a file in the way', async () => {
    const parent = freshParent();
    const nested = path.join(parent, 'x', 'y', 'ckpt');
    await saveFolder(nested, { tensors: smallModel(), config });
    expect(fs.existsSync(path.join(nested, 'model.safetensors'))).toBe(true);

    const dir = path.join(parent, 'other');
    const reserved = saveFolder(dir, { tensors: smallModel(), config, files: { 'config.json': '{}' } });
    expect((await rejectionOf(reserved)).message).toBe(`checkpoint: ${dir}: file config.json is written by saveFolder itself`);
    const escaping = saveFolder(dir, { tensors: smallModel(), config, files: { '../evil': 'x' } });
    expect((await rejectionOf(escaping)).message).toBe(`checkpoint: ${dir}: file "../evil" must be a relative path inside the checkpoint`);
    const file = path.join(parent, 'a-file');
    fs.writeFileSync(file, 'x');
    expect((await rejectionOf(saveFolder(file, { tensors: smallModel(), config }))).message).toBe(
      `checkpoint: ${file}: exists and is not a directory`,
    );
    expect(fs.readdirSync(parent).sort()).toEqual(['a-file', 'x']);
  });
});

describe('copyTokenizerFiles', () => {
  it('carries the tokenizer and generation files that exist, keeping entries already given', () => {
    const from = freshParent();
    fs.writeFileSync(path.join(from, 'tokenizer.json'), '{"model":{}}');
    fs.writeFileSync(path.join(from, 'generation_config.json'), '{"eos_token_id":2}');
    fs.writeFileSync(path.join(from, 'special_tokens_map.json'), '{}');
    fs.writeFileSync(path.join(from, 'model.safetensors'), 'not copied');
    const files: Record<string, string | Buffer> = { 'special_tokens_map.json': 'mine' };
    expect(copyTokenizerFiles(from, files)).toEqual(['tokenizer.json', 'generation_config.json']);
    expect(Object.keys(files).sort()).toEqual(['generation_config.json', 'special_tokens_map.json', 'tokenizer.json']);
    expect(files['special_tokens_map.json']).toBe('mine');
    expect(files['tokenizer.json']!.toString()).toBe('{"model":{}}');
  });
});
