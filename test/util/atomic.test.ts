/**
 * The output policy of src/util/atomic.ts (issue 11, items 1, 2, 18): files are replaced atomically,
 * written through symbolic links and into special files (never replaced by a regular file);
 * folders are written only when new, empty, or the same command's output (else `overwrite`), and
 * then only the command's own files change; errors name the path; /proc does not hang.
 */
import { spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { OUTPUT_MARKER, claimOutputFolder, ensureDir, readOutputMarker, writeFileAtomic, writeOutputFolder } from '../../src/util/atomic.js';
import { writeJsonlAtomic } from '../../data/jsonl.js';

const root = fs.mkdtempSync(path.join(os.tmpdir(), 'tfalign-atomic-'));
afterAll(() => fs.rmSync(root, { recursive: true, force: true }));
let n = 0;
const fresh = () => {
  const dir = path.join(root, `case-${n++}`);
  fs.mkdirSync(dir);
  return dir;
};

describe('output files', () => {
  it('replaces a regular file atomically and keeps its permission bits', () => {
    const file = path.join(fresh(), 'report.html');
    fs.writeFileSync(file, 'old');
    fs.chmodSync(file, 0o640);
    writeFileAtomic(file, 'new');
    expect(fs.readFileSync(file, 'utf8')).toBe('new');
    expect(fs.statSync(file).mode & 0o777).toBe(0o640);
    expect(fs.readdirSync(path.dirname(file))).toEqual(['report.html']);
  });

  it('writes through a symbolic link (also a dangling one) and leaves the link a link', async () => {
    const dir = fresh();
    const target = path.join(dir, 'real.jsonl');
    fs.writeFileSync(target, 'old\n');
    const link = path.join(dir, 'link.jsonl');
    fs.symlinkSync('real.jsonl', link);
    await writeJsonlAtomic(link, [{ a: 1 }]);
    expect(fs.lstatSync(link).isSymbolicLink()).toBe(true);
    expect(fs.readFileSync(target, 'utf8')).toBe('{"a":1}\n');
    const dangling = path.join(dir, 'dangling.html');
    fs.symlinkSync('later.html', dangling);
    writeFileAtomic(dangling, '<p>');
    expect(fs.lstatSync(dangling).isSymbolicLink()).toBe(true);
    expect(fs.readFileSync(path.join(dir, 'later.html'), 'utf8')).toBe('<p>');
  });

  it('writes into a FIFO for its reader and into /dev/null, never replacing them', async () => {
    const fifo = path.join(fresh(), 'pipe');
    expect(spawnSync('mkfifo', [fifo]).status).toBe(0);
    const reader = spawn('cat', [fifo]);
    let received = '';
    reader.stdout.on('data', (chunk: Buffer) => (received += chunk.toString()));
    const exited = new Promise((resolve) => reader.on('exit', resolve));
    await writeJsonlAtomic(fifo, [{ n: 1 }, { n: 2 }]);
    await exited;
    expect(received).toBe('{"n":1}\n{"n":2}\n');
    expect(fs.lstatSync(fifo).isFIFO()).toBe(true);
    writeFileAtomic('/dev/null', 'discarded');
    expect(fs.lstatSync('/dev/null').isCharacterDevice()).toBe(true);
  });

  it('names the path of a write that fails (/dev/full: ENOSPC) or of a folder given as a file', async () => {
    await expect(writeJsonlAtomic('/dev/full', [{ n: 1 }])).rejects.toThrow('/dev/full: cannot write: no space left on device (ENOSPC)');
    expect(() => writeFileAtomic('/dev/full', 'x')).toThrow('/dev/full: cannot write: no space left on device (ENOSPC)');
    expect(fs.lstatSync('/dev/full').isCharacterDevice()).toBe(true);
    const dir = fresh();
    expect(() => writeFileAtomic(dir, 'x')).toThrow(`${dir}: cannot write: it is a folder; give a file name`);
  });

  it('fails with the path under /proc instead of looping (Node\'s recursive mkdir never returns there)', () => {
    expect(() => ensureDir('/proc/tfalign-test/a/b')).toThrow('/proc/tfalign-test: cannot create the folder: no such file or folder (ENOENT)');
  });
});

describe('output folders', () => {
  const write = (files: Record<string, string>) => (staging: string) => {
    for (const [name, text] of Object.entries(files)) {
      fs.mkdirSync(path.dirname(path.join(staging, name)), { recursive: true });
      fs.writeFileSync(path.join(staging, name), text);
    }
  };

  it('creates a new folder whole, with a marker listing its files', () => {
    const dir = path.join(fresh(), 'out');
    writeOutputFolder(dir, write({ 'a.txt': '1', 'sub/b.txt': '2' }), { command: 'model init' });
    expect(fs.readdirSync(dir).sort()).toEqual([OUTPUT_MARKER, 'a.txt', 'sub']);
    expect(readOutputMarker(dir)).toEqual({ command: 'model init', files: ['a.txt', 'sub/b.txt'] });
    expect(fs.readdirSync(path.dirname(dir))).toEqual(['out']);
  });

  it('refuses a non-empty folder it did not write, or another command\'s, and changes nothing', () => {
    const dir = fresh();
    fs.writeFileSync(path.join(dir, 'mine.txt'), 'keep');
    expect(() => writeOutputFolder(dir, write({ 'a.txt': '1' }), { command: 'export', flag: '--out' })).toThrow(
      `--out ${dir}: holds files tfalign export did not write (mine.txt); give a new or empty folder, or pass --overwrite to write into it (files it does not write are kept)`,
    );
    expect(fs.readdirSync(dir)).toEqual(['mine.txt']);
    const other = path.join(fresh(), 'o');
    writeOutputFolder(other, write({ 'a.txt': '1' }), { command: 'sample' });
    expect(() => claimOutputFolder(other, { command: 'export' })).toThrow(/is the output of tfalign sample, not of export/);
    expect(claimOutputFolder(path.join(root, 'nowhere'), { command: 'export' })).toEqual({ existed: false, marker: null });
  });

  it('with overwrite, replaces only its own files and keeps the rest', () => {
    const dir = fresh();
    fs.writeFileSync(path.join(dir, 'mine.txt'), 'keep');
    fs.writeFileSync(path.join(dir, 'a.txt'), 'old');
    writeOutputFolder(dir, write({ 'a.txt': 'new' }), { command: 'export', overwrite: true });
    expect(fs.readFileSync(path.join(dir, 'mine.txt'), 'utf8')).toBe('keep');
    expect(fs.readFileSync(path.join(dir, 'a.txt'), 'utf8')).toBe('new');
  });

  it('rewrites its own previous output: stale files it wrote go, files someone added stay', () => {
    const dir = path.join(fresh(), 'ckpt');
    writeOutputFolder(dir, write({ 'model-1.bin': 'x', 'model-2.bin': 'y', 'opt/state.bin': 'z' }), { command: 'checkpoint' });
    fs.writeFileSync(path.join(dir, 'README.md'), 'my notes');
    writeOutputFolder(dir, write({ 'model.bin': 'xy' }), { command: 'checkpoint' });
    expect(fs.readdirSync(dir).sort()).toEqual([OUTPUT_MARKER, 'README.md', 'model.bin']);
    expect(readOutputMarker(dir)?.files).toEqual(['model.bin']);
  });

  it('never replaces a link or a special file inside the folder, and leaves nothing half-moved', () => {
    const dir = fresh();
    const elsewhere = path.join(fresh(), 'blob');
    fs.writeFileSync(elsewhere, 'shared blob');
    fs.symlinkSync(elsewhere, path.join(dir, 'model.bin'));
    fs.writeFileSync(path.join(dir, 'config.json'), 'old');
    expect(() => writeOutputFolder(dir, write({ 'config.json': 'new', 'model.bin': 'new' }), { command: 'export', overwrite: true })).toThrow(
      `${path.join(dir, 'model.bin')}: exists and is not a regular file (a link, a folder or a special file); tfalign does not replace it`,
    );
    expect(fs.readFileSync(elsewhere, 'utf8')).toBe('shared blob');
    expect(fs.readFileSync(path.join(dir, 'config.json'), 'utf8')).toBe('old');
    expect(fs.readdirSync(dir).sort()).toEqual(['config.json', 'model.bin']);
  });
});
