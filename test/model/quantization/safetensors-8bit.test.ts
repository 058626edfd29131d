import { describe, expect, it } from 'vitest';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { encodeSafetensors, readSafetensors, writeSafetensors, type ByteTensor, type NamedTensor } from '../../../src/model/safetensors.js';
import { loadTensorsFromFolder, saveFolder } from '../../../src/model/checkpoint-io.js';

describe('safetensors I8 and F8_E4M3', () => {
  const floats = new Map<string, NamedTensor>([['a.weight_scale', { shape: [2, 1], data: Float32Array.of(0.5, 0.25) }]]);
  const bytes = new Map<string, ByteTensor>([
    ['a.weight', { dtype: 'F8_E4M3', shape: [2, 3], bytes: Uint8Array.of(0x38, 0xb8, 0x7e, 0x00, 0x80, 0x01) }],
    ['b.weight', { dtype: 'I8', shape: [3], bytes: Uint8Array.of(127, 0x81, 0) }], // 127, −127, 0
  ]);

  it('writes 8-bit tensors as their bytes with the right header and reads them back as bytes', () => {
    const file = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'st8-')), 'x.safetensors');
    writeSafetensors(file, floats, { byteTensors: bytes });
    const raw = fs.readFileSync(file);
    const headerLength = Number(raw.readBigUInt64LE(0));
    const header = JSON.parse(raw.subarray(8, 8 + headerLength).toString('utf8'));
    // sorted by name: a.weight (6 bytes), a.weight_scale (8 bytes), b.weight (3 bytes)
    expect(header['a.weight']).toEqual({ dtype: 'F8_E4M3', shape: [2, 3], data_offsets: [0, 6] });
    expect(header['a.weight_scale']).toEqual({ dtype: 'F32', shape: [2, 1], data_offsets: [6, 14] });
    expect(header['b.weight']).toEqual({ dtype: 'I8', shape: [3], data_offsets: [14, 17] });
    expect(Array.from(raw.subarray(8 + headerLength, 8 + headerLength + 6))).toEqual([0x38, 0xb8, 0x7e, 0x00, 0x80, 0x01]);
    const back = readSafetensors(file);
    expect(back.byteTensors.get('a.weight')).toEqual(bytes.get('a.weight'));
    expect(back.byteTensors.get('b.weight')).toEqual(bytes.get('b.weight'));
    expect(back.tensors.get('a.weight_scale')!.data).toEqual(Float32Array.of(0.5, 0.25));
    expect(back.tensors.has('a.weight')).toBe(false);
    expect(back.dtypes.get('b.weight')).toBe('I8');
    expect(encodeSafetensors(floats, { byteTensors: bytes }).equals(raw)).toBe(true);
  });

  it('refuses a name given twice and bytes that do not match the shape', () => {
    const dup = new Map<string, ByteTensor>([['a.weight_scale', { dtype: 'I8', shape: [2, 1], bytes: new Uint8Array(2) }]]);
    expect(() => encodeSafetensors(floats, { byteTensors: dup })).toThrow('safetensors: safetensors buffer: tensor a.weight_scale: given both as float32 and as I8 bytes');
    const short = new Map<string, ByteTensor>([['c', { dtype: 'F8_E4M3', shape: [4], bytes: new Uint8Array(3) }]]);
    expect(() => encodeSafetensors(floats, { byteTensors: short })).toThrow('tensor c: 3 bytes but shape [4] of F8_E4M3 needs 4');
  });

  it('shards a folder by stored bytes (1 per 8-bit value) and loads the shards back', async () => {
    const dir = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'st8-')), 'm');
    const big = new Map<string, ByteTensor>([
      ['p.weight', { dtype: 'I8', shape: [10], bytes: new Uint8Array(10).fill(3) }],
      ['q.weight', { dtype: 'I8', shape: [10], bytes: new Uint8Array(10).fill(4) }],
    ]);
    await saveFolder(dir, { tensors: new Map(), byteTensors: big, config: {}, maxShardBytes: 12 });
    expect(fs.existsSync(path.join(dir, 'model-00001-of-00002.safetensors'))).toBe(true);
    const index = JSON.parse(fs.readFileSync(path.join(dir, 'model.safetensors.index.json'), 'utf8'));
    expect(index.metadata.total_size).toBe(20);
    const loaded = await loadTensorsFromFolder(dir);
    expect(Array.from(loaded.byteTensors.get('q.weight')!.bytes)).toEqual(new Array(10).fill(4));
  });
});
