/**
 * `tfalign dpo`: DPO from an SFT checkpoint (src/trainers/dpo.ts). Flags override the config file,
 * `--set key=value` overrides both; the merged config is validated before anything runs.
 */
import { Option, type Command } from 'commander';
import { BACKEND_NAMES } from '../util/backend-names.js';
import { loadConfig } from '../config/load.js';
import { DPO_LOSS_TYPES } from '../../losses/dpo-loss-types.js';
import { example, floatArg, forceWorkersOption, intArg, overwriteOption, progress, workersArg, memoryFlags, memoryOptions, addOptions } from './common.js';

export function registerDpoCommands(program: Command): void {
  const dpoCommand = program
    .command('dpo')
    .description('direct preference optimization from an SFT checkpoint (Llama 3: β 0.1, NLL term 0.2, formatting tokens masked)')
    .option('--config <file>', 'YAML or JSON run config (fields of the DPO config; flags and --set override it)')
    .option('--set <kv>', 'override a config field, e.g. --set labelSmoothing=0.1 (repeatable)', (v: string, prev: string[]) => [...prev, v], [] as string[])
    .option('--model <dir>', 'SFT model folder: the policy starts here and it is the reference')
    .option('--train <file>', 'preference JSONL {prompt, chosen, rejected, edited?, strength?}')
    .option('--eval <file>', 'held-out preference JSONL (default: evalFraction of --train)')
    .option('--out <dir>', 'run folder: reference_logps.jsonl, checkpoints, metrics.jsonl, the final model in OUT itself (loadable as OUT)')
    .option('--beta <b>', 'β, the KL strength (default 0.1)', floatArg('--beta'))
    .option('--nll-coefficient <a>', 'α, weight of the NLL term on chosen responses (default 0.2; 0 = plain DPO)', floatArg('--nll-coefficient'))
    .addOption(new Option('--loss-type <name>', 'preference loss (default sigmoid): sigmoid (DPO), ipo (TRL\'s IPO: log-probs divided by response length), ipo_sum (IPO on summed log-probs), hinge (SLiC)').choices([...DPO_LOSS_TYPES]))
    .option('--max-steps <n>', 'optimizer steps (default: epochs over the pairs)', intArg('--max-steps', { min: 1 }))
    .option('--lr <lr>', 'peak learning rate (default 1e-5)', floatArg('--lr'))
    .option('--batch-size <n>', 'pairs per optimizer step (default 8)', intArg('--batch-size', { min: 1 }))
    .option('--skip-invalid', 'skip (and count) invalid JSONL rows instead of stopping')
    .option('--resume', 'continue from the latest checkpoint in --out, reusing stored reference log-probs')
    .option('--workers <n>', 'data-parallel replicas (default: cores on wasm/cpu, 1 on tensorflow; at most the cores)', workersArg())
    .addOption(forceWorkersOption())
    .addOption(overwriteOption());
  addOptions(dpoCommand, memoryOptions())
    // no default here, so a backend set in the config file is not overridden
    .addOption(new Option('--backend <name>', 'tensor backend: auto tries tfjs-node-gpu, tfjs-node, then wasm').choices([...BACKEND_NAMES]))
    .addHelpText(
      'after',
      example(
        'tfalign dpo --config configs/llama3.yaml --model runs/sft --train data/prefs.jsonl --out runs/dpo',
        'tfalign dpo --model runs/sft --train data/prefs.jsonl --out runs/dpo --beta 0.1 --nll-coefficient 0.2 --max-steps 200 --set evalEvery=50',
        'tfalign dpo --model runs/sft --train data/prefs.jsonl --out runs/dpo-lora --lora --set referenceMode=resident   # reference = base, adapters off',
      ),
    )
    .action(async (o) => {
      const { dpo, DpoConfigSchema } = await import('../trainers/dpo.js');
      const config = loadConfig(DpoConfigSchema, {
        file: o.config,
        flags: {
          ...memoryFlags(o),
          model: o.model, train: o.train, eval: o.eval, out: o.out, beta: o.beta, nllCoefficient: o.nllCoefficient, lossType: o.lossType,
          maxSteps: o.maxSteps, lr: o.lr, batchSize: o.batchSize, skipInvalid: o.skipInvalid ? true : undefined,
          resume: o.resume ? true : undefined, backend: o.backend, workers: o.workers,
          forceWorkers: o.forceWorkers ? true : undefined, overwrite: o.overwrite ? true : undefined,
        },
        sets: o.set,
      });
      let bar: ReturnType<typeof progress> | undefined;
      const result = await dpo(config, {
        onReference: ({ file, numComputed, numReused, seconds }) =>
          console.error(`dpo: reference log-probs: ${numComputed} pairs computed, ${numReused} reused (${seconds.toFixed(1)} s) → ${file}`),
        onStart: ({ numSteps, numTrainPairs, numEvalPairs, referenceMode, dataSummary }) => {
          for (const line of dataSummary) console.error(`dpo: ${line}`);
          console.error(`dpo: ${numTrainPairs} training pairs, ${numEvalPairs} held out, ${numSteps} steps, reference ${referenceMode}`);
          bar = progress('dpo', numSteps);
        },
        onLog: (r) => {
          if (r.split === 'train') {
            bar?.update(r.step, { loss: r.loss, acc: r['rewards/accuracies'], margin: r['rewards/margins'], 'tok/s': r.tokens_per_s, lr: r.lr });
          } else {
            const f = (k: string) => Number(r[k]).toFixed(4);
            console.error(`\neval step ${r.step}: loss ${f('loss')} rewards/accuracies ${f('rewards/accuracies')} rewards/margins ${f('rewards/margins')} logps/chosen ${f('logps/chosen')} nll_loss ${f('nll_loss')}`);
          }
        },
      });
      bar?.done();
      const acc = result.lastEval ? `, eval rewards/accuracies ${Number(result.lastEval['rewards/accuracies']).toFixed(3)}` : '';
      console.log(`dpo: saved ${result.modelDir} (${result.tokensPerSecond.toFixed(0)} tokens/s${acc})`);
    });
}
