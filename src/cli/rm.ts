/**
 * Reward-model commands: `rm train` (Bradley–Terry on preference pairs) and `rm score` (one
 * reward per {prompt, response} row).
 */
import { Option, type Command } from 'commander';
import { backendOption, checkWorkersFlag, example, floatArg, forceWorkersOption, intArg, overwriteOption, progress, useBackend, workersArg, memoryFlags, memoryOptions, addOptions } from './common.js';
import { MAX_ROWS_PER_BATCH } from '../config/limits.js';
import { DataError } from '../util/errors.js';
import { BACKEND_NAMES } from '../util/backend-names.js';
import { loadConfig } from '../config/load.js';
import { modelDims, REWARD_HEADS } from '../model/config.js';
import { readJsonl, writeJsonlAtomic } from '../../data/jsonl.js';
import { ScoreRowSchema } from '../../data/rows.js';

/** `--backend` without a default, so that a config file's `backend` is not overridden. */
function configBackendOption(): Option {
  return new Option('--backend <name>', 'tensor backend (default: the config\'s, else auto: tfjs-node-gpu, tfjs-node, then wasm)').choices([...BACKEND_NAMES]);
}

function formatMetric(value: unknown): string {
  return typeof value === 'number' ? value.toFixed(4) : 'n/a';
}

export function registerRmCommands(program: Command): void {
  const rm = program.command('rm').description('reward models: train on preference pairs, score responses');

  const train = rm
    .command('train')
    .description('train a reward model (a causal LM plus a scalar score head, or its own LM head with --head logprob) on preference pairs, Bradley–Terry')
    .option('--config <file>', 'YAML or JSON config of RewardConfigSchema fields (model, train, out, lr, …); flags and --set override it')
    .option('--set <key=value>', 'override a config field (repeatable), e.g. --set lr=2e-5', (v: string, prev: string[]) => [...prev, v], [] as string[])
    .option('--model <dir>', 'causal LM to add a score head to, or a reward model to continue')
    .option('--train <file>', 'JSONL preference rows {prompt, chosen, rejected, edited?, strength?}')
    .option('--eval <file>', 'JSONL preference rows for evaluation (default: hold out evalFraction of --train)')
    .option('--out <dir>', 'run folder: checkpoints, metrics.jsonl, the final model in OUT itself (loadable as OUT)')
    .option('--strengths <list>', 'comma-separated strengths trained on (default significantly_better,better)', (v: string) => v.split(',').map((s) => s.trim()))
    .option('--margin', 'Llama 2\'s per-strength margin (off in Llama 3)')
    .option('--centering-coefficient <c>', 'reward centering c·(r_c + r_r)²', floatArg('--centering-coefficient', { min: 0 }))
    .addOption(new Option('--head <head>', 'score: a new scalar head on the last token (default); logprob: beta · mean log-prob of the response under the LM head (SimPO\'s reward)').choices([...REWARD_HEADS]))
    .option('--beta <b>', 'head logprob: r = beta · mean token log-prob (default 1)', floatArg('--beta', { min: 0 }))
    .option('--nll-coefficient <a>', 'head logprob: NLL term on each row\'s best response, per token (CPO; default 0)', floatArg('--nll-coefficient', { min: 0 }))
    .option('--max-length <n>', 'most prompt + response tokens; longer rows are dropped and counted', intArg('--max-length', { min: 1 }))
    .option('--max-prompt-length <n>', 'prompt tokens kept (first token and the end)', intArg('--max-prompt-length', { min: 1 }))
    .option('--chat', 'render rows with the chat template (default: when the tokenizer has one)')
    .option('--no-chat', 'render rows as [BOS] prompt, response [EOS]')
    .option('--max-steps <n>', 'optimizer steps (default: from epochs)', intArg('--max-steps', { min: 1 }))
    .option('--epochs <n>', 'passes over the training rows', floatArg('--epochs', { min: 0 }))
    .option('--batch-size <n>', 'preference rows per optimizer step', intArg('--batch-size', { min: 1 }))
    .option('--micro-batch-size <n>', 'preference rows per forward/backward (gradient accumulation)', intArg('--micro-batch-size', { min: 1 }))
    .option('--lr <lr>', 'peak learning rate', floatArg('--lr', { min: 0 }))
    .option('--eval-every <n>', 'steps between evaluations (0: at the end only)', intArg('--eval-every', { min: 0 }))
    .option('--log-every <n>', 'steps between log lines', intArg('--log-every', { min: 1 }))
    .option('--save-every <n>', 'steps between checkpoints', intArg('--save-every', { min: 0 }))
    .option('--seed <n>', 'seed for the head, the split and the data order', intArg('--seed', { min: 0 }))
    .option('--skip-invalid', 'skip invalid rows (counted) instead of stopping at the first')
    .option('--workers <n>', 'data-parallel replicas (default: cores on wasm/cpu, 1 on tensorflow; at most the cores)', workersArg())
    .addOption(forceWorkersOption())
    .option('--resume', 'continue from the latest checkpoint in --out')
    .addOption(overwriteOption());
  addOptions(train, memoryOptions())
    .addOption(configBackendOption())
    .addHelpText(
      'after',
      example(
        'tfalign rm train --config configs/rm.yaml --set maxSteps=200',
        'tfalign rm train --model runs/sft --train data/prefs.jsonl --out runs/rm --lr 1e-5 --batch-size 8',
      ),
    )
    .action(async (o) => {
      const { describePreferenceData, RewardConfigSchema, trainRewardModel } = await import('../trainers/reward.js');
      const config = loadConfig(RewardConfigSchema, {
        file: o.config,
        sets: o.set,
        flags: {
          ...memoryFlags(o),
          model: o.model, train: o.train, eval: o.eval, out: o.out, strengths: o.strengths, margin: o.margin,
          centeringCoefficient: o.centeringCoefficient, head: o.head, beta: o.beta, nllCoefficient: o.nllCoefficient, maxLength: o.maxLength, maxPromptLength: o.maxPromptLength, chat: o.chat,
          maxSteps: o.maxSteps, epochs: o.epochs, batchSize: o.batchSize, microBatchSize: o.microBatchSize, lr: o.lr,
          evalEvery: o.evalEvery, logEvery: o.logEvery, saveEvery: o.saveEvery, seed: o.seed, skipInvalid: o.skipInvalid,
          resume: o.resume, backend: o.backend, workers: o.workers, forceWorkers: o.forceWorkers, overwrite: o.overwrite,
        },
      });
      let bar: ReturnType<typeof progress> | undefined;
      const result = await trainRewardModel(config, {
        onStart: ({ numSteps, numTrainRows, numEvalRows, data, initialEval }) => {
          console.error(`rm train: ${describePreferenceData(data.train)}`);
          if (data.eval) console.error(`rm train: ${describePreferenceData(data.eval)}`);
          console.error(`rm train: ${numTrainRows} training rows, ${numEvalRows} held out, ${numSteps} steps`);
          if (initialEval) console.error(`rm train: before training: eval accuracy ${formatMetric(initialEval.accuracy)} margin ${formatMetric(initialEval.margin)}`);
          bar = progress('rm train', numSteps);
        },
        onLog: (r) => {
          if (r.split === 'train') bar?.update(r.step, { loss: r.loss, acc: r.accuracy, margin: r.margin, 'tok/s': r.tokens_per_s });
          else console.error(`\neval step ${r.step}: loss ${formatMetric(r.loss)} accuracy ${formatMetric(r.accuracy)} margin ${formatMetric(r.margin)}`);
        },
      });
      bar?.done();
      const before = result.initialEval ? `${formatMetric(result.initialEval.accuracy)} → ` : '';
      const evalText = result.lastEval ? `, eval accuracy ${before}${formatMetric(result.lastEval.accuracy)}, margin ${formatMetric(result.lastEval.margin)}` : '';
      console.log(`rm train: saved ${result.modelDir} after ${result.numSteps} steps${evalText}`);
    });

  rm.command('score')
    .description('score each {prompt, response} row with a reward model; writes the rows with a reward field added')
    .requiredOption('--model <dir>', 'reward model folder')
    .requiredOption('--input <file>', 'JSONL rows {prompt, response} (other fields are kept)')
    .option('--output <file>', 'JSONL output, written atomically (default: standard output)')
    .option('--batch-size <n>', 'sequences per forward pass', intArg('--batch-size', { min: 1, max: MAX_ROWS_PER_BATCH }), 8)
    .option('--chat', 'render rows with the chat template (default: when the tokenizer has one, as rm train does)')
    .option('--no-chat', 'render rows as [BOS] prompt, response [EOS]')
    .option('--parse-special-tokens', 'match special-token strings in the texts (<|eot_id|>) as control tokens (default: plain text, as rm train)')
    .option('--workers <n>', 'worker threads sharing the rows, each with its own model copy (default 1, at most the cores); same scores, same order', workersArg(), 1)
    .addOption(forceWorkersOption())
    .addOption(backendOption())
    .addHelpText('after', example('tfalign rm score --model runs/rm --input samples.jsonl --output scored.jsonl --batch-size 16'))
    .action(async (o) => {
      const { Tokenizer } = await import('../tokenizer/tokenizer.js');
      const { scoreResponses } = await import('../inference/reward-scoring.js');
      const { loadConfig: loadModelConfig, loadPretrained } = await import('../model/pretrained.js');
      const { ShardPool } = await import('../inference-pool/shard-pool.js');
      checkWorkersFlag('rm score', o.workers, o.forceWorkers);
      // Read and validate every row before loading the model: a bad row fails fast, nothing written.
      const { rows } = await readJsonl(o.input, ScoreRowSchema.passthrough());
      if (rows.length === 0) throw new DataError(o.input, undefined, undefined, 'no rows to score');
      await useBackend(o.backend);
      if (!modelDims(loadModelConfig(o.model)).isRewardModel) throw new Error(`rm score: ${o.model} is a causal LM; give a reward model (rm train's OUT)`);
      const inputs = rows.map((r) => r.value);
      const options = { batchSize: o.batchSize, chat: o.chat, parseSpecialTokens: Boolean(o.parseSpecialTokens) };
      const describeRow = (i: number) => `${o.input}:${rows[i].line}`;
      // --workers > 1: the rows are sharded across a pool of threads that load the folder themselves
      const pool = o.workers > 1 ? await ShardPool.create({ numWorkers: o.workers }) : undefined;
      const model = pool ? undefined : await loadPretrained(o.model);
      try {
        const rewards = pool
          ? await pool.score(o.model, inputs, { ...options, labels: rows.map((_, i) => describeRow(i)) })
          : scoreResponses(model!, await Tokenizer.fromFolder(o.model), inputs, { ...options, describeRow });
        const outRows = rows.map((r, i) => ({ ...r.value, reward: rewards[i] }));
        if (o.output) {
          await writeJsonlAtomic(o.output, outRows);
          console.error(`rm score: ${outRows.length} rows → ${o.output}`);
        } else {
          for (const row of outRows) process.stdout.write(JSON.stringify(row) + '\n');
        }
      } finally {
        await pool?.close();
        model?.dispose();
      }
    });
}
