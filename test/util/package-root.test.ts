import { describe, expect, it } from 'vitest';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { importablePath, packageFile, packageRoot, runsCompiled } from '../../src/util/package-root.js';

const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');

// The compiled side (dist/, an installed package) is checked by test/package/pack.test.ts.
describe('package-root, from the TypeScript sources', () => {
  it('finds the package root and its shipped files', () => {
    expect(runsCompiled()).toBe(false);
    expect(packageRoot()).toBe(REPO);
    expect(packageFile('configs', 'quickstart.yaml')).toBe(path.join(REPO, 'configs', 'quickstart.yaml'));
    expect(fs.existsSync(packageFile('configs', 'models', 'tiny.json'))).toBe(true);
  });

  it('imports TypeScript sources as they are (a loader runs them), any path made absolute', () => {
    expect(importablePath(path.join(REPO, 'configs', '..', 'data', 'synthetic', 'judge.ts'))).toBe(path.join(REPO, 'data', 'synthetic', 'judge.ts'));
    expect(importablePath('my-judge.js')).toBe(path.resolve('my-judge.js'));
  });
});
