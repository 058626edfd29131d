/**
 * Commands over single models: `model init`, `model average`, `model merge`, `pretrain`, `logprobs`, `generate`.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { Command } from 'commander';
import { backendOption, checkWorkersFlag, example, floatArg, forceWorkersOption, intArg, overwriteOption, progress, useBackend, workersArg, addOptions, decodingOptions } from './common.js';
import { validateConfig } from '../config/load.js';
import { MAX_ROWS_PER_BATCH, MAX_SAMPLES_PER_PROMPT, MAX_STEPS } from '../config/limits.js';
import { countParameters, modelDims, type ModelDims } from '../model/config.js';
import type { PromptResponseIds } from '../inference/token-logprobs.js';
import type { Tokenizer } from '../tokenizer/tokenizer.js';
import { readJsonl, writeJsonlAtomic } from '../../data/jsonl.js';
import { TokenRowSchema } from '../../data/rows.js';
import { DataError } from '../util/errors.js';
import { DecodingOptionsSchema } from '../../samplers/decoding.js';
import { KV_CACHE_KINDS } from '../../samplers/sampling-io.js';

/** The tokenizer of a model folder, or undefined when it has none (commands given token ids still work). */
async function optionalTokenizer(dir: string): Promise<Tokenizer | undefined> {
  if (!fs.existsSync(path.join(dir, 'tokenizer.json'))) return undefined;
  const { Tokenizer } = await import('../tokenizer/tokenizer.js');
  return Tokenizer.fromFolder(dir);
}

/** `--parse-special-tokens`: special-token strings in the given text become control tokens. */
const PARSE_SPECIAL_TOKENS_HELP = 'match special-token strings in the text (<|eot_id|>) as control tokens (default: plain text)';

function checkIds(ids: number[], model: { dims: ModelDims }, where: string, field: string): void {
  const bad = ids.findIndex((id) => id >= model.dims.vocabSize);
  if (bad >= 0) throw new Error(`${where}: ${field}.${bad}: token id ${ids[bad]} is not below the vocabulary size ${model.dims.vocabSize}`);
}

export function registerModelCommands(program: Command): void {
  const model = program.command('model').description('create, inspect and merge model folders (Hugging Face layout)');

  model
    .command('init')
    .description('random-initialise a model from an architecture file, sized to a tokenizer')
    .requiredOption('--config <file>', 'architecture file, e.g. configs/models/tiny.json')
    .option('--tokenizer <dir>', 'tokenizer folder (sets vocab_size and special token ids; copied into the model)')
    .requiredOption('--out <dir>', 'model folder to write (new, empty, or a previous model init output)')
    .option('--seed <n>', 'initialisation seed', intArg('--seed', { min: 0 }), 0)
    .addOption(overwriteOption())
    .addOption(backendOption())
    .addHelpText('after', example('tfalign model init --config configs/models/tiny.json --tokenizer runs/tok --out runs/base'))
    .action(async (o) => {
      const { createModel } = await import('../model/create.js');
      await useBackend(o.backend);
      const m = await createModel({ configFile: o.config, tokenizerDir: o.tokenizer, out: o.out, seed: o.seed, overwrite: Boolean(o.overwrite) });
      console.log(`model init: ${o.out}: ${m.numParameters().toLocaleString('en-US')} parameters, vocab ${m.dims.vocabSize}, ${m.dims.numLayers} layers`);
      m.dispose();
    });

  model
    .command('info')
    .description('print a model folder\'s architecture and parameter count')
    .argument('<dir>', 'model folder')
    .addHelpText('after', example('tfalign model info runs/quickstart/base/pretrain'))
    .action(async (dir: string) => {
      const { loadConfig } = await import('../model/pretrained.js');
      const config = loadConfig(dir);
      console.log(JSON.stringify({ architecture: config.architectures[0], parameters: countParameters(config), ...config }, null, 2));
    });

  model
    .command('average')
    .description('average the weights of several models of one architecture (Llama 3 model averaging)')
    .argument('<dirs...>', 'model folders')
    .requiredOption('--out <dir>', 'model folder to write (new, empty, or a previous model average output)')
    .option('--weights <list>', 'comma-separated coefficients (normalised); default uniform')
    .addOption(overwriteOption())
    .addOption(backendOption())
    .addHelpText('after', example('tfalign model average runs/sft-a runs/sft-b --out runs/sft-avg'))
    .action(async (dirs: string[], o) => {
      const { averageModels } = await import('../model/create.js');
      await useBackend(o.backend);
      const weights = o.weights ? String(o.weights).split(',').map((w, i) => floatArg(`--weights[${i}]`, { min: 0 })(w)) : undefined;
      if (weights && weights.length !== dirs.length) throw new Error(`--weights: ${weights.length} coefficients for ${dirs.length} models`);
      await averageModels(dirs, o.out, weights, { overwrite: Boolean(o.overwrite) });
      console.log(`model average: ${o.out}: average of ${dirs.length} models`);
    });

  model
    .command('merge')
    .description('fold a LoRA adapter (PEFT folder) into its base model: a plain Hugging Face model folder')
    .requiredOption('--base <dir>', 'base model folder the adapter was trained on')
    .requiredOption('--adapter <dir>', 'PEFT adapter folder (adapter_config.json + adapter_model.safetensors), e.g. the --out folder of a LoRA run')
    .requiredOption('--out <dir>', 'model folder to write (new, empty, or a previous model merge output)')
    .addOption(overwriteOption())
    .addOption(backendOption())
    .addHelpText('after', example('tfalign model merge --base runs/base --adapter runs/sft-lora --out runs/sft-merged'))
    .action(async (o) => {
      const { mergeAdapter } = await import('../model/create.js');
      await useBackend(o.backend);
      const merged = await mergeAdapter(o.base, o.adapter, o.out, { overwrite: Boolean(o.overwrite) });
      console.log(`model merge: ${o.out}: ${o.adapter} folded into ${o.base} (${merged.numParameters().toLocaleString('en-US')} parameters)`);
      merged.dispose();
    });

  program
    .command('pretrain')
    .description('next-token training on a text corpus (a from-scratch model becomes a base model)')
    .requiredOption('--model <dir>', 'model folder to start from')
    .requiredOption('--corpus <file>', 'text file (documents separated by blank lines) or JSONL with a text field')
    .requiredOption('--out <dir>', 'run folder: checkpoints, metrics.jsonl, the final model in OUT itself (loadable as OUT)')
    .option('--max-steps <n>', 'optimizer steps (default: one epoch)', intArg('--max-steps', { min: 1, max: MAX_STEPS }))
    .option('--epochs <n>', 'passes over the corpus', floatArg('--epochs', { min: 0 }))
    .option('--batch-size <n>', 'rows per optimizer step', intArg('--batch-size', { min: 1 }))
    .option('--micro-batch-size <n>', 'rows per forward/backward (gradient accumulation)', intArg('--micro-batch-size', { min: 1 }))
    .option('--seq-len <n>', 'tokens per row', intArg('--seq-len', { min: 2 }))
    .option('--lr <lr>', 'peak learning rate', floatArg('--lr', { min: 0 }))
    .option('--warmup-ratio <r>', 'fraction of steps warming up', floatArg('--warmup-ratio', { min: 0, max: 1 }))
    .option('--weight-decay <w>', 'AdamW decoupled weight decay', floatArg('--weight-decay', { min: 0 }))
    .option('--log-every <n>', 'steps between log lines', intArg('--log-every', { min: 1 }))
    .option('--save-every <n>', 'steps between checkpoints', intArg('--save-every', { min: 0 }))
    .option('--seed <n>', 'seed for data order', intArg('--seed', { min: 0 }))
    .option('--workers <n>', 'data-parallel replicas (default: cores on wasm/cpu, 1 on tensorflow; at most the cores)', workersArg())
    .addOption(forceWorkersOption())
    .option('--parse-special-tokens', 'match special-token strings in the corpus as control tokens (chat-formatted corpora)')
    .option('--resume', 'continue from the latest checkpoint in --out')
    .addOption(overwriteOption())
    .addOption(backendOption())
    .addHelpText('after', example('tfalign pretrain --model runs/base --corpus data/corpus.txt --out runs/pretrain --max-steps 200 --batch-size 8 --seq-len 128'))
    .action(async (o) => {
      const { pretrain } = await import('../trainers/pretrain.js');
      let bar: ReturnType<typeof progress> | undefined;
      const result = await pretrain(
        {
          model: o.model, corpus: o.corpus, out: o.out, backend: o.backend, maxSteps: o.maxSteps, epochs: o.epochs,
          batchSize: o.batchSize, microBatchSize: o.microBatchSize, seqLen: o.seqLen, lr: o.lr, warmupRatio: o.warmupRatio,
          weightDecay: o.weightDecay, logEvery: o.logEvery, saveEvery: o.saveEvery, seed: o.seed, workers: o.workers, resume: Boolean(o.resume),
          forceWorkers: Boolean(o.forceWorkers), overwrite: Boolean(o.overwrite), parseSpecialTokens: Boolean(o.parseSpecialTokens),
        },
        {
          onStart: ({ numSteps, numTrainRows, numEvalRows }) => {
            console.error(`pretrain: ${numTrainRows} training rows, ${numEvalRows} held out, ${numSteps} steps`);
            bar = progress('pretrain', numSteps);
          },
          onLog: (r) => {
            if (r.split === 'train') bar?.update(r.step, { loss: r.loss, 'tok/s': r.tokens_per_s, lr: r.lr });
            else console.error(`\neval step ${r.step}: loss ${Number(r.loss).toFixed(4)} perplexity ${Number(r.perplexity).toFixed(2)}`);
          },
        },
      );
      bar?.done();
      console.log(`pretrain: saved ${result.modelDir} (${result.tokensPerSecond.toFixed(0)} tokens/s, final eval loss ${Number(result.lastEval?.loss).toFixed(4)})`);
    });

  program
    .command('logprobs')
    .description('log-probabilities of each response token given its prompt, one output row per input row')
    .requiredOption('--model <dir>', 'model folder')
    .requiredOption('--input <file>', 'JSONL rows {"prompt","response"} or {"prompt_ids","response_ids"}')
    .option('--output <file>', 'JSONL output (default: standard output)')
    .option('--chat', 'wrap text prompts in the chat template (generation prompt added)')
    .option('--add-eos', 'score the end-of-turn token after the response too')
    .option('--parse-special-tokens', PARSE_SPECIAL_TOKENS_HELP)
    .option('--batch-size <n>', 'rows per forward pass', intArg('--batch-size', { min: 1, max: MAX_ROWS_PER_BATCH }), 8)
    .option('--workers <n>', 'worker threads sharing the rows, each with its own model copy (default 1, at most the cores); same values, same order', workersArg(), 1)
    .addOption(forceWorkersOption())
    .addOption(backendOption())
    .addHelpText('after', example('tfalign logprobs --model runs/base --input rows.jsonl --output scores.jsonl'))
    .action(async (o) => {
      const { encodePrompt } = await import('../tokenizer/chat-template.js');
      const { loadConfig: loadModelConfig, loadPretrained } = await import('../model/pretrained.js');
      const { ShardPool } = await import('../inference-pool/shard-pool.js');
      const { responseLogprobs } = await import('../inference/token-logprobs.js');
      checkWorkersFlag('logprobs', o.workers, o.forceWorkers);
      await useBackend(o.backend);
      const { rows } = await readJsonl(o.input, TokenRowSchema);
      if (rows.length === 0) throw new DataError(o.input, undefined, undefined, 'no rows to score');
      const parse = Boolean(o.parseSpecialTokens);
      // Rows are checked against config.json; the weights load here (1 worker) or in each worker.
      const m = { dims: modelDims(loadModelConfig(o.model)) };
      if (m.dims.isRewardModel) throw new Error(`logprobs: ${o.model} is a reward model; use \`tfalign rm score\``);
      const tok = await optionalTokenizer(o.model);
      const endId = tok?.eotTokenId ?? tok?.eosTokenId;
      const parts: PromptResponseIds[] = rows.map(({ line, value }) => {
        const where = `${o.input}:${line}`;
        let ids: PromptResponseIds;
        if ('prompt_ids' in value) {
          ids = { promptIds: value.prompt_ids, responseIds: value.response_ids };
        } else {
          if (!tok) throw new DataError(o.input, line, 'prompt', `${o.model} has no tokenizer.json; give prompt_ids/response_ids`);
          ids = { promptIds: encodePrompt(tok, value.prompt, Boolean(o.chat), parse), responseIds: tok.encode(value.response, { parseSpecialTokens: parse }) };
          if (o.addEos && endId !== undefined) ids.responseIds.push(endId);
        }
        checkIds(ids.promptIds, m, where, 'prompt_ids');
        checkIds(ids.responseIds, m, where, 'response_ids');
        if (ids.promptIds.length === 0) throw new Error(`${where}: prompt: empty (the first response token needs a context)`);
        const total = ids.promptIds.length + ids.responseIds.length;
        if (total > m.dims.maxPositions) throw new Error(`${where}: prompt: ${total} tokens exceed the context of ${m.dims.maxPositions}`);
        return ids;
      });
      const padId = tok?.batchPadId ?? endId ?? 0;
      let results: Float32Array[];
      if (o.workers > 1) {
        const pool = await ShardPool.create({ numWorkers: o.workers });
        try {
          results = await pool.logprobs(o.model, parts, { batchSize: o.batchSize, padId });
        } finally {
          await pool.close();
        }
      } else {
        const model = await loadPretrained(o.model);
        try {
          results = responseLogprobs(model, parts, o.batchSize, padId);
        } finally {
          model.dispose();
        }
      }
      results.forEach((lp, i) => {
        const bad = lp.findIndex((v) => !Number.isFinite(v));
        if (bad >= 0) throw new Error(`${o.input}:${rows[i]!.line}: response token ${bad}: log-prob is ${lp[bad]}: the model's logits are not finite`);
      });
      const outRows = results.map((lp) => ({
        logprob: lp.reduce((a, b) => a + b, 0),
        num_tokens: lp.length,
        token_logprobs: Array.from(lp),
      }));
      if (o.output) await writeJsonlAtomic(o.output, outRows);
      else for (const r of outRows) process.stdout.write(JSON.stringify(r) + '\n');
    });

  const generate = program
    .command('generate')
    .description('sample completions of a prompt (greedy at temperature 0), with a KV cache')
    .requiredOption('--model <dir>', 'model folder')
    .option('--prompt <text>', 'prompt text')
    .option('--prompt-ids <json>', 'prompt as a JSON array of token ids (no tokenizer needed)')
    .option('--chat', 'wrap the prompt in the chat template')
    .option('-n, --num-samples <k>', 'samples of the prompt', intArg('-n', { min: 1, max: MAX_SAMPLES_PER_PROMPT }), 1);
  addOptions(generate, decodingOptions({ maxNewTokens: 64, seed: 'sample i uses seed + i' }))
    .option('--parse-special-tokens', PARSE_SPECIAL_TOKENS_HELP)
    .option('--kv-cache <kind>', 'paged (prompt computed once, shared by the samples), dense (per-sample cache, the prompt stored n times) or none (recompute every step)', 'paged')
    .option('--json', 'print one JSON object per sample')
    .addOption(backendOption())
    .addHelpText('after', example('tfalign generate --model runs/pretrain --prompt "Once upon a time" -n 4 --temperature 0.8 --top-p 0.95'))
    .action(async (o) => {
      const { encodePrompt } = await import('../tokenizer/chat-template.js');
      const { loadPretrained } = await import('../model/pretrained.js');
      const { generate } = await import('../../samplers/generate.js');
      const { SamplingEngine } = await import('../../samplers/engine.js');
      if ((o.prompt === undefined) === (o.promptIds === undefined)) throw new Error('generate: give exactly one of --prompt or --prompt-ids');
      if (!(KV_CACHE_KINDS as readonly string[]).includes(o.kvCache)) throw new Error(`--kv-cache: expected ${KV_CACHE_KINDS.join(', ')}, got "${o.kvCache}"`);
      await useBackend(o.backend);
      const m = await loadPretrained(o.model);
      const tok = await optionalTokenizer(o.model);
      let promptIds: number[];
      if (o.promptIds !== undefined) {
        try {
          promptIds = JSON.parse(o.promptIds);
        } catch {
          throw new Error('--prompt-ids: expected a JSON array of integers');
        }
        if (!Array.isArray(promptIds) || !promptIds.every((x) => Number.isInteger(x) && x >= 0)) throw new Error('--prompt-ids: expected a JSON array of non-negative integers');
      } else {
        if (!tok) throw new Error(`generate: ${o.model} has no tokenizer.json; use --prompt-ids`);
        promptIds = encodePrompt(tok, o.prompt, Boolean(o.chat), Boolean(o.parseSpecialTokens));
      }
      checkIds(promptIds, m, 'generate', 'prompt_ids');
      const eos = m.config.eos_token_id;
      const stopTokenIds = eos === null || eos === undefined ? [] : Array.isArray(eos) ? eos : [eos];
      const decoding = validateConfig(DecodingOptionsSchema, { temperature: o.temperature, topK: o.topK, topP: o.topP, maxNewTokens: o.maxNewTokens, stopTokenIds }, 'generate');
      const t0 = performance.now();
      const samples =
        o.kvCache === 'paged'
          ? new SamplingEngine({ model: m, kvCache: 'paged' }).generate([{ promptIds, numSamples: o.numSamples, seed: o.seed }], decoding).outputs[0]!
          : generate(m, promptIds, { numSamples: o.numSamples, decoding, seed: o.seed, kvCache: o.kvCache });
      const seconds = (performance.now() - t0) / 1000;
      samples.forEach((s, i) => {
        const text = tok ? tok.decode(s.tokenIds, { skipSpecialTokens: true }) : undefined;
        if (o.json) console.log(JSON.stringify({ index: i, text, token_ids: s.tokenIds, finish_reason: s.finishReason }));
        else console.log(`--- sample ${i} (${s.tokenIds.length} tokens, ${s.finishReason})\n${text ?? JSON.stringify(s.tokenIds)}`);
      });
      const numTokens = samples.reduce((a, s) => a + s.tokenIds.length, 0);
      console.error(`generate: ${numTokens} tokens in ${seconds.toFixed(2)} s (${(numTokens / seconds).toFixed(1)} tokens/s)`);
      m.dispose();
    });
}
