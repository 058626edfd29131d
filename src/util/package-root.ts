/**
 * Where this package's own files are, whether it runs from its TypeScript sources (under tsx or
 * vitest: modules end in `.ts`) or compiled (`dist/`, plain Node), and how a path to one of its
 * TypeScript sources maps to the compiled module that plain Node can import.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';

const HERE = fileURLToPath(import.meta.url);

/** True when this code runs compiled (from `dist/`), false when it runs from the `.ts` sources. */
export function runsCompiled(): boolean {
  return !HERE.endsWith('.ts');
}

/** The package's root folder (the one holding its package.json, configs/ and dist/). */
export function packageRoot(): string {
  let dir = path.dirname(HERE);
  for (;;) {
    if (fs.existsSync(path.join(dir, 'package.json'))) return dir;
    const parent = path.dirname(dir);
    if (parent === dir) throw new Error(`tfalign: no package.json above ${HERE}`);
    dir = parent;
  }
}

/** A file shipped with the package (configs/quickstart.yaml, configs/models/tiny.json, …). */
export function packageFile(...parts: string[]): string {
  return path.join(packageRoot(), ...parts);
}

/**
 * The module to import for `file`: when tfalign runs compiled and `file` is one of its own
 * TypeScript sources (e.g. the quickstart's `data/synthetic/judge.ts`, named by configs), its
 * compiled twin under `dist/` (`dist/data/synthetic/judge.js`) — plain Node cannot import `.ts`.
 * Any other path is returned unchanged.
 */
export function importablePath(file: string): string {
  const absolute = path.resolve(file);
  if (!runsCompiled() || !absolute.endsWith('.ts')) return absolute;
  const root = packageRoot();
  const rel = path.relative(root, absolute);
  if (rel.startsWith('..') || path.isAbsolute(rel) || rel.split(path.sep)[0] === 'dist') return absolute;
  return path.join(root, 'dist', rel.replace(/\.ts$/, '.js'));
}
