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
  return hashDir(dir).sha256;
}

/** What the store records about a file or folder: its hash and its size in bytes (a folder: the sum of its files). */
export interface PathDigest {
  sha256: string;
  bytes: number;
}

function hashDir(dir: string): PathDigest {
  const listing = createHash('sha256');
  let bytes = 0;
  for (const rel of listFilesSorted(dir)) {
    const file = path.join(dir, rel);
    bytes += fs.statSync(file).size;
    listing.update(`${sha256File(file)}  ${rel}\n`, 'utf8');
  }
  return { sha256: listing.digest('hex'), bytes };
}

/** Hash and size of a file or a folder. */
export function digestPath(target: string): PathDigest {
  let stat: fs.Stats;
  try {
    stat = fs.statSync(target);
  } catch {
    throw new Error(`${target}: cannot hash: no such file or folder`);
  }
  if (stat.isDirectory()) return hashDir(target);
  if (stat.isFile()) return { sha256: sha256File(target), bytes: stat.size };
  throw new Error(`${target}: cannot hash: not a file or folder`);
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
