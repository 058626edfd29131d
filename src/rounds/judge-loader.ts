/**
 * Loading a judge module named by a run config. The module's default export (or its `judge`
 * export) must have `compare(prompt, a, b, rng)` and `score(prompt, response)`; when it exports
 * `createJudge(options)` / `createSyntheticJudge(options)` and the config gives options, that
 * factory builds the judge instead. A path to one of tfalign's own TypeScript sources (the
 * quickstart's `data/synthetic/judge.ts`) loads its compiled twin when tfalign runs compiled.
 */
import * as path from 'node:path';
import { pathToFileURL } from 'node:url';
import type { Judge } from '../../data/synthetic/judge.js';
import { importablePath } from '../util/package-root.js';

export type { Judge };

function isJudge(value: unknown): value is Judge {
  const v = value as Partial<Judge> | null;
  return typeof v === 'object' && v !== null && typeof v.compare === 'function' && typeof v.score === 'function';
}

export async function loadJudge(modulePath: string, options: Record<string, unknown>, source: string): Promise<Judge> {
  let mod: Record<string, unknown>;
  try {
    mod = (await import(pathToFileURL(importablePath(path.resolve(modulePath))).href)) as Record<string, unknown>;
  } catch (err) {
    // plain Node 20 cannot import a user's own TypeScript judge: say what to do
    const hint = (err as NodeJS.ErrnoException).code === 'ERR_UNKNOWN_FILE_EXTENSION' ? ' (compile the judge to .js, or run tfalign with a TypeScript loader: node --import tsx)' : '';
    throw new Error(`${source}: preferences.judge: cannot load ${modulePath}: ${(err as Error).message.split('\n')[0]}${hint}`);
  }
  const factory = (mod.createJudge ?? mod.createSyntheticJudge) as ((o: Record<string, unknown>) => unknown) | undefined;
  if (Object.keys(options).length > 0 && typeof factory === 'function') {
    const built = factory(options);
    if (isJudge(built)) return built;
  }
  const judge = isJudge(mod.default) ? mod.default : mod.judge;
  if (!isJudge(judge)) throw new Error(`${source}: preferences.judge: ${modulePath} has no default export with compare() and score()`);
  return judge;
}
