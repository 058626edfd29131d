/**
 * Hugging Face checkpoint folders on disk: `config.json`, `model.safetensors` or shards
 * `model-0000i-of-0000n.safetensors` with `model.safetensors.index.json`, and tokenizer files.
 * Moves named tensors only; what the names mean is the model code's business.
 *
 * Saving follows the output-folder policy of `src/util/atomic.ts`: a new folder is written and fsynced
 * in a sibling `DIR.tmp-<pid>-<random>` and renamed into place, so it appears complete or not at
 * all; an existing folder is written into only when it is empty or a previous output of the same
 * command (marker `.tfalign-output.json`), or with `overwrite`, and then each file is replaced by
 * a rename, files the previous save wrote and this one does not are removed, and nothing else is
 * touched (an earlier version swapped whole folders, deleting whatever else was in `DIR`; loading
 * still names a `DIR.old-…` folder such a save may have left).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import {
  CheckpointError,
  DTYPE_BYTES,
  numElements,
  readSafetensors,
  readSafetensorsHeader,
  writeSafetensors,
  type ByteTensor,
  type NamedTensor,
  type SafetensorsDtype,
  type SafetensorsWriteDtype,
} from './safetensors.js';
import { OUTPUT_MARKER, writeOutputFolder } from '../util/atomic.js';

export const SAFE_WEIGHTS_NAME = 'model.safetensors';
export const SAFE_WEIGHTS_INDEX_NAME = 'model.safetensors.index.json';
export const CONFIG_NAME = 'config.json';

/** Files besides weights and config that make a folder usable by HF tools; carried over on save when present. */
export const TOKENIZER_FILE_NAMES = [
  'tokenizer.json',
  'tokenizer_config.json',
  'special_tokens_map.json',
  'generation_config.json',
  'chat_template.jinja',
] as const;

/** transformers' default `max_shard_size` ("5GB", decimal). */
export const DEFAULT_MAX_SHARD_BYTES = 5_000_000_000;

/** What `saveFolder` writes. */
export interface SaveFolderContents {
  /** Tensors by HF name, HF shape, row-major float32 values. */
  tensors: Map<string, NamedTensor>;
  /** 8-bit tensors (quantized weights) by HF name, written as their bytes whatever `dtype` says. */
  byteTensors?: Map<string, ByteTensor>;
  /** The HF `config.json` object; `torch_dtype` is set to match `dtype`. */
  config: object;
  /** Stored element type: `F32` (default) or `BF16` (round to nearest even; half the bytes). */
  dtype?: SafetensorsWriteDtype;
  /** Shard when the tensors' total bytes exceed this (HF naming + index json). Default 5 GB. */
  maxShardBytes?: number;
  /** Extra files by relative path (tokenizer.json, generation_config.json, optimizer state, …). */
  files?: Record<string, string | Buffer>;
}

function fail(where: string, message: string): never {
  throw new CheckpointError(`checkpoint: ${where}: ${message}`);
}

function errorCode(err: unknown): string {
  return (err as NodeJS.ErrnoException).code ?? (err as Error).message.split('\n')[0] ?? String(err);
}

/** Reads and parses a JSON file; errors name the file. */
export function readJsonFile(filePath: string): unknown {
  let text: string;
  try {
    text = fs.readFileSync(filePath, 'utf8');
  } catch (err) {
    fail(filePath, `cannot read (${errorCode(err)})`);
  }
  try {
    return JSON.parse(text);
  } catch (err) {
    fail(filePath, `not valid JSON (${(err as Error).message.split('\n')[0]})`);
  }
}

function isFile(filePath: string): boolean {
  return fs.statSync(filePath, { throwIfNoEntry: false })?.isFile() ?? false;
}

/** Leftover `DIR.old-…` folders: complete checkpoints from a save interrupted between its two renames. */
function findInterruptedSaves(dir: string): string[] {
  const parent = path.dirname(dir);
  const prefix = `${path.basename(dir)}.old-`;
  let entries: string[];
  try {
    entries = fs.readdirSync(parent);
  } catch {
    return [];
  }
  return entries.filter((entry) => entry.startsWith(prefix)).map((entry) => path.join(parent, entry));
}

/** Validates `model.safetensors.index.json` and groups tensor names by shard file. */
function readShardIndex(dir: string): Map<string, Set<string>> {
  const indexPath = path.join(dir, SAFE_WEIGHTS_INDEX_NAME);
  const index = readJsonFile(indexPath);
  if (typeof index !== 'object' || index === null || Array.isArray(index)) fail(indexPath, 'is not a JSON object');
  const weightMap = (index as Record<string, unknown>).weight_map;
  if (typeof weightMap !== 'object' || weightMap === null || Array.isArray(weightMap)) {
    fail(indexPath, 'weight_map is missing or not an object');
  }
  const namesByShard = new Map<string, Set<string>>();
  for (const [name, shard] of Object.entries(weightMap as Record<string, unknown>)) {
    // A shard must be a plain file name in DIR: `../x` or `/etc/x` would read outside the checkpoint.
    if (typeof shard !== 'string' || shard === '' || shard !== path.basename(shard) || shard === '..' || shard === '.') {
      fail(indexPath, `weight_map.${name} is ${JSON.stringify(shard)}, not a shard file name`);
    }
    let names = namesByShard.get(shard);
    if (!names) namesByShard.set(shard, (names = new Set()));
    names.add(name);
  }
  return namesByShard;
}

/**
 * Throws naming the tensor when one holds NaN or ±Infinity: such weights make every logit and
 * reward NaN, and the failure would otherwise surface far away (garbage samples, a `null`
 * reward, a training loss blamed on the learning rate).
 */
export function assertFiniteTensors(tensors: ReadonlyMap<string, NamedTensor>, file: string): void {
  for (const [name, { data }] of tensors) {
    for (let i = 0; i < data.length; i++) {
      const v = data[i]!;
      if (v - v === 0) continue; // finite (NaN - NaN and Inf - Inf are NaN)
      let numBad = 0;
      for (let j = i; j < data.length; j++) if (!Number.isFinite(data[j]!)) numBad++;
      fail(file, `tensor ${name} holds ${Number.isNaN(v) ? 'NaN' : v > 0 ? 'Infinity' : '-Infinity'} at element ${i} (${numBad} non-finite value${numBad === 1 ? '' : 's'} of ${data.length}); the checkpoint is corrupt or its training diverged`);
    }
  }
}

/**
 * Loads every tensor of an HF checkpoint folder: `model.safetensors` when present (as
 * transformers prefers it), else the shards listed in `model.safetensors.index.json`.
 * Returned data is float32; `dtypes` records each tensor's stored type; 8-bit tensors (I8,
 * F8_E4M3, of quantized checkpoints) come back as bytes in `byteTensors`.
 */
export async function loadTensorsFromFolder(
  dir: string,
): Promise<{ tensors: Map<string, NamedTensor>; byteTensors: Map<string, ByteTensor>; dtypes: Map<string, SafetensorsDtype> }> {
  const stat = fs.statSync(dir, { throwIfNoEntry: false });
  if (!stat) {
    const leftovers = findInterruptedSaves(dir);
    const hint = leftovers.length > 0 ? ` (an interrupted save left ${leftovers.join(', ')}; rename it back to ${dir})` : '';
    fail(dir, `no such directory${hint}`);
  }
  if (!stat.isDirectory()) fail(dir, 'is not a directory');

  const singlePath = path.join(dir, SAFE_WEIGHTS_NAME);
  if (isFile(singlePath)) {
    const { tensors, byteTensors, dtypes } = readSafetensors(singlePath);
    assertFiniteTensors(tensors, singlePath);
    return { tensors, byteTensors, dtypes };
  }
  if (isFile(path.join(dir, SAFE_WEIGHTS_INDEX_NAME))) {
    const tensors = new Map<string, NamedTensor>();
    const byteTensors = new Map<string, ByteTensor>();
    const dtypes = new Map<string, SafetensorsDtype>();
    for (const [shard, names] of readShardIndex(dir)) {
      const shardPath = path.join(dir, shard);
      if (!isFile(shardPath)) fail(dir, `shard ${shard} listed in ${SAFE_WEIGHTS_INDEX_NAME} is missing`);
      const header = readSafetensorsHeader(shardPath);
      for (const name of names) {
        if (!header.tensors.has(name)) fail(dir, `tensor ${name} listed in ${SAFE_WEIGHTS_INDEX_NAME} is missing from ${shard}`);
      }
      const shardContents = readSafetensors(shardPath, { names });
      assertFiniteTensors(shardContents.tensors, shardPath);
      for (const [name, tensor] of shardContents.tensors) tensors.set(name, tensor);
      for (const [name, tensor] of shardContents.byteTensors) byteTensors.set(name, tensor);
      for (const [name, dtype] of shardContents.dtypes) dtypes.set(name, dtype);
    }
    return { tensors, byteTensors, dtypes };
  }
  if (isFile(path.join(dir, 'pytorch_model.bin')) || isFile(path.join(dir, 'pytorch_model.bin.index.json'))) {
    fail(
      dir,
      'holds only pytorch_model.bin (PyTorch pickle), which cannot be read here; convert it to safetensors first, ' +
        'e.g. AutoModelForCausalLM.from_pretrained(DIR).save_pretrained(OUT, safe_serialization=True) in Python',
    );
  }
  fail(dir, `no ${SAFE_WEIGHTS_NAME} or ${SAFE_WEIGHTS_INDEX_NAME}`);
}

/**
 * Groups names (sorted) into shards of at most `maxShardBytes` each, greedily in order, as
 * transformers does; a tensor larger than the limit gets a shard of its own.
 */
function planShards(names: string[], bytesOf: (name: string) => number, maxShardBytes: number): string[][] {
  const shards: string[][] = [];
  let current: string[] = [];
  let currentBytes = 0;
  for (const name of names) {
    const numBytes = bytesOf(name);
    if (current.length > 0 && currentBytes + numBytes > maxShardBytes) {
      shards.push(current);
      current = [];
      currentBytes = 0;
    }
    current.push(name);
    currentBytes += numBytes;
  }
  if (current.length > 0 || shards.length === 0) shards.push(current);
  return shards;
}

/** `model-00001-of-00003.safetensors`, HF's shard naming. */
export function shardFileName(index: number, numShards: number): string {
  const pad = (n: number) => String(n).padStart(5, '0');
  return `model-${pad(index + 1)}-of-${pad(numShards)}.safetensors`;
}

/** Flushes a file or directory to disk. Platforms that cannot fsync directories (Windows) skip that step. */
function fsyncPath(target: string, isDirectory: boolean): void {
  let fd: number;
  try {
    fd = fs.openSync(target, 'r');
  } catch (err) {
    if (isDirectory) return;
    throw err;
  }
  try {
    fs.fsyncSync(fd);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (!(isDirectory && (code === 'EISDIR' || code === 'EPERM' || code === 'EINVAL' || code === 'EBADF'))) throw err;
  } finally {
    fs.closeSync(fd);
  }
}

function writeFileSynced(filePath: string, contents: string | Buffer): void {
  fs.mkdirSync(path.dirname(filePath), { recursive: true });
  const fd = fs.openSync(filePath, 'w');
  try {
    fs.writeFileSync(fd, contents);
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
}

/** Names that `saveFolder` writes itself; `files` may not use them. */
function isReservedName(relativePath: string): boolean {
  return (
    relativePath === CONFIG_NAME ||
    relativePath === SAFE_WEIGHTS_NAME ||
    relativePath === SAFE_WEIGHTS_INDEX_NAME ||
    /^model-\d{5}-of-\d{5}\.safetensors$/.test(relativePath)
  );
}

/** Checks everything that can be checked before touching the disk. */
function validateContents(dir: string, contents: SaveFolderContents): void {
  const dtype = contents.dtype ?? 'F32';
  if (dtype !== 'F32' && dtype !== 'BF16') fail(dir, `dtype ${String(dtype)} cannot be written (use F32 or BF16)`);
  const maxShardBytes = contents.maxShardBytes ?? DEFAULT_MAX_SHARD_BYTES;
  if (!(Number.isFinite(maxShardBytes) && maxShardBytes > 0)) fail(dir, `maxShardBytes ${maxShardBytes} must be a positive number`);
  if (typeof contents.config !== 'object' || contents.config === null || Array.isArray(contents.config)) {
    fail(dir, 'config must be a JSON object');
  }
  for (const [name, { shape, data }] of contents.tensors) {
    if (!Array.isArray(shape) || !shape.every((dim) => Number.isSafeInteger(dim) && dim >= 0)) {
      fail(dir, `tensor ${name}: shape ${JSON.stringify(shape)} must be an array of non-negative integers`);
    }
    if (!(data instanceof Float32Array)) fail(dir, `tensor ${name}: data is not a Float32Array`);
    if (data.length !== numElements(shape)) {
      fail(dir, `tensor ${name}: data has ${data.length} values but shape [${shape.join(', ')}] needs ${numElements(shape)}`);
    }
  }
  for (const [name, { shape, bytes }] of contents.byteTensors ?? []) {
    if (contents.tensors.has(name)) fail(dir, `tensor ${name}: given both as float32 and as bytes`);
    if (!(bytes instanceof Uint8Array) || bytes.length !== numElements(shape)) fail(dir, `tensor ${name}: bytes do not match shape [${shape.join(', ')}]`);
  }
  for (const relativePath of Object.keys(contents.files ?? {})) {
    const normalized = path.normalize(relativePath);
    if (path.isAbsolute(relativePath) || normalized === '..' || normalized.startsWith(`..${path.sep}`) || normalized === '.' || relativePath === '') {
      fail(dir, `file ${JSON.stringify(relativePath)} must be a relative path inside the checkpoint`);
    }
    if (isReservedName(normalized) || normalized === OUTPUT_MARKER) fail(dir, `file ${relativePath} is written by saveFolder itself`);
  }
}

/** Writes the whole checkpoint into `target` (an empty folder), fsyncing every file. */
function writeContents(target: string, contents: SaveFolderContents): void {
  const dtype = contents.dtype ?? 'F32';
  const torchDtype = dtype === 'BF16' ? 'bfloat16' : 'float32';
  const config: Record<string, unknown> = { ...(contents.config as Record<string, unknown>), torch_dtype: torchDtype };
  // transformers ≥ 4.56 writes `dtype` instead of `torch_dtype`; keep it truthful when present.
  if ('dtype' in config) config.dtype = torchDtype;
  writeFileSynced(path.join(target, CONFIG_NAME), `${JSON.stringify(config, null, 2)}\n`);

  const bytesPerValue = DTYPE_BYTES[dtype];
  const byteTensors = contents.byteTensors ?? new Map<string, ByteTensor>();
  const bytesOf = (name: string) => byteTensors.get(name)?.bytes.length ?? contents.tensors.get(name)!.data.length * bytesPerValue;
  const names = [...contents.tensors.keys(), ...byteTensors.keys()].sort();
  const totalBytes = names.reduce((sum, name) => sum + bytesOf(name), 0);
  const maxShardBytes = contents.maxShardBytes ?? DEFAULT_MAX_SHARD_BYTES;
  const shards = totalBytes > maxShardBytes ? planShards(names, bytesOf, maxShardBytes) : [names];
  // transformers refuses safetensors files whose metadata lacks a known `format`.
  const metadata = { format: 'pt' };
  const weightMap: Record<string, string> = {};
  shards.forEach((shardNames, i) => {
    const fileName = shards.length === 1 ? SAFE_WEIGHTS_NAME : shardFileName(i, shards.length);
    const shardTensors = new Map(shardNames.filter((name) => !byteTensors.has(name)).map((name) => [name, contents.tensors.get(name)!] as const));
    const shardBytes = new Map(shardNames.filter((name) => byteTensors.has(name)).map((name) => [name, byteTensors.get(name)!] as const));
    const filePath = path.join(target, fileName);
    writeSafetensors(filePath, shardTensors, { dtype, metadata, byteTensors: shardBytes });
    fsyncPath(filePath, false);
    for (const name of shardNames) weightMap[name] = fileName;
  });
  if (shards.length > 1) {
    const index = { metadata: { total_size: totalBytes }, weight_map: weightMap };
    writeFileSynced(path.join(target, SAFE_WEIGHTS_INDEX_NAME), `${JSON.stringify(index, null, 2)}\n`);
  }

  const directories = new Set<string>([target]);
  for (const [relativePath, fileContents] of Object.entries(contents.files ?? {})) {
    const filePath = path.join(target, relativePath);
    writeFileSynced(filePath, fileContents);
    directories.add(path.dirname(filePath));
  }
  for (const directory of directories) fsyncPath(directory, true);
}

/** Who is writing a checkpoint folder, for the output-folder policy (`src/util/atomic.ts`). */
export interface SaveFolderOptions {
  /** The command that owns the folder (`model init`, `export`, …); default `checkpoint` (a trainer's own checkpoints). */
  command?: string;
  /** Write into an existing non-empty folder that is not this command's output (its other files are kept). */
  overwrite?: boolean;
  /** How the user named the folder in messages, e.g. `--out`. */
  flag?: string;
  /** More fields for the folder's `.tfalign-output.json` (a trainer's run folder keeps its starting model's hash there). */
  markerExtra?: Record<string, unknown>;
}

/**
 * Writes an HF checkpoint folder at `dir` under the output-folder policy (see the file comment):
 * a new folder appears complete or not at all; an existing one must be empty or a previous output
 * of the same command (else `overwrite`), and then only the files written here are replaced.
 * Shards when the tensors exceed `maxShardBytes`; sets `torch_dtype` in config.json. On failure no
 * temporary folder is left behind and a previous `dir` keeps its files.
 */
export async function saveFolder(dir: string, contents: SaveFolderContents, options: SaveFolderOptions = {}): Promise<void> {
  validateContents(dir, contents);
  const existing = fs.statSync(dir, { throwIfNoEntry: false });
  if (existing && !existing.isDirectory()) fail(dir, 'exists and is not a directory');
  writeOutputFolder(dir, (staging) => writeContents(staging, contents), {
    command: options.command ?? 'checkpoint',
    overwrite: options.overwrite,
    flag: options.flag,
    extra: options.markerExtra,
  });
}

/**
 * Reads the tokenizer and generation files present in `fromDir` (see `TOKENIZER_FILE_NAMES`)
 * into `toFiles`, for `saveFolder`'s `files`. Entries already in `toFiles` are kept, so a caller
 * can override one. Returns the names copied.
 */
export function copyTokenizerFiles(fromDir: string, toFiles: Record<string, string | Buffer>): string[] {
  const copied: string[] = [];
  for (const name of TOKENIZER_FILE_NAMES) {
    if (name in toFiles) continue;
    const filePath = path.join(fromDir, name);
    if (!isFile(filePath)) continue;
    toFiles[name] = fs.readFileSync(filePath);
    copied.push(name);
  }
  return copied;
}
