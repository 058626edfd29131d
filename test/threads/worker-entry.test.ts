import { afterAll, describe, expect, it } from 'vitest';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { resolveWorkerEntry } from '../../src/threads/worker-entry.js';

const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'tfalign-worker-entry-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

describe('resolveWorkerEntry', () => {
  it('runs a compiled worker module directly, with no loader', () => {
    const compiled = path.join(tmp, 'worker.js');
    fs.writeFileSync(compiled, '');
    expect(resolveWorkerEntry(pathToFileURL(compiled))).toEqual({ file: pathToFileURL(compiled), argv: [] });
  });

  it('runs a worker from the TypeScript sources through the tsx bootstrap, naming the .ts module', () => {
    const entry = resolveWorkerEntry(pathToFileURL(path.join(REPO, 'src', 'parallel', 'worker.js')));
    expect(fileURLToPath(entry.file)).toBe(path.join(REPO, 'src', 'threads', 'ts-worker-bootstrap.js'));
    expect(entry.argv).toEqual([pathToFileURL(path.join(REPO, 'src', 'parallel', 'worker.ts')).href]);
  });

  it('names both files when neither exists', () => {
    expect(() => resolveWorkerEntry(pathToFileURL(path.join(tmp, 'missing.js')))).toThrow(`worker entry: neither ${path.join(tmp, 'missing.js')} nor its TypeScript source exists`);
  });
});
