import { execSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { canonicalJson, digestPath, listFilesSorted, sha256Dir, sha256File, sha256Json } from '../../src/util/hash.js';

let dir: string;
beforeEach(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tfalign-hash-'));
});
afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

const hex = (text: string | Buffer): string => createHash('sha256').update(text).digest('hex');

describe('sha256File', () => {
  it('matches the FIPS 180-2 test vector and an empty file', () => {
    fs.writeFileSync(path.join(dir, 'abc'), 'abc');
    expect(sha256File(path.join(dir, 'abc'))).toBe('ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad');
    fs.writeFileSync(path.join(dir, 'empty'), '');
    expect(sha256File(path.join(dir, 'empty'))).toBe('e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855');
  });

  it('hashes a file larger than its 1 MiB read chunk like a one-shot hash', () => {
    const data = Buffer.alloc(2.5 * (1 << 20));
    for (let i = 0; i < data.length; i++) data[i] = (i * 31 + 7) % 251;
    fs.writeFileSync(path.join(dir, 'big.bin'), data);
    expect(sha256File(path.join(dir, 'big.bin'))).toBe(hex(data));
  });
});

describe('sha256Dir', () => {
  function makeModelFolder(root: string): void {
    fs.mkdirSync(path.join(root, 'sub', 'deep'), { recursive: true });
    fs.mkdirSync(path.join(root, 'empty'));
    fs.writeFileSync(path.join(root, 'config.json'), '{"hidden_size":8}\n');
    fs.writeFileSync(path.join(root, 'Z.txt'), 'upper case sorts first in byte order');
    fs.writeFileSync(path.join(root, 'sub', 'a.bin'), Buffer.from([0, 1, 2, 255]));
    fs.writeFileSync(path.join(root, 'sub', 'deep', 'é.txt'), 'non-ascii name');
  }

  it('is the sha256 of the sorted sha256sum listing, computed here by hand', () => {
    makeModelFolder(dir);
    expect(listFilesSorted(dir)).toEqual(['Z.txt', 'config.json', 'sub/a.bin', 'sub/deep/é.txt']);
    const listing =
      `${hex('upper case sorts first in byte order')}  Z.txt\n` +
      `${hex('{"hidden_size":8}\n')}  config.json\n` +
      `${hex(Buffer.from([0, 1, 2, 255]))}  sub/a.bin\n` +
      `${hex('non-ascii name')}  sub/deep/é.txt\n`;
    expect(sha256Dir(dir)).toBe(hex(listing));
    expect(digestPath(dir)).toEqual({ sha256: hex(listing), bytes: 36 + 18 + 4 + 14 });
  });

  it('equals the find | sort | sha256sum pipeline of the file comment', () => {
    makeModelFolder(dir);
    const shell = execSync(`find . -type f -printf '%P\\n' | LC_ALL=C sort | xargs -d '\\n' sha256sum | sha256sum`, { cwd: dir, encoding: 'utf8' });
    expect(sha256Dir(dir)).toBe(shell.split(' ')[0]);
  });

  it('changes when a byte or a name changes, and follows symbolic links', () => {
    makeModelFolder(dir);
    const before = sha256Dir(dir);
    fs.renameSync(path.join(dir, 'Z.txt'), path.join(dir, 'Y.txt'));
    const renamed = sha256Dir(dir);
    expect(renamed).not.toBe(before);
    fs.writeFileSync(path.join(dir, 'Y.txt'), 'upper case sorts first in byte orded');
    expect(sha256Dir(dir)).not.toBe(renamed);

    // A folder of links (the Hugging Face cache layout) hashes like a folder of the files.
    const blobs = fs.mkdtempSync(path.join(os.tmpdir(), 'tfalign-blobs-'));
    const linked = path.join(dir, '..', `${path.basename(dir)}-links`);
    try {
      fs.writeFileSync(path.join(blobs, 'blob1'), 'weights');
      fs.mkdirSync(linked);
      fs.symlinkSync(path.join(blobs, 'blob1'), path.join(linked, 'model.safetensors'));
      const plain = fs.mkdtempSync(path.join(os.tmpdir(), 'tfalign-plain-'));
      fs.writeFileSync(path.join(plain, 'model.safetensors'), 'weights');
      expect(sha256Dir(linked)).toBe(sha256Dir(plain));
      fs.rmSync(plain, { recursive: true });
    } finally {
      fs.rmSync(blobs, { recursive: true, force: true });
      fs.rmSync(linked, { recursive: true, force: true });
    }
  });

  it('gives the hash of an empty listing for an empty folder, and names a missing path', () => {
    expect(sha256Dir(dir)).toBe(hex(''));
    expect(() => digestPath(path.join(dir, 'nope'))).toThrow(`${path.join(dir, 'nope')}: cannot hash: no such file or folder`);
  });
});

describe('sha256Json', () => {
  it('ignores key order at every level but not array order', () => {
    const a = { b: 1, a: { d: [1, 2], c: 'x' } };
    const b = { a: { c: 'x', d: [1, 2] }, b: 1 };
    expect(canonicalJson(a)).toBe('{"a":{"c":"x","d":[1,2]},"b":1}');
    expect(sha256Json(a)).toBe(sha256Json(b));
    expect(sha256Json(a)).toBe(hex('{"a":{"c":"x","d":[1,2]},"b":1}'));
    expect(sha256Json({ ...a, a: { c: 'x', d: [2, 1] } })).not.toBe(sha256Json(a));
  });
});
