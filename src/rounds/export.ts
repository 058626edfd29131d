/**
 * `tfalign export`: a round's chosen policy (or its reward model) written out as a Hugging Face
 * folder, from a database opened read-only.
 *
 * Trust nothing on disk: the folder exported is checked against the sha256 its stage recorded
 * (a file changed since is an error naming the artifact and how to redo its stage, never shipped),
 * and `--out` may not be, lie inside, or hold a recorded artifact of any run of the project (the
 * export would overwrite what later resumes and exports trust). `--out` itself follows the
 * output-folder policy of `src/util/atomic.ts` (new, empty, or a previous export; else `overwrite`).
 */
import * as path from 'node:path';
import { claimOutputFolder } from '../util/atomic.js';
import { loadPretrained, savePretrained } from '../model/pretrained.js';
import { artifactProblem } from '../util/hash.js';
import type { ArtifactRecord } from '../store/records.js';
import type { RunStore } from '../store/store.js';

export const EXPORT_KINDS = ['policy', 'reward-model'] as const;
export type ExportKind = (typeof EXPORT_KINDS)[number];

export interface ExportOptions {
  run: string;
  round: number;
  what: ExportKind;
  out: string;
  dtype: 'F32' | 'BF16';
  /** Write into a non-empty `out` that is not a previous export (its other files are kept). */
  overwrite?: boolean;
}

/** True when `inner` is `outer` or lies inside it (both resolved). */
function isWithin(inner: string, outer: string): boolean {
  const relative = path.relative(path.resolve(outer), path.resolve(inner));
  return relative === '' || (!relative.startsWith('..') && !path.isAbsolute(relative));
}

function describeArtifact(run: string, a: ArtifactRecord): string {
  return `artifact "${a.name}" of run "${run}" ${a.roundIndex === 0 ? 'base model' : `round ${a.roundIndex}`} stage ${a.stage} (${a.path})`;
}

/** The folder `export` reads, after every check; throws one line naming what is wrong. */
function exportSource(store: RunStore, options: ExportOptions): string {
  const { run, round, what } = options;
  if (store.getRun(run) === null) throw new Error(`export: run "${run}" not found in ${store.file}`);
  const artifacts = store.artifacts(run);
  const source =
    what === 'policy'
      ? (store.rounds(run).find((r) => r.roundIndex === round && r.status === 'done')?.bestPolicyPath ?? undefined)
      : artifacts.find((a) => a.roundIndex === round && a.stage === 'train_reward_model' && a.name === 'reward-model')?.path;
  if (source === undefined) throw new Error(`export: run "${run}" round ${round} has no ${what} yet (is the round done?)`);

  // --out must stay clear of every recorded artifact of the project.
  for (const other of store.listRuns()) {
    for (const a of other.name === run ? artifacts : store.artifacts(other.name)) {
      if (isWithin(options.out, a.path) || isWithin(a.path, options.out)) {
        throw new Error(`--out ${options.out}: overlaps the recorded ${describeArtifact(other.name, a)}; export to a folder outside the run's artifacts`);
      }
    }
  }
  // The folder must hold exactly the bytes its stage recorded (a base model given by path is the user's own: not recorded).
  const record = artifacts.find((a) => path.resolve(a.path) === path.resolve(source));
  if (record !== undefined) {
    const problem = artifactProblem(record, 'full');
    if (problem !== null) {
      const redo = record.roundIndex === 0 ? 'restore it; every round was built on it' : `restore it, or redo the stage with \`tfalign round ${record.roundIndex} --config FILE --stage ${record.stage}\``;
      throw new Error(`export: ${describeArtifact(run, record)} ${problem}; ${redo}`);
    }
  }
  return source;
}

/** Writes the round's `what` to `options.out`; returns the folder it came from. */
export async function exportRound(store: RunStore, options: ExportOptions): Promise<string> {
  const source = exportSource(store, options);
  const output = { command: 'export', overwrite: options.overwrite, flag: '--out' };
  claimOutputFolder(options.out, output);
  const model = await loadPretrained(source);
  try {
    await savePretrained(model, options.out, { tokenizerDir: source, dtype: options.dtype, ...output });
  } finally {
    model.dispose();
  }
  return source;
}
