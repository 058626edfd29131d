/**
 * `pretrain --workers 2` (through the command line) against the same run on one thread: the
 * metrics and the saved model agree within float tolerance.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Command } from 'commander';
import { beforeAll, describe, expect, it, vi } from 'vitest';
import { initBackend } from '../../src/backend.js';
import { buildTokenizerConfig, trainByteLevelBpe, writeTokenizerFolder } from '../../src/tokenizer/bpe-trainer.js';
import { createModel } from '../../src/model/create.js';
import { loadPretrained } from '../../src/model/pretrained.js';
import { pretrain, PretrainConfigSchema } from '../../src/trainers/pretrain.js';
import { registerModelCommands } from '../../src/cli/model.js';
import type { LogRecord } from '../../src/train/loop.js';
import { WorkerStepEngine } from '../../src/parallel/worker-engine.js';
import { squaredDiffAndNorm } from './compare-weights.js';

const root = fs.mkdtempSync(path.join(os.tmpdir(), 'tfalign-pretrain-workers-'));
const tokDir = path.join(root, 'tok');
const baseDir = path.join(root, 'base');
const corpusFile = path.join(root, 'corpus.txt');

/** Short documents with a pattern, separated by blank lines. */
function corpus(): string {
  const animals = ['cat', 'dog', 'cow', 'owl', 'fox', 'hen'];
  const sounds = ['meow', 'woof', 'moo', 'hoot', 'yip', 'cluck'];
  return Array.from({ length: 60 }, (_, d) => `The ${animals[d % 6]} says ${sounds[d % 6]}, ${d % 5 + 1} times, then sleeps.`).join('\n\n') + '\n';
}

beforeAll(async () => {
  await initBackend('wasm', { quiet: true });
  const text = corpus();
  fs.writeFileSync(corpusFile, text);
  const tokenizerJson = trainByteLevelBpe([text], { vocabSize: 300 });
  writeTokenizerFolder(tokDir, { tokenizerJson, tokenizerConfig: buildTokenizerConfig(tokenizerJson) });
  (await createModel({ configFile: 'configs/models/tiny.json', tokenizerDir: tokDir, out: baseDir, seed: 4 })).dispose();
});

describe('pretrain with workers', () => {
  it('the config accepts workers (a positive integer) and leaves it unset by default', () => {
    const base = { model: baseDir, corpus: corpusFile, out: path.join(root, 'x') };
    expect(PretrainConfigSchema.parse(base).workers).toBeUndefined();
    expect(PretrainConfigSchema.parse({ ...base, workers: 2 }).workers).toBe(2);
    expect(() => PretrainConfigSchema.parse({ ...base, workers: 0 })).toThrow();
  });

  it('--workers 3 on the command line gives the 1-worker run: same losses and final weights within 1e-5 relative', async () => {
    const create = vi.spyOn(WorkerStepEngine, 'create');
    const common = { model: baseDir, corpus: corpusFile, backend: 'wasm' as const, seqLen: 32, batchSize: 8, maxSteps: 3, lr: 1e-3, logEvery: 1, seed: 3 };
    const oneDir = path.join(root, 'one');
    const single: LogRecord[] = [];
    await pretrain({ ...common, out: oneDir, workers: 1 }, { onLog: (r) => single.push(r) });
    expect(create).not.toHaveBeenCalled();

    const twoDir = path.join(root, 'two');
    const program = new Command('tfalign');
    program.exitOverride();
    registerModelCommands(program);
    const log = vi.spyOn(console, 'log').mockImplementation(() => undefined);
    const err = vi.spyOn(console, 'error').mockImplementation(() => undefined);
    const bar = vi.spyOn(process.stderr, 'write').mockImplementation(() => true);
    try {
      await program.parseAsync([
        'node', 'tfalign', 'pretrain', '--model', baseDir, '--corpus', corpusFile, '--out', twoDir, '--backend', 'wasm', '--seq-len', '32',
        '--batch-size', '8', '--max-steps', '3', '--lr', '1e-3', '--log-every', '1', '--seed', '3', '--workers', '3', '--force-workers', // more than this machine's cores: asked for explicitly
      ]);
      expect(create).toHaveBeenCalledTimes(1);
      expect(create.mock.calls[0][0]).toMatchObject({ numWorkers: 3, backend: 'wasm', task: { kind: 'causal-lm' } });
    } finally {
      log.mockRestore();
      err.mockRestore();
      bar.mockRestore();
      create.mockRestore();
    }
    const read = (dir: string) => fs.readFileSync(path.join(dir, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as LogRecord);
    const one = read(oneDir);
    const two = read(twoDir);
    expect(one.map((r) => r.split)).toEqual(['train', 'train', 'train', 'eval']);
    expect(two.map((r) => `${r.split}:${r.step}`)).toEqual(one.map((r) => `${r.split}:${r.step}`));
    one.forEach((r, i) => expect(Math.abs(Number(two[i].loss) - Number(r.loss)) / Number(r.loss)).toBeLessThan(1e-5));
    expect(single.length).toBe(4);

    const a = await loadPretrained(oneDir);
    const b = await loadPretrained(twoDir);
    for (const [name, p] of a.params) {
      const x = p.dataSync();
      const y = b.params.get(name)!.dataSync();
      const { diff, norm } = squaredDiffAndNorm(x, y);
      expect(Math.sqrt(diff / norm), name).toBeLessThan(1e-5);
    }
    a.dispose();
    b.dispose();
  });
});
