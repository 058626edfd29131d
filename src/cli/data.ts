/**
 * `tfalign data clean|dedup|score`: curation of SFT and preference JSONL files (Llama 3 §4.2.3).
 * Each command reads its input (the first malformed row is a one-line `FILE:LINE: field: problem`
 * error, before any model is loaded), writes the kept rows atomically to --out and the removed
 * ones to --rejects as `{line, rule, detail, row}`, and prints a summary table on stdout.
 */
import type { Command } from 'commander';
import { backendOption, example, floatArg, intArg, progress, useBackend } from './common.js';
import { loadConfig } from '../config/load.js';
import type { LlamaModel } from '../model/llama.js';
import type { Tokenizer } from '../tokenizer/tokenizer.js';
import { DEDUP_FIELDS } from '../../data/curation/row-text.js';
import { DataError } from '../util/errors.js';

/** Calls `report` about every 5% of the work (and at the end), so that a log gets ~20 lines, not one per batch. */
function throttled(report: (numDone: number, numTotal: number) => void): (numDone: number, numTotal: number) => void {
  let nextAt = 0;
  return (numDone, numTotal) => {
    if (numDone < nextAt && numDone < numTotal) return;
    nextAt = numDone + Math.ceil(numTotal / 20);
    report(numDone, numTotal);
  };
}

const collect = (value: string, previous: string[]): string[] => [...previous, value];

/** Loads a model folder and its tokenizer; the message names the flag. */
async function loadModelFolder(flag: string, dir: string): Promise<{ model: LlamaModel; tokenizer: Tokenizer }> {
  const { loadPretrained } = await import('../model/pretrained.js');
  const { Tokenizer } = await import('../tokenizer/tokenizer.js');
  const model = await loadPretrained(dir).catch((err: Error) => {
    throw new Error(`${flag}: ${err.message.split('\n')[0]}`);
  });
  try {
    return { model, tokenizer: await Tokenizer.fromFolder(dir) };
  } catch (err) {
    model.dispose();
    throw new Error(`${flag}: ${(err as Error).message.split('\n')[0]}`);
  }
}

export function registerDataCommands(program: Command): void {
  const data = program.command('data').description('curate post-training data (Llama 3 §4.2.3): rule-based cleaning, deduplication, quality and difficulty scoring');

  data
    .command('clean')
    .description('remove rows whose responses break a cleaning rule: empty, truncated, too long, repeated n-grams, stock apologetic openers, emoji or exclamation overuse')
    .requiredOption('--input <file>', 'JSONL of SFT rows ({prompt, response} or {messages}) or preference rows ({prompt, chosen, rejected})')
    .requiredOption('--out <file>', 'JSONL of the kept rows, written atomically')
    .option('--rejects <file>', 'JSONL of the removed rows: {line, rule, detail, row}')
    .option('--config <file>', 'YAML or JSON of rule thresholds (CleaningOptionsSchema: emoji.maxCount, truncated.textOnly, …)')
    .option('--set <key=value>', 'override a threshold, e.g. --set emoji.maxCount=3 or --set exclamation.enabled=false (repeatable)', collect, [] as string[])
    .option('--tokenizer <dir>', 'tokenizer folder, to count tokens for tooLong.maxTokens')
    .option('--skip-invalid', 'skip (and count) malformed rows instead of stopping at the first')
    .addHelpText(
      'after',
      example(
        'tfalign data clean --input runs/rs/sft.jsonl --out runs/rs/sft.clean.jsonl --rejects runs/rs/sft.rejects.jsonl',
        'tfalign data clean --input sft.jsonl --out clean.jsonl --set truncated.textOnly=keep --set tooLong.maxTokens=1024 --tokenizer runs/base',
      ),
    )
    .action(async (o) => {
      const { Tokenizer } = await import('../tokenizer/tokenizer.js');
      const { CleaningOptionsSchema } = await import('../../data/curation/rules.js');
      const { cleanFile, formatReport } = await import('../../data/curation/steps.js');
      const options = loadConfig(CleaningOptionsSchema, { file: o.config, sets: o.set });
      let countTokens: ((text: string) => number) | undefined;
      if (o.tokenizer !== undefined) {
        const tokenizer = await Tokenizer.fromFolder(o.tokenizer);
        countTokens = (text) => tokenizer.encode(text).length;
      } else if (options.tooLong.maxTokens !== null) {
        throw new Error('data clean: tooLong.maxTokens needs --tokenizer DIR to count tokens');
      }
      const report = await cleanFile({ input: o.input, out: o.out, rejects: o.rejects, skipInvalid: o.skipInvalid, options, countTokens });
      console.log(formatReport(report));
    });

  data
    .command('dedup')
    .description('remove exact duplicates (normalized text), near duplicates (--near: MinHash + LSH over word shingles) and semantic duplicates (--semantic: embeddings, k-means, greedy by quality × difficulty)')
    .requiredOption('--input <file>', 'JSONL of SFT or preference rows (quality/difficulty fields from `data score` decide which copy stays)')
    .requiredOption('--out <file>', 'JSONL of the kept rows, written atomically')
    .option('--rejects <file>', 'JSONL of the removed rows: {line, rule, detail, row}')
    .option('--on <part>', `what is compared: ${DEDUP_FIELDS.join(' | ')}`, 'row')
    .option('--near', 'also remove near duplicates (MinHash + LSH)')
    .option('--threshold <j>', 'Jaccard similarity of word shingles at or above which rows are near duplicates (with --near)', floatArg('--threshold', { min: 0, max: 1 }))
    .option('--shingle-words <k>', 'words per shingle (with --near)', intArg('--shingle-words', { min: 1 }))
    .option('--num-permutations <n>', 'MinHash permutations (with --near)', intArg('--num-permutations', { min: 8 }))
    .option('--seed <n>', 'seed of the MinHash permutations and of k-means++', intArg('--seed'))
    .option('--semantic', 'also remove semantic duplicates, embedding rows with --model')
    .option('--model <dir>', 'tfalign checkpoint whose mean-pooled last hidden states embed the rows (with --semantic)')
    .option('--clusters <k>', 'k-means clusters (default ⌈√rows⌉)', intArg('--clusters', { min: 1 }))
    .option('--similarity <s>', 'cosine similarity at or above which a row duplicates a kept row of its cluster (default 0.95)', floatArg('--similarity', { min: -1, max: 1 }))
    .option('--topics <k>', 'tag kept rows with the nearest of k topic clusters (adds topic, topic_label) and print the mix', intArg('--topics', { min: 1 }))
    .option('--batch-size <n>', 'texts per embedding forward pass', intArg('--batch-size', { min: 1 }))
    .option('--max-tokens <n>', 'tokens embedded per row', intArg('--max-tokens', { min: 1 }))
    .option('--no-center', 'compare raw embeddings (default: the mean embedding is subtracted first)')
    .option('--skip-invalid', 'skip (and count) malformed rows instead of stopping at the first')
    .addOption(backendOption())
    .addHelpText(
      'after',
      example(
        'tfalign data dedup --input sft.jsonl --out sft.dedup.jsonl --near --threshold 0.8',
        'tfalign data dedup --input scored.jsonl --out final.jsonl --near --semantic --model runs/round1/sft/run --clusters 64 --similarity 0.95 --topics 8',
      ),
    )
    .action(async (o) => {
      const { dedupFile, formatReport, readCurationRows } = await import('../../data/curation/steps.js');
      if (o.semantic && o.model === undefined) throw new Error('data dedup: --semantic needs --model DIR (the checkpoint that embeds rows)');
      if (!o.semantic && o.model !== undefined) throw new Error('data dedup: --model is used only with --semantic');
      const input = await readCurationRows(o.input, o.skipInvalid ?? false);
      const options = { on: o.on, near: o.near ?? false, threshold: o.threshold, shingleWords: o.shingleWords, numPermutations: o.numPermutations, seed: o.seed };
      let semantic: { model: LlamaModel; tokenizer: Tokenizer } | undefined;
      if (o.semantic) {
        await useBackend(o.backend);
        semantic = await loadModelFolder('--model', o.model);
      }
      try {
        const bar = semantic ? progress('embed', input.rows.length) : undefined;
        const report = await dedupFile({
          input,
          out: o.out,
          rejects: o.rejects,
          options: Object.fromEntries(Object.entries(options).filter(([, v]) => v !== undefined)),
          semantic: semantic && {
            ...semantic,
            options: Object.fromEntries(
              Object.entries({
                numClusters: o.clusters, similarity: o.similarity, numTopics: o.topics, batchSize: o.batchSize, maxTokens: o.maxTokens, center: o.center, seed: o.seed,
              }).filter(([, v]) => v !== undefined),
            ),
          },
          onEmbedBatch: bar && throttled((numDone, numTotal) => bar.update(numDone, { of: numTotal })),
        });
        bar?.done();
        console.log(formatReport(report));
      } finally {
        semantic?.model.dispose();
      }
    });

  data
    .command('score')
    .description('score rows with a reward model (quality), optionally a judge and a policy (difficulty: mean token NLL); keep the reward top fraction OR the rows the judge rates highly')
    .requiredOption('--input <file>', 'JSONL of SFT or preference rows (a preference row is scored on chosen)')
    .requiredOption('--out <file>', 'JSONL of the kept rows with quality, judge_score and difficulty fields added, written atomically')
    .requiredOption('--reward-model <dir>', 'reward model folder (rm train\'s OUT)')
    .option('--rejects <file>', 'JSONL of the removed rows, scores included: {line, rule, detail, row}')
    .option('--top-fraction <f>', 'fraction of rows kept by reward (default 0.25: Llama 3\'s top quartile; 1 keeps all and only scores)', floatArg('--top-fraction', { min: 0, max: 1 }))
    .option('--judge <module>', 'module whose default export has score(prompt, response) in [0, 1], OR-ed with the reward selection; it is code run in this process with your permissions: name only modules you trust')
    .option('--judge-threshold <t>', 'keep rows the judge rates at or above this (default 0.8)', floatArg('--judge-threshold'))
    .option('--difficulty-model <dir>', 'causal LM (the policy) whose mean token NLL of each response is stored as difficulty')
    .option('--batch-size <n>', 'sequences per forward pass', intArg('--batch-size', { min: 1 }), 8)
    .option('--chat', 'render rows with the chat template (default: when the tokenizer has one)')
    .option('--no-chat', 'render rows as [BOS] prompt, response [EOS]')
    .option('--skip-invalid', 'skip (and count) malformed rows instead of stopping at the first')
    .addOption(backendOption())
    .addHelpText(
      'after',
      example(
        'tfalign data score --input sft.clean.jsonl --out sft.scored.jsonl --reward-model runs/rm --difficulty-model runs/sft',
        'tfalign data score --input sft.jsonl --out top.jsonl --reward-model runs/rm --judge data/synthetic/judge.ts --judge-threshold 0.9 --rejects low.jsonl',
      ),
    )
    .action(async (o) => {
      const { loadJudge } = await import('../rounds/judge-loader.js');
      const { formatReport, readCurationRows, scoreFile } = await import('../../data/curation/steps.js');
      const input = await readCurationRows(o.input, o.skipInvalid ?? false);
      if (input.rows.length === 0) throw new DataError(o.input, undefined, undefined, 'no rows to score');
      const judge = o.judge === undefined ? undefined : await loadJudge(o.judge, {}, 'data score --judge');
      await useBackend(o.backend);
      const rewardModel = await loadModelFolder('--reward-model', o.rewardModel);
      let difficultyModel: { model: LlamaModel; tokenizer: Tokenizer } | undefined;
      try {
        if (!rewardModel.model.dims.isRewardModel) throw new Error(`--reward-model: ${o.rewardModel} is a causal LM; give a reward model (rm train's OUT)`);
        if (o.difficultyModel !== undefined) {
          difficultyModel = await loadModelFolder('--difficulty-model', o.difficultyModel);
          if (difficultyModel.model.dims.isRewardModel) throw new Error(`--difficulty-model: ${o.difficultyModel} is a reward model; give a causal LM (the policy)`);
        }
        const options = Object.fromEntries(Object.entries({ topFraction: o.topFraction, judgeThreshold: o.judgeThreshold }).filter(([, v]) => v !== undefined));
        const report = await scoreFile({
          input, out: o.out, rejects: o.rejects, rewardModel, options, judge, difficultyModel, batchSize: o.batchSize, chat: o.chat,
        });
        console.log(formatReport(report));
      } finally {
        rewardModel.model.dispose();
        difficultyModel?.model.dispose();
      }
    });
}
