/**
 * The dependency rule: imports only point down the layers of `LAYERS` (see README, Layout), and
 * no file imports itself back through others. Fails with one line per offending import.
 */
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { findCycles, layerViolations, LAYERS, moduleSpecifiers, readImportGraph, type ImportEdge } from './import-graph.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const graph = readImportGraph(ROOT);

describe('dependency rule', () => {
  it('reads the real tree: hundreds of files and edges, every relative import resolved', () => {
    expect(graph.files.length).toBeGreaterThan(100);
    expect(graph.edges.length).toBeGreaterThan(300);
    expect(graph.unresolved).toEqual([]);
  });

  it('has no import cycle', () => {
    expect(findCycles(graph.files, graph.edges)).toEqual([]);
  });

  it('has no upward import, no import between peers, and losses/ needs tfjs only', () => {
    expect(layerViolations(graph)).toEqual([]);
  });

  it('sees every kind of module reference (static, type-only, re-export, dynamic, worker URL)', () => {
    const text = [
      "import { a } from './a.js';",
      "import type { B } from '../b.js';",
      "export { c } from './c.js';",
      "const d = await import('./d.js');",
      "let e: import('./e.js').E;",
      "new Worker(new URL('./f-bootstrap.js', import.meta.url));",
      "import * as tf from '@tensorflow/tfjs';",
    ].join('\n');
    expect(moduleSpecifiers('x.ts', text)).toEqual(['./a.js', '../b.js', './c.js', './d.js', './e.js', './f-bootstrap.js', '@tensorflow/tfjs']);
  });

  it('catches a cycle and an upward import in a small graph', () => {
    const files = ['src/model/a.ts', 'src/train/b.ts', 'src/trainers/c.ts', 'losses/d.ts'];
    const edges: ImportEdge[] = [
      { from: 'src/train/b.ts', to: 'src/model/a.ts', spec: '' }, // down: fine
      { from: 'src/model/a.ts', to: 'src/trainers/c.ts', spec: '' }, // up
      { from: 'src/trainers/c.ts', to: 'src/train/b.ts', spec: '' }, // down, but closes a→c→b→a
    ];
    expect(findCycles(files, edges)).toEqual([['src/model/a.ts', 'src/train/b.ts', 'src/trainers/c.ts']]);
    const packages = new Map([['losses/d.ts', ['@tensorflow/tfjs', 'zod']]]);
    expect(layerViolations({ files, edges, packages })).toEqual([
      expect.stringMatching(/^src\/model\/a\.ts → src\/trainers\/c\.ts: imports upward/),
      'losses/d.ts → zod: losses/ depends on @tensorflow/tfjs only',
    ]);
  });

  it('places every group in exactly one layer', () => {
    const groups = LAYERS.flatMap((l) => l.groups);
    expect(new Set(groups).size).toBe(groups.length);
  });
});
