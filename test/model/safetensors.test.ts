import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import {
  CheckpointError,
  floatBitsToBf16Bits,
  halfBitsToFloat,
  readSafetensors,
  readSafetensorsHeader,
  writeSafetensors,
  type NamedTensor,
} from '../../src/model/safetensors.js';

const tmpRoot = fs.mkdtempSync(path.join(os.tmpdir(), 'tfalign-safetensors-'));
afterAll(() => fs.rmSync(tmpRoot, { recursive: true, force: true }));

let fileCounter = 0;
function tmpFile(): string {
  return path.join(tmpRoot, `t${fileCounter++}.safetensors`);
}

/** Builds a file by hand: u64 LE header length (or `lengthOverride`), header text, data bytes. */
function craftFile(header: unknown, data: Uint8Array, lengthOverride?: bigint): string {
  const headerBytes = Buffer.from(typeof header === 'string' ? header : JSON.stringify(header), 'utf8');
  const lengthField = Buffer.alloc(8);
  lengthField.writeBigUInt64LE(lengthOverride ?? BigInt(headerBytes.length));
  const file = tmpFile();
  fs.writeFileSync(file, Buffer.concat([lengthField, headerBytes, data]));
  return file;
}

function f32Bytes(values: number[]): Uint8Array {
  return new Uint8Array(new Float32Array(values).buffer);
}

function u16Bytes(bits: number[]): Uint8Array {
  const buffer = Buffer.alloc(bits.length * 2);
  bits.forEach((b, i) => buffer.writeUInt16LE(b, i * 2));
  return buffer;
}

function bitsOf(data: Float32Array): number[] {
  return Array.from(new Uint32Array(data.buffer, data.byteOffset, data.length));
}

function tensor(shape: number[], values: number[]): NamedTensor {
  return { shape, data: new Float32Array(values) };
}

/** The thrown error: a one-line CheckpointError. */
function errorOf(fn: () => unknown): CheckpointError {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(CheckpointError);
    expect((err as Error).message).not.toContain('\n');
    return err as CheckpointError;
  }
  throw new Error('expected a throw');
}

describe('F32 round trip', () => {
  it('returns every value bit for bit, including -0, subnormals, inf, NaN, scalars and empty tensors', () => {
    const file = tmpFile();
    const weird = [-0, 1.4e-45, -3.4028234663852886e38, Infinity, -Infinity, NaN, 0.1, 123456.789];
    const tensors = new Map<string, NamedTensor>([
      ['model.layers.0.mlp.up_proj.weight', tensor([2, 4], weird)],
      ['model.norm.weight', tensor([3], [1, 2, 3])],
      ['scalar', tensor([], [7.5])],
      ['empty', tensor([0, 4], [])],
    ]);
    writeSafetensors(file, tensors, { metadata: { format: 'pt', note: 'hi' } });
    const read = readSafetensors(file);
    expect([...read.tensors.keys()]).toEqual(['empty', 'model.layers.0.mlp.up_proj.weight', 'model.norm.weight', 'scalar']);
    for (const [name, original] of tensors) {
      const back = read.tensors.get(name)!;
      expect(back.shape).toEqual(original.shape);
      expect(bitsOf(back.data)).toEqual(bitsOf(original.data));
      expect(read.dtypes.get(name)).toBe('F32');
    }
    expect(read.metadata).toEqual({ format: 'pt', note: 'hi' });
  });

  it('reads only the requested names, and names a requested tensor that is absent', () => {
    const file = tmpFile();
    writeSafetensors(file, new Map([['a', tensor([1], [1])], ['b', tensor([2], [2, 3])]]));
    const read = readSafetensors(file, { names: new Set(['b']) });
    expect([...read.tensors.keys()]).toEqual(['b']);
    expect(Array.from(read.tensors.get('b')!.data)).toEqual([2, 3]);
    expect(errorOf(() => readSafetensors(file, { names: new Set(['c']) })).message).toBe(
      `safetensors: ${file}: tensor c not found (file holds 2 tensors)`,
    );
  });
});

describe('byte layout written', () => {
  it('writes the u64 LE length, space-padded JSON with sorted contiguous offsets, then LE data', () => {
    const file = tmpFile();
    // Inserted out of order: the writer sorts by name.
    writeSafetensors(file, new Map([['b', tensor([1], [2.5])], ['a', tensor([2], [1, -1])]]), {
      metadata: { format: 'pt' },
    });
    const bytes = fs.readFileSync(file);
    const headerLength = Number(bytes.readBigUInt64LE(0));
    const json = '{"__metadata__":{"format":"pt"},"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}}';
    // 139 bytes of JSON padded with 5 spaces to 144, the next multiple of 8.
    expect(json.length).toBe(139);
    expect(headerLength).toBe(144);
    expect(bytes.subarray(8, 8 + json.length).toString('utf8')).toBe(json);
    expect(bytes.subarray(8 + json.length, 8 + headerLength).toString('utf8')).toBe(' '.repeat(5));
    expect(bytes.length).toBe(8 + 144 + 12);
    expect([0, 1, 2].map((i) => bytes.readFloatLE(8 + 144 + 4 * i))).toEqual([1, -1, 2.5]);

    const header = readSafetensorsHeader(file);
    expect(header.dataStart).toBe(152);
    expect(header.fileSize).toBe(164);
    expect(header.metadata).toEqual({ format: 'pt' });
    expect(header.tensors.get('b')).toEqual({ dtype: 'F32', shape: [1], dataOffsets: [8, 12] });
  });

  it('omits __metadata__ when none is given and still pads to a multiple of 8', () => {
    const file = tmpFile();
    writeSafetensors(file, new Map([['x', tensor([1], [1])]]));
    const bytes = fs.readFileSync(file);
    const headerLength = Number(bytes.readBigUInt64LE(0));
    const json = '{"x":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}';
    expect(headerLength).toBe(56); // 54 → 56
    expect(bytes.subarray(8, 8 + headerLength).toString('utf8')).toBe(json + '  ');
  });
});

describe('BF16', () => {
  it('rounds float32 bits to nearest even, overflows to inf and keeps NaN a NaN', () => {
    expect(floatBitsToBf16Bits(0x3f800000)).toBe(0x3f80); // 1.0 exactly
    expect(floatBitsToBf16Bits(0x3f808000)).toBe(0x3f80); // halfway, kept bit 0 even → down
    expect(floatBitsToBf16Bits(0x3f818000)).toBe(0x3f82); // halfway, kept bit 1 odd → up
    expect(floatBitsToBf16Bits(0x3f808001)).toBe(0x3f81); // just above halfway → up
    expect(floatBitsToBf16Bits(0x3f807fff)).toBe(0x3f80); // just below halfway → down
    expect(floatBitsToBf16Bits(0xbf818000)).toBe(0xbf82); // sign does not matter
    expect(floatBitsToBf16Bits(0x7f7fffff)).toBe(0x7f80); // max float rounds to +inf
    expect(floatBitsToBf16Bits(0xff7fffff)).toBe(0xff80); // and -max to -inf
    expect(floatBitsToBf16Bits(0x7f800000)).toBe(0x7f80); // inf stays inf
    expect(floatBitsToBf16Bits(0x7f800001)).toBe(0x7fc0); // signalling NaN with low payload: NaN, not inf
    expect(floatBitsToBf16Bits(0xffc00000)).toBe(0xffc0); // negative quiet NaN
  });

  it('round-trips representable values exactly and others within 2^-8 relative', () => {
    const file = tmpFile();
    // All have at most 8 significant bits; the last is the subnormal bf16 0x0010 = 2^-130.
    const exact = [1, -2, 0.5, 3.140625, -0.0078125, 65536, 0, 2 ** -130];
    const inexact = [0.1, Math.PI, 1 / 3, -1e-3, 12345.678, 7e30];
    writeSafetensors(file, new Map([['exact', tensor([8], exact)], ['inexact', tensor([2, 3], inexact)], ['nan', tensor([1], [NaN])]]), {
      dtype: 'BF16',
    });
    const header = readSafetensorsHeader(file);
    expect(header.tensors.get('inexact')).toEqual({ dtype: 'BF16', shape: [2, 3], dataOffsets: [16, 28] });
    expect(header.fileSize - header.dataStart).toBe((8 + 6 + 1) * 2);

    const read = readSafetensors(file);
    expect(read.dtypes.get('exact')).toBe('BF16');
    expect(Array.from(read.tensors.get('exact')!.data)).toEqual(Array.from(new Float32Array(exact)));
    const back = read.tensors.get('inexact')!.data;
    inexact.forEach((value, i) => {
      expect(Math.abs(back[i]! - value) / Math.abs(value)).toBeLessThanOrEqual(2 ** -8);
      expect(back[i]).not.toBe(Math.fround(value)); // really rounded: none of these fit in 8 bits of mantissa
    });
    expect(Number.isNaN(read.tensors.get('nan')!.data[0])).toBe(true);
  });

  it('reads hand-made BF16 bytes as bf16 << 16', () => {
    // 0x3F80 = 1.0, 0xC049 = -3.140625, 0x7F80 = inf, 0x0001 = 2^-133 (a float32 subnormal).
    const file = craftFile({ w: { dtype: 'BF16', shape: [4], data_offsets: [0, 8] } }, u16Bytes([0x3f80, 0xc049, 0x7f80, 0x0001]));
    const data = readSafetensors(file).tensors.get('w')!.data;
    expect(Array.from(data)).toEqual([1, -3.140625, Infinity, 2 ** -133]);
  });
});

describe('F16 read', () => {
  it('decodes normal, subnormal, zero, inf and NaN half bit patterns', () => {
    const bits = [0x3c00, 0xc000, 0x7bff, 0x0001, 0x03ff, 0x0400, 0x7c00, 0xfc00, 0x8000, 0x3555, 0x7e00];
    const expected = [
      1, // 0x3C00: e=15, m=0
      -2, // 0xC000: sign, e=16
      65504, // 0x7BFF: largest half, (1 + 1023/1024)·2^15
      2 ** -24, // 0x0001: smallest subnormal, 5.96e-8
      1023 * 2 ** -24, // 0x03FF: largest subnormal
      2 ** -14, // 0x0400: smallest normal
      Infinity,
      -Infinity,
      -0,
      (1 + 0x155 / 1024) * 2 ** -2, // 0x3555 ≈ 0.33325
    ];
    const file = craftFile(
      { __metadata__: { format: 'pt' }, h: { dtype: 'F16', shape: [11], data_offsets: [0, 22] } },
      u16Bytes(bits),
    );
    const read = readSafetensors(file);
    expect(read.dtypes.get('h')).toBe('F16');
    const data = Array.from(read.tensors.get('h')!.data);
    expect(data.slice(0, 10)).toEqual(expected);
    expect(Object.is(data[8], -0)).toBe(true);
    expect(data[3]).toBeCloseTo(5.96e-8, 10);
    expect(Number.isNaN(data[10])).toBe(true);
    expect(halfBitsToFloat(0x3555)).toBeCloseTo(0.33325, 5);
  });
});

describe('corrupt files give one-line errors naming file and tensor', () => {
  const entry = (dtype: string, shape: unknown, offsets: unknown) => ({ dtype, shape, data_offsets: offsets });

  it('file shorter than the 8-byte length field', () => {
    const file = tmpFile();
    fs.writeFileSync(file, Buffer.from([1, 2, 3, 4, 5]));
    expect(errorOf(() => readSafetensors(file)).message).toBe(
      `safetensors: ${file}: file is 5 bytes, shorter than the 8-byte header length field`,
    );
  });

  it('header length past the end of the file', () => {
    const file = craftFile('{"x":1}', new Uint8Array(5), 1000n);
    expect(errorOf(() => readSafetensors(file)).message).toBe(
      `safetensors: ${file}: header length 1000 runs past the end of the file (file is 20 bytes)`,
    );
    const huge = craftFile('{}', new Uint8Array(0), 2n ** 63n);
    expect(errorOf(() => readSafetensorsHeader(huge)).message).toBe(
      `safetensors: ${huge}: header length 9223372036854775808 runs past the end of the file (file is 10 bytes)`,
    );
  });

  it('header that is not JSON, or not an object', () => {
    const file = craftFile('{"w": {"dtype": "F32",', new Uint8Array(0));
    expect(errorOf(() => readSafetensors(file)).message).toMatch(
      new RegExp(`^safetensors: ${file.replace(/[.\\]/g, '\\$&')}: header is not valid JSON \\(.+\\)$`),
    );
    const array = craftFile('[1, 2]', new Uint8Array(0));
    expect(errorOf(() => readSafetensors(array)).message).toBe(`safetensors: ${array}: header is not a JSON object`);
  });

  it('unsupported dtypes', () => {
    for (const dtype of ['I64', 'F64', 'U8']) {
      const file = craftFile({ 'model.embed_tokens.weight': entry(dtype, [1], [0, 8]) }, new Uint8Array(8));
      expect(errorOf(() => readSafetensors(file)).message).toBe(
        `safetensors: ${file}: tensor model.embed_tokens.weight: unsupported dtype ${dtype} (supported: F32, F16, BF16, I8, F8_E4M3)`,
      );
    }
  });

  it('data_offsets out of range or reversed', () => {
    const file = craftFile({ 'model.norm.weight': entry('F32', [3], [0, 12]) }, new Uint8Array(8));
    expect(errorOf(() => readSafetensors(file)).message).toBe(
      `safetensors: ${file}: tensor model.norm.weight: data_offsets [0, 12] out of range (data section is 8 bytes)`,
    );
    const reversed = craftFile({ w: entry('F32', [1], [8, 4]) }, new Uint8Array(8));
    expect(errorOf(() => readSafetensors(reversed)).message).toBe(
      `safetensors: ${reversed}: tensor w: data_offsets [8, 4] out of range (data section is 8 bytes)`,
    );
    const malformed = craftFile({ w: entry('F32', [1], [0]) }, new Uint8Array(4));
    expect(errorOf(() => readSafetensors(malformed)).message).toBe(
      `safetensors: ${malformed}: tensor w: data_offsets [0] must be two non-negative integers`,
    );
  });

  it('byte count that does not match the shape', () => {
    const file = craftFile({ w: entry('F32', [2, 3], [0, 12]) }, new Uint8Array(24));
    expect(errorOf(() => readSafetensors(file)).message).toBe(
      `safetensors: ${file}: tensor w: data_offsets [0, 12] hold 12 bytes but shape [2, 3] of F32 needs 24`,
    );
    const bf16 = craftFile({ w: entry('BF16', [4], [0, 16]) }, new Uint8Array(16));
    expect(errorOf(() => readSafetensors(bf16)).message).toBe(
      `safetensors: ${bf16}: tensor w: data_offsets [0, 16] hold 16 bytes but shape [4] of BF16 needs 8`,
    );
  });

  it('overlapping tensors', () => {
    const file = craftFile({ a: entry('F32', [2], [0, 8]), b: entry('F32', [2], [4, 12]) }, new Uint8Array(12));
    expect(errorOf(() => readSafetensors(file)).message).toBe(
      `safetensors: ${file}: tensor b: data_offsets [4, 12] overlap tensor a [0, 8]`,
    );
    // An empty tensor sitting inside another's range holds no bytes, so it overlaps nothing.
    const empty = craftFile({ a: entry('F32', [2], [0, 8]), e: entry('F32', [0], [4, 4]) }, f32Bytes([1, 2]));
    expect(Array.from(readSafetensors(empty).tensors.get('a')!.data)).toEqual([1, 2]);
  });

  it('shapes with negative or fractional entries', () => {
    const file = craftFile({ w: entry('F32', [2, -1], [0, 8]) }, new Uint8Array(8));
    expect(errorOf(() => readSafetensors(file)).message).toBe(
      `safetensors: ${file}: tensor w: shape [2,-1] must be an array of non-negative integers`,
    );
    const fractional = craftFile({ w: entry('F32', [1.5], [0, 8]) }, new Uint8Array(8));
    expect(errorOf(() => readSafetensors(fractional)).message).toBe(
      `safetensors: ${fractional}: tensor w: shape [1.5] must be an array of non-negative integers`,
    );
  });

  it('metadata that is not a string map, and a missing file', () => {
    const file = craftFile({ __metadata__: { format: 3 } }, new Uint8Array(0));
    expect(errorOf(() => readSafetensors(file)).message).toBe(`safetensors: ${file}: __metadata__.format is 3, not a string`);
    const missing = path.join(tmpRoot, 'nope.safetensors');
    expect(errorOf(() => readSafetensors(missing)).message).toBe(`safetensors: ${missing}: cannot open (ENOENT)`);
  });
});

describe('writer validation', () => {
  it('rejects data whose length does not match the shape, before creating the file', () => {
    const file = tmpFile();
    const tensors = new Map([['ok', tensor([1], [1])], ['w', tensor([2, 3], [1, 2, 3, 4, 5])]]);
    expect(errorOf(() => writeSafetensors(file, tensors)).message).toBe(
      `safetensors: ${file}: tensor w: data has 5 values but shape [2, 3] needs 6`,
    );
    expect(fs.existsSync(file)).toBe(false);
  });

  it('rejects negative shapes and the reserved name', () => {
    const file = tmpFile();
    expect(errorOf(() => writeSafetensors(file, new Map([['w', tensor([-1], [])]]))).message).toBe(
      `safetensors: ${file}: tensor w: shape [-1] must be an array of non-negative integers`,
    );
    expect(errorOf(() => writeSafetensors(file, new Map([['__metadata__', tensor([1], [1])]]))).message).toBe(
      `safetensors: ${file}: tensor name __metadata__ is reserved`,
    );
  });
});
