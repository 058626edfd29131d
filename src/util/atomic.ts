/**
 * Writing outputs without destroying anything that is there: the one policy every command that
 * writes follows.
 *
 * Files (`--output FILE`, `--out FILE`):
 *   - a regular file, or nothing yet: written to a temporary file beside it, flushed, then renamed
 *     over it, so a reader never sees half a file and a failed write leaves the previous one (its
 *     permission bits are kept);
 *   - a symbolic link: written through, to the file it points at (the link stays a link);
 *   - a FIFO, a character or block device, a socket (`/dev/stdout`, `/dev/null`, a named pipe):
 *     written directly, never replaced by a regular file;
 *   - a folder: refused.
 *
 * Folders (`--out DIR` of a command that writes several files): a command writes only into a
 * folder it owns — one that does not exist yet (it is created), an empty one, or a previous
 * output of the same command, which carries the marker file `.tfalign-output.json` naming it.
 * Any other non-empty folder is refused unless the user passes `--overwrite`; even then only the
 * files the command writes are replaced, and nothing else in the folder is touched.
 *
 * Errors name the path: `runs/out/model.safetensors: cannot write: no space left on device (ENOSPC)`.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { randomBytes } from 'node:crypto';

/** A short reason for an fs error: `no space left on device (ENOSPC)`; other errors: their first line. */
export function describeFsError(err: unknown): string {
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  const reasons: Record<string, string> = {
    ENOENT: 'no such file or folder',
    EACCES: 'permission denied',
    EPERM: 'operation not permitted',
    EROFS: 'read-only file system',
    ENOSPC: 'no space left on device',
    EDQUOT: 'disk quota exceeded',
    EISDIR: 'is a folder',
    ENOTDIR: 'a part of the path is not a folder',
    EEXIST: 'already exists',
    EMFILE: 'too many open files',
    EIO: 'input/output error',
    ENAMETOOLONG: 'name too long',
    ELOOP: 'too many levels of symbolic links',
    EFBIG: 'file too large',
  };
  if (code !== undefined && reasons[code] !== undefined) return `${reasons[code]} (${code})`;
  return ((err as Error | undefined)?.message ?? String(err)).split('\n')[0]!;
}

/** An Error `TARGET: cannot ACTION: REASON` for an fs error (already such an error: returned as is). */
export function fsError(target: string, action: string, err: unknown): Error {
  if (err instanceof Error && (err as { tfalignPath?: string }).tfalignPath !== undefined) return err;
  const error = new Error(`${target}: cannot ${action}: ${describeFsError(err)}`, { cause: err });
  (error as { tfalignPath?: string }).tfalignPath = target;
  return error;
}

/**
 * Creates `dir` and the folders above it that are missing, one at a time. (Node's recursive
 * `mkdir` never returns on a path under a virtual file system such as /proc; this fails with the
 * path instead.)
 */
export function ensureDir(dir: string): void {
  const missing: string[] = [];
  let current = path.resolve(dir);
  for (;;) {
    let stat: fs.Stats | undefined;
    try {
      stat = fs.statSync(current, { throwIfNoEntry: false });
    } catch (err) {
      throw fsError(current, 'create the folder', err);
    }
    if (stat !== undefined) {
      if (!stat.isDirectory()) throw new Error(`${current}: cannot create a folder there: it exists and is not a folder`);
      break;
    }
    missing.push(current);
    const parent = path.dirname(current);
    if (parent === current) break;
    current = parent;
  }
  for (const folder of missing.reverse()) {
    try {
      fs.mkdirSync(folder);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'EEXIST' && fs.statSync(folder).isDirectory()) continue;
      throw fsError(folder, 'create the folder', err);
    }
  }
}

/** Where and how an output file is written (see the file comment). */
export type OutputTarget =
  /** Temporary file + rename: `file` is the real path (links followed); `mode` the permission bits to keep. */
  | { kind: 'replace'; file: string; mode: number | undefined }
  /** Opened and written in place: a FIFO, a device or a socket. */
  | { kind: 'direct'; file: string };

/** How `file` is to be written; a folder is refused. */
export function outputTarget(file: string): OutputTarget {
  let real = file;
  let lstat: fs.Stats | undefined;
  try {
    lstat = fs.lstatSync(file, { throwIfNoEntry: false });
    if (lstat?.isSymbolicLink()) {
      // Follow the link (a chain of links too); a dangling one is written at the path it names.
      real = fs.existsSync(file) ? fs.realpathSync(file) : path.resolve(path.dirname(file), fs.readlinkSync(file));
      lstat = fs.statSync(real, { throwIfNoEntry: false });
    }
  } catch (err) {
    throw fsError(file, 'write', err);
  }
  if (lstat === undefined) return { kind: 'replace', file: real, mode: undefined };
  if (lstat.isDirectory()) throw new Error(`${file}: cannot write: it is a folder; give a file name`);
  if (lstat.isFile()) return { kind: 'replace', file: real, mode: lstat.mode & 0o7777 };
  return { kind: 'direct', file: real };
}

function temporaryName(file: string): string {
  return `${file}.tmp-${process.pid}-${randomBytes(4).toString('hex')}`;
}

/** Writes every byte of `data` at the fd's position (a single write may be partial). */
function writeAllSync(fd: number, data: Uint8Array): void {
  let offset = 0;
  while (offset < data.length) offset += fs.writeSync(fd, data, offset, data.length - offset);
}

/**
 * An output being written: `write` appends, `commit` makes it visible (rename into place, or just
 * close for a direct target), `abort` removes what was written to a temporary file. Every error
 * names the output file.
 */
export class OutputFile {
  private fd: number | undefined;
  private readonly tmp: string | undefined;

  private constructor(
    /** The path as given. */
    readonly file: string,
    private readonly target: OutputTarget,
  ) {
    try {
      if (target.kind === 'direct') {
        this.fd = fs.openSync(target.file, 'w');
      } else {
        ensureDir(path.dirname(target.file));
        this.tmp = temporaryName(target.file);
        this.fd = fs.openSync(this.tmp, 'wx', target.mode ?? 0o666);
        if (target.mode !== undefined) fs.fchmodSync(this.fd, target.mode);
      }
    } catch (err) {
      this.abort();
      throw fsError(file, 'write', err);
    }
  }

  /** Opens `file` for writing under the policy of the file comment. */
  static open(file: string): OutputFile {
    return new OutputFile(file, outputTarget(file));
  }

  write(data: string | Uint8Array): void {
    try {
      writeAllSync(this.fd!, typeof data === 'string' ? Buffer.from(data, 'utf8') : data);
    } catch (err) {
      throw fsError(this.file, 'write', err);
    }
  }

  commit(): void {
    const fd = this.fd!;
    this.fd = undefined;
    try {
      if (this.target.kind === 'replace') fs.fsyncSync(fd);
      fs.closeSync(fd);
      if (this.tmp !== undefined) fs.renameSync(this.tmp, this.target.file);
    } catch (err) {
      if (this.tmp !== undefined) fs.rmSync(this.tmp, { force: true });
      throw fsError(this.file, 'write', err);
    }
  }

  abort(): void {
    if (this.fd !== undefined) {
      try {
        fs.closeSync(this.fd);
      } catch {
        // closing is best effort on the error path
      }
      this.fd = undefined;
    }
    if (this.tmp !== undefined) fs.rmSync(this.tmp, { force: true });
  }
}

/** Writes `contents` to `file` under the policy of the file comment. */
export function writeFileAtomic(file: string, contents: string | Uint8Array): void {
  const out = OutputFile.open(file);
  try {
    out.write(contents);
  } catch (err) {
    out.abort();
    throw err;
  }
  out.commit();
}

// ---- output folders ----------------------------------------------------------------------------

/** The file that marks a folder as a command's output. */
export const OUTPUT_MARKER = '.tfalign-output.json';

/** What the marker records: the command that owns the folder, and what it wrote or started from. */
export interface OutputMarker {
  /** `model init`, `export`, `sft`, … */
  command: string;
  /** Files the command wrote (relative paths), when it keeps a list (model folders). */
  files?: string[];
  /** Anything else the command needs to recognise its own output (e.g. the starting model's hash). */
  [key: string]: unknown;
}

/** The marker of `dir`, or null when it has none (or an unreadable one). */
export function readOutputMarker(dir: string): OutputMarker | null {
  try {
    const value = JSON.parse(fs.readFileSync(path.join(dir, OUTPUT_MARKER), 'utf8')) as Partial<OutputMarker> | null;
    return value !== null && typeof value === 'object' && typeof value.command === 'string' ? (value as OutputMarker) : null;
  } catch {
    return null;
  }
}

/** Writes the marker of `dir` (atomically); `dir` must exist. */
export function writeOutputMarker(dir: string, marker: OutputMarker): void {
  writeFileAtomic(path.join(dir, OUTPUT_MARKER), `${JSON.stringify(marker, null, 2)}\n`);
}

export interface ClaimOptions {
  /** The command writing the folder, as the marker records it. */
  command: string;
  /** Write into a non-empty folder that is not this command's output (only the command's files are replaced). */
  overwrite?: boolean;
  /** How the user named the folder in messages, e.g. `--out`; default `output folder`. */
  flag?: string;
}

/** What `claimOutputFolder` found. */
export interface OutputFolderState {
  /** The folder existed (it may have been empty). */
  existed: boolean;
  /** Its marker, when it is an output of some tfalign command. */
  marker: OutputMarker | null;
}

/** Entries of `dir` other than the marker (a few, for messages). */
function foreignEntries(dir: string): string[] {
  return fs.readdirSync(dir).filter((entry) => entry !== OUTPUT_MARKER);
}

/**
 * Checks that `command` may write into `dir` (see the file comment) before anything is written;
 * throws one line naming the folder and what to do otherwise. Does not create the folder.
 */
export function claimOutputFolder(dir: string, options: ClaimOptions): OutputFolderState {
  const flag = options.flag ?? 'output folder';
  let stat: fs.Stats | undefined;
  try {
    stat = fs.statSync(dir, { throwIfNoEntry: false }); // follows a link: a linked folder is written through
  } catch (err) {
    throw fsError(dir, 'write', err);
  }
  if (stat === undefined) return { existed: false, marker: null };
  if (!stat.isDirectory()) throw new Error(`${flag} ${dir}: exists and is not a folder`);
  const marker = readOutputMarker(dir);
  const entries = foreignEntries(dir);
  if (entries.length === 0 || marker?.command === options.command || options.overwrite === true) return { existed: true, marker };
  const shown = entries.slice(0, 3).join(', ') + (entries.length > 3 ? `, … (${entries.length} entries)` : '');
  const owner = marker === null ? `holds files tfalign ${options.command} did not write (${shown})` : `is the output of tfalign ${marker.command}, not of ${options.command}`;
  throw new Error(`${flag} ${dir}: ${owner}; give a new or empty folder, or pass --overwrite to write into it (files it does not write are kept)`);
}

/** Regular files under `dir`, as `/`-separated relative paths. */
function listFiles(dir: string, rel = ''): string[] {
  return fs.readdirSync(path.join(dir, rel), { withFileTypes: true }).flatMap((entry) => {
    const child = rel === '' ? entry.name : `${rel}/${entry.name}`;
    return entry.isDirectory() ? listFiles(dir, child) : entry.isFile() ? [child] : [];
  });
}

/** Flushes a folder's entries to disk where the platform allows it. */
function fsyncDir(dir: string): void {
  let fd: number | undefined;
  try {
    fd = fs.openSync(dir, 'r');
    fs.fsyncSync(fd);
  } catch {
    // Some platforms cannot fsync folders (Windows); the renames are still ordered.
  } finally {
    if (fd !== undefined) fs.closeSync(fd);
  }
}

/**
 * Writes a folder of files under the folder policy (see the file comment): `write` fills a
 * staging folder, then
 *   - a new folder: the staging folder (a sibling `DIR.tmp-…`) is renamed into place, so the
 *     folder appears complete or not at all;
 *   - an existing folder the command owns: the staging folder is made inside it, each file is
 *     renamed over its old version (an old version that is a link or a special file is refused
 *     before anything moves), files of the previous marker's list that were not written again
 *     are removed, and nothing else in the folder is touched.
 * The marker (`command`, the files, and `extra`) is written last. On failure the staging folder is
 * removed and an existing folder keeps its files.
 */
export function writeOutputFolder(dir: string, write: (staging: string) => void, options: ClaimOptions & { extra?: Record<string, unknown> }): void {
  const state = claimOutputFolder(dir, options);
  const suffix = `${process.pid}-${randomBytes(4).toString('hex')}`;
  const marker = (files: string[]): OutputMarker => ({ ...(options.extra ?? {}), command: options.command, files: files.sort() });
  if (!state.existed) {
    const target = path.resolve(dir);
    ensureDir(path.dirname(target));
    const staging = `${target}.tmp-${suffix}`;
    try {
      fs.mkdirSync(staging);
      write(staging);
      writeOutputMarker(staging, marker(listFiles(staging)));
      fsyncDir(staging);
      fs.renameSync(staging, target);
    } catch (err) {
      fs.rmSync(staging, { recursive: true, force: true });
      throw err instanceof Error && (err as NodeJS.ErrnoException).code === undefined ? err : fsError(dir, 'write', err);
    }
    fsyncDir(path.dirname(target));
    return;
  }
  const real = fs.realpathSync(dir);
  const staging = path.join(real, `.tfalign-staging-${suffix}`);
  try {
    fs.mkdirSync(staging);
    write(staging);
    const written = listFiles(staging);
    for (const rel of written) {
      const old = fs.lstatSync(path.join(real, rel), { throwIfNoEntry: false });
      if (old !== undefined && !old.isFile()) {
        throw new Error(`${path.join(dir, rel)}: exists and is not a regular file (a link, a folder or a special file); tfalign does not replace it`);
      }
    }
    for (const rel of written) {
      ensureDir(path.dirname(path.join(real, rel)));
      fs.renameSync(path.join(staging, rel), path.join(real, rel));
    }
    const kept = new Set(written);
    for (const rel of state.marker?.files ?? []) {
      if (kept.has(rel) || rel.split('/').includes('..') || path.isAbsolute(rel)) continue;
      const file = path.join(real, rel);
      if (fs.lstatSync(file, { throwIfNoEntry: false })?.isFile()) fs.rmSync(file);
      // Folders the stale file was the last of, up to the output folder itself.
      for (let parent = path.dirname(file); parent !== real && parent.startsWith(real); parent = path.dirname(parent)) {
        if (fs.readdirSync(parent).length > 0) break;
        fs.rmdirSync(parent);
      }
    }
    writeOutputMarker(real, marker(written));
    fsyncDir(real);
  } catch (err) {
    throw err instanceof Error && (err as NodeJS.ErrnoException).code === undefined ? err : fsError(dir, 'write', err);
  } finally {
    fs.rmSync(staging, { recursive: true, force: true });
  }
}
