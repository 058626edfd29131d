/**
 * `tfalign sft`: supervised fine-tuning from a config file, flags and `--set` overrides
 * (flags win over the file, `--set` over both), with a progress bar on a TTY and one line per
 * log step otherwise.
 */
import type { Command } from 'commander';
import { backendOption, example, floatArg, forceWorkersOption, intArg, overwriteOption, progress, workersArg, memoryFlags, memoryOptions, addOptions } from './common.js';
import { loadConfig } from '../config/load.js';

export function registerSftCommands(program: Command): void {
  const sftCommand = program
    .command('sft')
    .description('supervised fine-tuning: cross-entropy on response tokens, prompt tokens masked (Llama 3 recipe, lr 1e-5)')
    .option('--config <file>', 'YAML or JSON run config (the fields of SftConfigSchema)')
    .option('--set <key=value>', 'override a config field, e.g. --set evalEvery=50 (repeatable)', (v: string, prev: string[]) => [...prev, v], [] as string[])
    .option('--model <dir>', 'model folder to fine-tune (with tokenizer files)')
    .option('--train <file>', 'JSONL of {"prompt","response"} or {"messages"} rows')
    .option('--eval <file>', 'JSONL of held-out rows (default: hold out evalFraction of --train)')
    .option('--out <dir>', 'run folder: checkpoints, metrics.jsonl, the final model in OUT itself (loadable as OUT)')
    .option('--max-steps <n>', 'optimizer steps (default: epochs over the rows)', intArg('--max-steps', { min: 1 }))
    .option('--lr <lr>', 'peak learning rate (default 1e-5)', floatArg('--lr', { min: 0 }))
    .option('--batch-size <n>', 'rows (packed sequences with --packing) per optimizer step', intArg('--batch-size', { min: 1 }))
    .option('--packing', 'pack several rows into each maxLength sequence, attention kept inside each row')
    .option('--skip-invalid', 'skip (and count) malformed rows instead of stopping')
    .option('--workers <n>', 'data-parallel replicas (default: cores on wasm/cpu, 1 on tensorflow; at most the cores)', workersArg())
    .addOption(forceWorkersOption())
    .option('--resume', 'continue from the latest checkpoint in --out')
    .addOption(overwriteOption());
  addOptions(sftCommand, memoryOptions())
    // no default here: an absent flag must not override the config file's backend
    .addOption(backendOption().default(undefined))
    .addHelpText(
      'after',
      example(
        'tfalign sft --config configs/sft.yaml',
        'tfalign sft --model runs/base --train data/sft.jsonl --out runs/sft --max-steps 200 --lr 1e-4 --packing --set maxLength=256',
        'tfalign sft --model runs/base --train data/sft.jsonl --out runs/sft-lora --lora --lora-r 16 --gradient-checkpointing --lr 2e-4',
      ),
    )
    .action(async (o) => {
      const { SftConfigSchema, describeSftData, sft } = await import('../trainers/sft.js');
      const config = loadConfig(SftConfigSchema, {
        file: o.config,
        flags: {
          ...memoryFlags(o),
          model: o.model, train: o.train, eval: o.eval, out: o.out, maxSteps: o.maxSteps, lr: o.lr, batchSize: o.batchSize,
          packing: o.packing, skipInvalid: o.skipInvalid, resume: o.resume, backend: o.backend, workers: o.workers,
          forceWorkers: o.forceWorkers, overwrite: o.overwrite,
        },
        sets: o.set,
      });
      let bar: ReturnType<typeof progress> | undefined;
      let numSequences = 0;
      const result = await sft(config, {
        onData: (report) => {
          for (const line of describeSftData(report)) console.error(`sft: ${line}`);
          numSequences = report.numTrainSequences;
        },
        onStart: ({ numSteps, numTrainRows, numEvalRows }) => {
          const packed = config.packing ? ` packed into ${numSequences} sequences of ${config.maxLength} tokens` : '';
          console.error(`sft: ${numTrainRows} training rows${packed}, ${numEvalRows} held out, ${numSteps} steps`);
          bar = progress('sft', numSteps);
        },
        onLog: (r) => {
          if (r.split === 'train') bar?.update(r.step, { loss: r.loss, lr: r.lr, 'tok/s': r.tokens_per_s });
          else console.error(`${process.stderr.isTTY ? '\n' : ''}sft eval step ${r.step}: loss ${Number(r.loss).toFixed(4)} perplexity ${Number(r.perplexity).toFixed(2)} prompt_loss ${Number(r.prompt_loss).toFixed(4)}`);
        },
      });
      bar?.done();
      const evalPart = result.lastEval ? `final eval loss ${Number(result.lastEval.loss).toFixed(4)} (perplexity ${Number(result.lastEval.perplexity).toFixed(2)}), ` : '';
      console.log(
        `sft: saved ${result.modelDir}: ${result.numSteps} steps, ${evalPart}${result.tokensPerSecond.toFixed(0)} tokens/s, ${(100 * result.paddingFraction).toFixed(1)}% padding`,
      );
    });
}
