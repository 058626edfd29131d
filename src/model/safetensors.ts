/**
 * safetensors read/write: named tensors (HF names, HF shapes, row-major Float32Array data)
 * between memory and one `.safetensors` file. Knows nothing about any model architecture.
 *
 * Layout (https://github.com/huggingface/safetensors):
 *   [8 bytes]  u64 little-endian N, the header length
 *   [N bytes]  JSON `{name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__"?: {string: string}}`
 *   [rest]     the data section; offsets are relative to its first byte; values little-endian, row-major.
 *
 * Reading opens the file once, parses and validates the whole header, then reads each tensor's
 * byte range with `fs.readSync` at its offset, so a 1-GB checkpoint never sits in memory twice.
 * F16 and BF16 are widened to F32 on read (tfjs trains in float32). The 8-bit types of quantized
 * checkpoints (I8, F8_E4M3) are kept as their bytes (`ByteTensor`): widening them would give back
 * the 4× memory quantization saves.
 *
 * Every error is a `CheckpointError` with one line naming the file and, where one is at fault,
 * the tensor: `safetensors: /path/model.safetensors: tensor model.norm.weight: data_offsets [0, 12]
 * out of range (data section is 8 bytes)`.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';

/** Element types this module reads. F16 and BF16 are converted to float32 on read; I8 and F8_E4M3 are kept as bytes. */
export type SafetensorsDtype = 'F32' | 'F16' | 'BF16' | ByteDtype;

/** 8-bit element types, read and written as raw bytes: signed integers, and FP8 E4M3 codes. */
export type ByteDtype = 'I8' | 'F8_E4M3';

/** One 8-bit tensor by value: HF shape and its row-major bytes (`bytes.length === prod(shape)`). */
export interface ByteTensor {
  dtype: ByteDtype;
  shape: number[];
  bytes: Uint8Array;
}

/** Element types this module writes. */
export type SafetensorsWriteDtype = 'F32' | 'BF16';

/** One tensor by value: HF shape and its row-major float32 values (`data.length === prod(shape)`). */
export interface NamedTensor {
  shape: number[];
  data: Float32Array;
}

/** One header entry, validated against the file it came from. */
export interface SafetensorsTensorInfo {
  dtype: SafetensorsDtype;
  shape: number[];
  /** Byte range `[begin, end)` relative to the start of the data section. */
  dataOffsets: [number, number];
}

/** A parsed and validated safetensors header. */
export interface SafetensorsHeader {
  /** Entries in header order (JSON object order). */
  tensors: Map<string, SafetensorsTensorInfo>;
  /** The `__metadata__` string map; `{}` when absent. */
  metadata: Record<string, string>;
  /** Absolute byte position of the data section (8 + header length). */
  dataStart: number;
  /** Size of the whole file in bytes. */
  fileSize: number;
}

/** Bad or unreadable checkpoint input: a one-line message naming the file and tensor. */
export class CheckpointError extends Error {
  override name = 'CheckpointError';
}

/** Bytes per element of each supported dtype. */
export const DTYPE_BYTES: Readonly<Record<SafetensorsDtype, number>> = { F32: 4, F16: 2, BF16: 2, I8: 1, F8_E4M3: 1 };

function isByteDtype(dtype: SafetensorsDtype): dtype is ByteDtype {
  return dtype === 'I8' || dtype === 'F8_E4M3';
}

const METADATA_KEY = '__metadata__';
/** HF's reader refuses headers above 100 MB; a larger length field means a corrupt file. */
const MAX_HEADER_BYTES = 100_000_000;
/** `fs.readSync`/`writeSync` move at most 2^31 − 1 bytes per call; stay well under. */
const IO_CHUNK_BYTES = 1 << 30;
/** Float32Array/Uint16Array views over file bytes assume a little-endian host, as tfjs itself does. */
const HOST_IS_LITTLE_ENDIAN = os.endianness() === 'LE';

function fail(path: string, message: string): never {
  throw new CheckpointError(`safetensors: ${path}: ${message}`);
}

function assertLittleEndianHost(path: string): void {
  if (!HOST_IS_LITTLE_ENDIAN) fail(path, 'big-endian hosts are not supported (safetensors data is little-endian)');
}

function formatShape(shape: readonly number[]): string {
  return `[${shape.join(', ')}]`;
}

/** Number of elements of `shape` (1 for a scalar `[]`). */
export function numElements(shape: readonly number[]): number {
  let count = 1;
  for (const dim of shape) count *= dim;
  return count;
}

function isValidShape(shape: unknown): shape is number[] {
  return Array.isArray(shape) && shape.every((dim) => Number.isSafeInteger(dim) && dim >= 0);
}

/** Reads exactly `target.length` bytes at `position`, looping over short reads and the 2-GB call limit. */
function readFully(path: string, fd: number, target: Uint8Array, position: number): void {
  let done = 0;
  while (done < target.length) {
    const length = Math.min(IO_CHUNK_BYTES, target.length - done);
    const numRead = fs.readSync(fd, target, done, length, position + done);
    if (numRead === 0) fail(path, `unexpected end of file at byte ${position + done}`);
    done += numRead;
  }
}

function writeFully(fd: number, source: Uint8Array): void {
  let done = 0;
  while (done < source.length) {
    const length = Math.min(IO_CHUNK_BYTES, source.length - done);
    done += fs.writeSync(fd, source, done, length);
  }
}

/** Parses and validates one header entry; `dataBytes` is the size of the data section. */
function parseEntry(path: string, name: string, raw: unknown, dataBytes: number): SafetensorsTensorInfo {
  const where = `tensor ${name}`;
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) fail(path, `${where}: header entry is not an object`);
  const entry = raw as Record<string, unknown>;
  const dtype = entry.dtype;
  if (typeof dtype !== 'string') fail(path, `${where}: dtype is missing or not a string`);
  if (!(dtype in DTYPE_BYTES)) fail(path, `${where}: unsupported dtype ${dtype} (supported: F32, F16, BF16, I8, F8_E4M3)`);
  const shape = entry.shape;
  if (!isValidShape(shape)) {
    fail(path, `${where}: shape ${JSON.stringify(shape)} must be an array of non-negative integers`);
  }
  const offsets = entry.data_offsets;
  if (!Array.isArray(offsets) || offsets.length !== 2 || !offsets.every((o) => Number.isSafeInteger(o) && o >= 0)) {
    fail(path, `${where}: data_offsets ${JSON.stringify(offsets)} must be two non-negative integers`);
  }
  const [begin, end] = offsets as [number, number];
  if (begin > end || end > dataBytes) {
    fail(path, `${where}: data_offsets [${begin}, ${end}] out of range (data section is ${dataBytes} bytes)`);
  }
  const typedDtype = dtype as SafetensorsDtype;
  const numBytesNeeded = numElements(shape) * DTYPE_BYTES[typedDtype];
  if (end - begin !== numBytesNeeded) {
    fail(
      path,
      `${where}: data_offsets [${begin}, ${end}] hold ${end - begin} bytes but shape ${formatShape(shape)} ` +
        `of ${dtype} needs ${numBytesNeeded}`,
    );
  }
  return { dtype: typedDtype, shape: [...shape], dataOffsets: [begin, end] };
}

/** Rejects two non-empty tensors whose byte ranges intersect. */
function checkNoOverlap(path: string, tensors: Map<string, SafetensorsTensorInfo>): void {
  const ranges = [...tensors]
    .filter(([, info]) => info.dataOffsets[1] > info.dataOffsets[0])
    .sort(([, a], [, b]) => a.dataOffsets[0] - b.dataOffsets[0] || a.dataOffsets[1] - b.dataOffsets[1]);
  for (let i = 1; i < ranges.length; i++) {
    const [prevName, prev] = ranges[i - 1]!;
    const [name, info] = ranges[i]!;
    if (info.dataOffsets[0] < prev.dataOffsets[1]) {
      fail(
        path,
        `tensor ${name}: data_offsets [${info.dataOffsets.join(', ')}] overlap tensor ${prevName} ` +
          `[${prev.dataOffsets.join(', ')}]`,
      );
    }
  }
}

/** Reads and validates the header through an open descriptor. */
function readHeaderFromFd(path: string, fd: number): SafetensorsHeader {
  const fileSize = fs.fstatSync(fd).size;
  if (fileSize < 8) fail(path, `file is ${fileSize} bytes, shorter than the 8-byte header length field`);
  const lengthField = Buffer.alloc(8);
  readFully(path, fd, lengthField, 0);
  const headerLength = lengthField.readBigUInt64LE(0);
  if (headerLength > BigInt(fileSize - 8)) {
    fail(path, `header length ${headerLength} runs past the end of the file (file is ${fileSize} bytes)`);
  }
  const numHeaderBytes = Number(headerLength);
  if (numHeaderBytes > MAX_HEADER_BYTES) fail(path, `header length ${numHeaderBytes} exceeds ${MAX_HEADER_BYTES} bytes`);
  const headerBytes = Buffer.alloc(numHeaderBytes);
  readFully(path, fd, headerBytes, 8);
  let parsed: unknown;
  try {
    parsed = JSON.parse(headerBytes.toString('utf8'));
  } catch (err) {
    fail(path, `header is not valid JSON (${(err as Error).message.split('\n')[0]})`);
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) fail(path, 'header is not a JSON object');

  const dataStart = 8 + numHeaderBytes;
  const dataBytes = fileSize - dataStart;
  const tensors = new Map<string, SafetensorsTensorInfo>();
  let metadata: Record<string, string> = {};
  for (const [name, raw] of Object.entries(parsed as Record<string, unknown>)) {
    if (name === METADATA_KEY) {
      metadata = parseMetadata(path, raw);
      continue;
    }
    tensors.set(name, parseEntry(path, name, raw, dataBytes));
  }
  checkNoOverlap(path, tensors);
  return { tensors, metadata, dataStart, fileSize };
}

function parseMetadata(path: string, raw: unknown): Record<string, string> {
  if (raw === null) return {};
  if (typeof raw !== 'object' || Array.isArray(raw)) fail(path, `${METADATA_KEY} is not an object`);
  const metadata: Record<string, string> = {};
  for (const [key, value] of Object.entries(raw as Record<string, unknown>)) {
    if (typeof value !== 'string') fail(path, `${METADATA_KEY}.${key} is ${JSON.stringify(value)}, not a string`);
    metadata[key] = value;
  }
  return metadata;
}

function openForRead(path: string): number {
  try {
    return fs.openSync(path, 'r');
  } catch (err) {
    fail(path, `cannot open (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`);
  }
}

/** Parses and validates the header of `path` without reading any tensor data. */
export function readSafetensorsHeader(path: string): SafetensorsHeader {
  const fd = openForRead(path);
  try {
    return readHeaderFromFd(path, fd);
  } finally {
    fs.closeSync(fd);
  }
}

let halfToFloatTable: Float32Array | undefined;

/**
 * IEEE 754 binary16 bits → float32 value: sign · 2^(e−15) · (1 + m/1024) for normal numbers,
 * sign · 2^−14 · m/1024 for subnormals (e = 0), ±inf (m = 0) or NaN (m ≠ 0) for e = 31.
 */
export function halfBitsToFloat(bits: number): number {
  const sign = bits & 0x8000 ? -1 : 1;
  const exponent = (bits >> 10) & 0x1f;
  const mantissa = bits & 0x3ff;
  if (exponent === 0) return sign * mantissa * 2 ** -24;
  if (exponent === 0x1f) return mantissa === 0 ? sign * Infinity : NaN;
  return sign * (1 + mantissa / 1024) * 2 ** (exponent - 15);
}

/** All 65,536 half values, built once on first F16 read (256 KB). */
function getHalfToFloatTable(): Float32Array {
  if (!halfToFloatTable) {
    halfToFloatTable = new Float32Array(65536);
    for (let bits = 0; bits < 65536; bits++) halfToFloatTable[bits] = halfBitsToFloat(bits);
  }
  return halfToFloatTable;
}

/** Reads one tensor's bytes and widens them to float32. */
function readTensorData(path: string, fd: number, header: SafetensorsHeader, info: SafetensorsTensorInfo): Float32Array {
  const count = numElements(info.shape);
  const position = header.dataStart + info.dataOffsets[0];
  const values = new Float32Array(count);
  if (info.dtype === 'F32') {
    // Read straight into the result's memory: no intermediate copy.
    readFully(path, fd, new Uint8Array(values.buffer), position);
    return values;
  }
  const halves = new Uint16Array(count);
  readFully(path, fd, new Uint8Array(halves.buffer), position);
  if (info.dtype === 'BF16') {
    // bfloat16 is the top half of a float32: shift its bits into place.
    const words = new Uint32Array(values.buffer);
    for (let i = 0; i < count; i++) words[i] = halves[i]! << 16;
  } else {
    const table = getHalfToFloatTable();
    for (let i = 0; i < count; i++) values[i] = table[halves[i]!]!;
  }
  return values;
}

/**
 * Reads a safetensors file. With `names`, only those tensors are read (each must exist);
 * otherwise all. `tensors` holds float32 data whatever the stored float dtype (`dtypes` says what
 * it was); 8-bit tensors (I8, F8_E4M3) come back as bytes in `byteTensors` instead.
 */
export function readSafetensors(
  path: string,
  opts: { names?: Set<string> } = {},
): {
  tensors: Map<string, NamedTensor>;
  byteTensors: Map<string, ByteTensor>;
  dtypes: Map<string, SafetensorsDtype>;
  metadata: Record<string, string>;
} {
  assertLittleEndianHost(path);
  const fd = openForRead(path);
  try {
    const header = readHeaderFromFd(path, fd);
    if (opts.names) {
      for (const name of opts.names) {
        if (!header.tensors.has(name)) fail(path, `tensor ${name} not found (file holds ${header.tensors.size} tensors)`);
      }
    }
    const tensors = new Map<string, NamedTensor>();
    const byteTensors = new Map<string, ByteTensor>();
    const dtypes = new Map<string, SafetensorsDtype>();
    for (const [name, info] of header.tensors) {
      if (opts.names && !opts.names.has(name)) continue;
      if (isByteDtype(info.dtype)) {
        const bytes = new Uint8Array(numElements(info.shape));
        readFully(path, fd, bytes, header.dataStart + info.dataOffsets[0]);
        byteTensors.set(name, { dtype: info.dtype, shape: [...info.shape], bytes });
      } else {
        tensors.set(name, { shape: [...info.shape], data: readTensorData(path, fd, header, info) });
      }
      dtypes.set(name, info.dtype);
    }
    return { tensors, byteTensors, dtypes, metadata: header.metadata };
  } finally {
    fs.closeSync(fd);
  }
}

/**
 * float32 → bfloat16 bits with round-to-nearest-even: add 0x7FFF plus the lowest kept bit,
 * then truncate. Overflow rounds to ±inf as IEEE requires; NaN stays a (quiet) NaN with its sign,
 * which the rounding add alone could turn into inf.
 */
export function floatBitsToBf16Bits(floatBits: number): number {
  const bits = floatBits >>> 0;
  if ((bits & 0x7fffffff) > 0x7f800000) return ((bits >>> 16) | 0x0040) & 0xffff;
  return ((bits + 0x7fff + ((bits >>> 16) & 1)) >>> 16) & 0xffff;
}

/** Float32Array → BF16 bits, element by element (see `floatBitsToBf16Bits`). */
export function float32ToBf16(values: Float32Array): Uint16Array {
  const words = new Uint32Array(values.buffer, values.byteOffset, values.length);
  const halves = new Uint16Array(values.length);
  for (let i = 0; i < values.length; i++) halves[i] = floatBitsToBf16Bits(words[i]!);
  return halves;
}

/** The header bytes `writeSafetensors` produces: JSON padded with spaces to a multiple of 8. */
function buildHeader(
  names: string[],
  tensors: Map<string, NamedTensor>,
  byteTensors: Map<string, ByteTensor>,
  dtype: SafetensorsWriteDtype,
  metadata: Record<string, string> | undefined,
): Buffer {
  const header: Record<string, unknown> = {};
  if (metadata && Object.keys(metadata).length > 0) header[METADATA_KEY] = metadata;
  let offset = 0;
  for (const name of names) {
    const byteTensor = byteTensors.get(name);
    const entryDtype = byteTensor ? byteTensor.dtype : dtype;
    const shape = byteTensor ? byteTensor.shape : tensors.get(name)!.shape;
    const numBytes = numElements(shape) * DTYPE_BYTES[entryDtype];
    header[name] = { dtype: entryDtype, shape, data_offsets: [offset, offset + numBytes] };
    offset += numBytes;
  }
  const json = Buffer.from(JSON.stringify(header), 'utf8');
  const paddedLength = Math.ceil(json.length / 8) * 8;
  return Buffer.concat([json, Buffer.alloc(paddedLength - json.length, 0x20)]);
}

/** Validates tensors for writing and builds the length field and header; `where` names the target in errors. */
function prepareWrite(
  where: string,
  tensors: Map<string, NamedTensor>,
  opts: WriteOptions,
): { names: string[]; dtype: SafetensorsWriteDtype; byteTensors: Map<string, ByteTensor>; lengthField: Buffer; header: Buffer } {
  assertLittleEndianHost(where);
  const dtype = opts.dtype ?? 'F32';
  if (dtype !== 'F32' && dtype !== 'BF16') fail(where, `cannot write dtype ${String(dtype)} (supported: F32, BF16)`);
  for (const [key, value] of Object.entries(opts.metadata ?? {})) {
    if (typeof value !== 'string') fail(where, `${METADATA_KEY}.${key} is ${JSON.stringify(value)}, not a string`);
  }
  const byteTensors = opts.byteTensors ?? new Map<string, ByteTensor>();
  for (const [name, { dtype: byteDtype, shape, bytes }] of byteTensors) {
    if (tensors.has(name)) fail(where, `tensor ${name}: given both as float32 and as ${byteDtype} bytes`);
    if (name === METADATA_KEY) fail(where, `tensor name ${METADATA_KEY} is reserved`);
    if (byteDtype !== 'I8' && byteDtype !== 'F8_E4M3') fail(where, `tensor ${name}: cannot write dtype ${String(byteDtype)} as bytes (supported: I8, F8_E4M3)`);
    if (!isValidShape(shape)) fail(where, `tensor ${name}: shape ${JSON.stringify(shape)} must be an array of non-negative integers`);
    if (!(bytes instanceof Uint8Array)) fail(where, `tensor ${name}: bytes is not a Uint8Array`);
    if (bytes.length !== numElements(shape)) {
      fail(where, `tensor ${name}: ${bytes.length} bytes but shape ${formatShape(shape)} of ${byteDtype} needs ${numElements(shape)}`);
    }
  }
  const names = [...tensors.keys(), ...byteTensors.keys()].sort();
  for (const name of names) {
    if (byteTensors.has(name)) continue;
    if (name === METADATA_KEY) fail(where, `tensor name ${METADATA_KEY} is reserved`);
    const { shape, data } = tensors.get(name)!;
    if (!isValidShape(shape)) fail(where, `tensor ${name}: shape ${JSON.stringify(shape)} must be an array of non-negative integers`);
    if (!(data instanceof Float32Array)) fail(where, `tensor ${name}: data is not a Float32Array`);
    if (data.length !== numElements(shape)) {
      fail(where, `tensor ${name}: data has ${data.length} values but shape ${formatShape(shape)} needs ${numElements(shape)}`);
    }
  }
  const header = buildHeader(names, tensors, byteTensors, dtype, opts.metadata);
  const lengthField = Buffer.alloc(8);
  lengthField.writeBigUInt64LE(BigInt(header.length), 0);
  return { names, dtype, byteTensors, lengthField, header };
}

/** Options of `writeSafetensors` / `encodeSafetensors`. */
export interface WriteOptions {
  /** Stored type of the float32 `tensors`: F32 (default) or BF16. */
  dtype?: SafetensorsWriteDtype;
  metadata?: Record<string, string>;
  /** 8-bit tensors written as their bytes (quantized weights), next to the float ones; names must differ. */
  byteTensors?: Map<string, ByteTensor>;
}

/** The stored bytes of one tensor (float32 data encoded as `dtype`, or an 8-bit tensor's own bytes). */
function tensorBytes(name: string, tensors: Map<string, NamedTensor>, byteTensors: Map<string, ByteTensor>, dtype: SafetensorsWriteDtype): Uint8Array {
  const byteTensor = byteTensors.get(name);
  if (byteTensor) return byteTensor.bytes;
  const data = tensors.get(name)!.data;
  const encoded = dtype === 'F32' ? data : float32ToBf16(data);
  return new Uint8Array(encoded.buffer, encoded.byteOffset, encoded.byteLength);
}

/**
 * The bytes of a safetensors file holding `tensors`, for writing inside a larger atomic save
 * (optimizer state next to the weights). Same layout and validation as `writeSafetensors`.
 */
export function encodeSafetensors(tensors: Map<string, NamedTensor>, opts: WriteOptions & { name?: string } = {}): Buffer {
  const { names, dtype, byteTensors, lengthField, header } = prepareWrite(opts.name ?? 'safetensors buffer', tensors, opts);
  const parts: Uint8Array[] = [lengthField, header];
  for (const name of names) parts.push(tensorBytes(name, tensors, byteTensors, dtype));
  return Buffer.concat(parts);
}

/**
 * Writes `tensors` to `path` in safetensors format, sorted by name and contiguous, as `dtype`
 * (default F32; BF16 rounds to nearest even). Everything is validated before the file is opened;
 * if writing fails part-way, the partial file is removed.
 */
export function writeSafetensors(path: string, tensors: Map<string, NamedTensor>, opts: WriteOptions = {}): void {
  const { names, dtype, byteTensors, lengthField, header } = prepareWrite(path, tensors, opts);
  const fd = fs.openSync(path, 'w');
  let written = false;
  try {
    writeFully(fd, lengthField);
    writeFully(fd, header);
    for (const name of names) writeFully(fd, tensorBytes(name, tensors, byteTensors, dtype));
    written = true;
  } finally {
    fs.closeSync(fd);
    if (!written) fs.rmSync(path, { force: true });
  }
}
