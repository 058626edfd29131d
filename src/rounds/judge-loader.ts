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
    throw new Error(`${source}: preferences.judge: cannot load ${modulePath}: ${(err as Error).message.split('\n')[0]}`);
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
