/**
 * Which file a worker thread runs. Compiled (`dist/`), a worker's entry is its own `.js` module
 * next to the module that starts it, run by plain Node. From the TypeScript sources (tsx, vitest)
 * that `.js` file does not exist: the thread runs `ts-worker-bootstrap.js`, which registers tsx's
 * loader (Node 20 workers do not inherit the parent's module hooks) and imports the `.ts` module
 * named in its argv.
 */
import * as fs from 'node:fs';
import { fileURLToPath } from 'node:url';

export interface WorkerEntry {
  /** The file the Worker runs. */
  file: URL;
  /** Extra `process.argv` entries for the thread (the `.ts` module for the bootstrap). */
  argv: string[];
}

/** The entry of a worker whose compiled module is `module` (a `.js` URL next to its starter). */
export function resolveWorkerEntry(module: URL): WorkerEntry {
  if (fs.existsSync(fileURLToPath(module))) return { file: module, argv: [] };
  const source = new URL(module.href.replace(/\.js$/, '.ts'));
  if (!fs.existsSync(fileURLToPath(source))) throw new Error(`worker entry: neither ${fileURLToPath(module)} nor its TypeScript source exists`);
  return { file: new URL('./ts-worker-bootstrap.js', import.meta.url), argv: [source.href] };
}
