/**
 * Content hashes of artifacts, so that a resumed run can tell that a finished stage's outputs are
 * still the files it recorded.
 *
 * A folder's hash is the sha256 of its `sha256sum` listing: one line `<file sha256>  <relative
 * path>\n` per file, relative paths with `/` separators, sorted by their UTF-8 bytes. It equals
 *
 *   cd DIR && find . -type f -printf '%P\n' | LC_ALL=C sort | xargs -d '\n' sha256sum | sha256sum
 *
 * so it can be checked by hand. Only files count (an empty folder adds nothing); symbolic links are
 * followed, because model folders from the Hugging Face cache are links into its blob store.
 */
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';

const READ_CHUNK_BYTES = 1 << 20;

/** sha256 of a file as hex, read in 1 MiB chunks so that multi-gigabyte checkpoints fit in memory. */
export function sha256File(file: string): string {
  const hash = createHash('sha256');
  const buffer = Buffer.allocUnsafe(READ_CHUNK_BYTES);
  const fd = fs.openSync(file, 'r');
  try {
    for (;;) {
      const numRead = fs.readSync(fd, buffer, 0, buffer.length, null);
      if (numRead === 0) break;
      hash.update(buffer.subarray(0, numRead));
    }
  } finally {
    fs.closeSync(fd);
  }
  return hash.digest('hex');
}

/** Files under `dir` as `/`-separated relative paths, sorted by UTF-8 bytes (like `LC_ALL=C sort`). */
export function listFilesSorted(dir: string): string[] {
  const files: string[] = [];
  const walk = (relDir: string): void => {
    for (const entry of fs.readdirSync(path.join(dir, relDir))) {
      const rel = relDir === '' ? entry : `${relDir}/${entry}`;
      const stat = fs.statSync(path.join(dir, rel)); // follows links
      if (stat.isDirectory()) walk(rel);
      else if (stat.isFile()) files.push(rel);
    }
  };
  walk('');
  return files.sort((a, b) => Buffer.compare(Buffer.from(a, 'utf8'), Buffer.from(b, 'utf8')));
}

/** sha256 of a folder: the hash of its `sha256sum`-style listing (see the file comment). */
export function sha256Dir(dir: string): string {
  return hashDir(dir);
}

/** Size, file count and newest modification time of a file or folder: what the quick check compares. */
export interface PathStat {
  /** Bytes (a folder: the sum of its files). */
  bytes: number;
  /** 1 for a file, the number of files of a folder. */
  numFiles: number;
  /** Modification time in ms (a folder: its newest file's). */
  mtimeMs: number;
}

/** A file's or folder's hash and size in bytes (a folder: the sum of its files). */
export interface PathDigest {
  sha256: string;
  bytes: number;
}

/** What the store records about an artifact: hash, size, file count and mtime. */
export interface ArtifactDigest extends PathDigest, PathStat {}

function statTarget(target: string, action: string): fs.Stats {
  try {
    return fs.statSync(target);
  } catch {
    throw new Error(`${target}: cannot ${action}: no such file or folder`);
  }
}

/** Size, file count and newest mtime of a file or folder, without reading it. */
export function statPath(target: string): PathStat {
  const stat = statTarget(target, 'stat');
  if (stat.isFile()) return { bytes: stat.size, numFiles: 1, mtimeMs: stat.mtimeMs };
  if (!stat.isDirectory()) throw new Error(`${target}: cannot stat: not a file or folder`);
  const out: PathStat = { bytes: 0, numFiles: 0, mtimeMs: 0 };
  for (const rel of listFilesSorted(target)) {
    const file = fs.statSync(path.join(target, rel));
    out.bytes += file.size;
    out.numFiles += 1;
    out.mtimeMs = Math.max(out.mtimeMs, file.mtimeMs);
  }
  return out;
}

function hashDir(dir: string): string {
  const listing = createHash('sha256');
  for (const rel of listFilesSorted(dir)) listing.update(`${sha256File(path.join(dir, rel))}  ${rel}\n`, 'utf8');
  return listing.digest('hex');
}

/** Hash and size of a file or a folder. */
export function digestPath(target: string): PathDigest {
  const stat = statTarget(target, 'hash');
  if (stat.isDirectory()) return { sha256: hashDir(target), bytes: statPath(target).bytes };
  if (stat.isFile()) return { sha256: sha256File(target), bytes: stat.size };
  throw new Error(`${target}: cannot hash: not a file or folder`);
}

/** Hash, size, file count and mtime of a file or a folder: what a stage's artifact record holds. */
export function digestArtifact(target: string): ArtifactDigest {
  return { ...digestPath(target), ...statPath(target) };
}

/** What is recorded about an artifact, as `ArtifactRecord` holds it. */
export interface RecordedDigest {
  path: string;
  sha256: string;
  bytes: number;
  numFiles: number | null;
  mtimeMs: number | null;
}

/**
 * What is wrong with a recorded artifact on disk, or null when it is as recorded. `quick`
 * compares size, file count and modification time (a resume: cheap even for large checkpoints;
 * records from before those were kept compare size only); `full` also the sha256 (an export).
 */
export function artifactProblem(record: RecordedDigest, mode: 'quick' | 'full'): string | null {
  if (!fs.existsSync(record.path)) return 'is missing';
  let now: PathStat;
  try {
    now = statPath(record.path);
  } catch (err) {
    return (err as Error).message.replace(`${record.path}: `, '');
  }
  if (record.numFiles !== null && now.numFiles !== record.numFiles) return `changed its files (recorded ${record.numFiles}, now ${now.numFiles})`;
  if (now.bytes !== record.bytes) return `changed size (recorded ${record.bytes} bytes, now ${now.bytes})`;
  // 1 ms of slack: tools that restore times (cp -p, rsync -t, utimes) may round below that.
  if (record.mtimeMs !== null && Math.abs(now.mtimeMs - record.mtimeMs) >= 1) return `was modified after it was recorded (${new Date(now.mtimeMs).toISOString()}, recorded ${new Date(record.mtimeMs).toISOString()})`;
  if (mode === 'full') {
    const sha256 = digestPath(record.path).sha256;
    if (sha256 !== record.sha256) return `does not match its recorded sha256 (recorded ${record.sha256.slice(0, 12)}…, now ${sha256.slice(0, 12)}…)`;
  }
  return null;
}

/**
 * sha256 of a JSON value with object keys sorted at every level, so that two configs equal as
 * values hash alike whatever their key order (what `createRun` compares to spot a changed config).
 */
export function sha256Json(value: unknown): string {
  return createHash('sha256').update(canonicalJson(value), 'utf8').digest('hex');
}

/** `JSON.stringify` with sorted object keys; `undefined` fields are dropped as JSON.stringify drops them. */
export function canonicalJson(value: unknown): string {
  return JSON.stringify(value, (_key, v: unknown) => {
    if (v === null || typeof v !== 'object' || Array.isArray(v)) return v;
    const sorted: Record<string, unknown> = {};
    for (const key of Object.keys(v).sort()) sorted[key] = (v as Record<string, unknown>)[key];
    return sorted;
  });
}
