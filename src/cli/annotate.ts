/**
 * Human annotation of a round's samples, for runs whose `preferences.source` is `file`:
 * `annotate export` writes pairs of samples to label (JSONL or CSV), `annotate import` validates
 * the labeled file and records its pairs as the round's preferences.
 */
import * as fs from 'node:fs';
import type { Command } from 'commander';
import { example, intArg, openStoreReadOnly } from './common.js';
import { annotationFormatOf, exportAnnotations, importAnnotations } from '../rounds/annotations.js';
import { RunLayout } from '../rounds/layout.js';
import { parseRunName } from '../store/records.js';
import { RunStore, defaultStorePath } from '../store/store.js';

export function registerAnnotateCommands(program: Command): void {
  const annotate = program.command('annotate').description('export pairs of samples for people to label, and import the labels as preferences');

  annotate
    .command('export')
    .description("write one pair of the round's rejection-sampling samples per prompt for labeling (the reward model's best and another)")
    .requiredOption('--run <name>', 'run name')
    .requiredOption('--round <n>', 'round whose samples to export', intArg('--round', { min: 1 }))
    .requiredOption('--out <file>', 'file to write (.jsonl or .csv)')
    .option('--project <dir>', 'project folder holding tfalign.db', '.')
    .option('--format <format>', 'jsonl or csv (default: from the extension of --out)')
    .option('--seed <n>', 'seed of the second sample and of the a/b order', intArg('--seed', { min: 0 }), 0)
    .addHelpText('after', example('tfalign annotate export --project runs --run mine --round 1 --out round1.csv'))
    .action((o: { run: string; round: number; out: string; project: string; format?: string; seed: number }) => {
      const format = annotationFormatOf(o.out, o.format);
      const store = openStoreReadOnly(o.project);
      try {
        const result = exportAnnotations(store, { run: o.run, round: o.round, out: o.out, format, seed: o.seed });
        const skipped = result.numSkippedIdentical > 0 ? ` (${result.numSkippedIdentical} prompts skipped: all their samples are identical)` : '';
        console.log(`annotate export: ${result.numPairs} pairs from round ${o.round} of run "${o.run}"${skipped} -> ${result.file}`);
      } finally {
        store.close();
      }
    });

  annotate
    .command('import')
    .description("validate a labeled file and record its pairs as a round's preferences (source: file)")
    .argument('<file>', 'labeled annotation file (.jsonl or .csv)')
    .requiredOption('--run <name>', 'run name')
    .requiredOption('--round <n>', 'round whose preferences the pairs are', intArg('--round', { min: 1 }))
    .option('--project <dir>', 'project folder holding tfalign.db', '.')
    .option('--format <format>', 'jsonl or csv (default: from the extension of FILE)')
    .addHelpText('after', example('tfalign annotate import --project runs --run mine --round 2 round1-labeled.csv'))
    .action(async (file: string, o: { run: string; round: number; project: string; format?: string }) => {
      const format = annotationFormatOf(file, o.format);
      parseRunName(o.run);
      const database = defaultStorePath(o.project);
      // Opening for writing would create an empty database; a missing one is a mistake in --project.
      if (!fs.existsSync(database)) throw new Error(`${database}: no such database (run \`tfalign run --config FILE\` first, or pass --project)`);
      const store = RunStore.open(database);
      try {
        const r = await importAnnotations(store, new RunLayout(o.project, o.run), { round: o.round, file, format });
        const skipped = [r.numAlreadyImported > 0 ? `${r.numAlreadyImported} already imported` : '', r.numUnlabeled > 0 ? `${r.numUnlabeled} unlabeled` : ''].filter(Boolean);
        console.log(
          `annotate import: ${r.numImported} pairs recorded for round ${o.round} of run "${o.run}"${skipped.length > 0 ? ` (skipped: ${skipped.join(', ')})` : ''}; ` +
            `the round has ${r.numInRound} imported pairs in ${r.preferencesFile}`,
        );
        if (r.configuredSource !== 'file') {
          console.error(`note: run "${o.run}" takes its preferences from ${r.configuredSource ?? 'its config'}, not from files; set preferences.source: file to use these pairs`);
        }
      } finally {
        store.close();
      }
    });
}
