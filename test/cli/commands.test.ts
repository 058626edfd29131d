import { beforeAll, describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { buildProgram } from '../../src/cli/main.js';
import { readSafetensors } from '../../src/model/safetensors.js';

/** Runs the real binary; returns exit status, stdout and stderr. */
function tfalign(...args: string[]) {
  const r = spawnSync(process.execPath, ['bin/tfalign.js', ...args], { encoding: 'utf8', timeout: 120_000 });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

describe('tfalign command line', () => {
  let dir: string;
  beforeAll(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tfalign-cli-'));
    const words = 'the cat dog bird sat ran on under mat log tree red blue green big small'.split(' ');
    const docs = Array.from({ length: 400 }, (_, d) => Array.from({ length: 6 + (d % 9) }, (_, i) => words[(d * 7 + i * 3) % words.length]).join(' ') + '.');
    fs.writeFileSync(path.join(dir, 'corpus.txt'), docs.join('\n\n'));
  });

  it('lists every command with a description, and every leaf command shows an example', () => {
    const program = buildProgram();
    const help = tfalign('--help');
    expect(help.status).toBe(0);
    for (const cmd of program.commands) expect(help.stdout).toContain(cmd.name());
    const leaves = program.commands.flatMap((c) => (c.commands.length > 0 ? c.commands.map((s) => [c.name(), s.name()]) : [[c.name()]]));
    expect(leaves.length).toBeGreaterThan(15);
    for (const names of leaves) {
      const cmd = names.reduce((c, n) => c.commands.find((s) => s.name() === n)!, program);
      expect(cmd.description(), names.join(' ')).not.toBe('');
      let text = '';
      cmd.configureOutput({ writeOut: (t) => (text += t), writeErr: (t) => (text += t) });
      cmd.outputHelp();
      expect(text, names.join(' ')).toContain('Example:');
    }
  });

  it('tokenizer train → model init → pretrain → generate (paged, dense, none agree greedily) → logprobs', () => {
    expect(tfalign('tokenizer', 'train', '--corpus', path.join(dir, 'corpus.txt'), '--vocab-size', '300', '--out', path.join(dir, 'tok')).status).toBe(0);
    const init = tfalign('model', 'init', '--config', 'configs/models/tiny.json', '--tokenizer', path.join(dir, 'tok'), '--out', path.join(dir, 'base'), '--backend', 'wasm');
    expect(init.status).toBe(0);
    expect(init.stderr).toContain('backend: wasm');
    const pre = tfalign('pretrain', '--model', path.join(dir, 'base'), '--corpus', path.join(dir, 'corpus.txt'), '--out', path.join(dir, 'pre'), '--max-steps', '30', '--seq-len', '32', '--lr', '0.003', '--log-every', '10', '--backend', 'wasm');
    expect(pre.status, pre.stderr).toBe(0);
    const metrics = fs.readFileSync(path.join(dir, 'pre', 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l));
    const train = metrics.filter((m) => m.split === 'train');
    expect(train.map((m) => m.step)).toEqual([10, 20, 30]);
    expect(train[2].loss).toBeLessThan(train[0].loss);
    const model = path.join(dir, 'pre');
    // --out is the model (TRL's output_dir): the HF files beside metrics.jsonl, and the marker that
    // makes the folder the trainer's (src/util/atomic.ts), still holding the starting model's hash
    expect(fs.readdirSync(model).sort()).toEqual(['.tfalign-output.json', 'config.json', 'generation_config.json', 'metrics.jsonl', 'model.safetensors', 'special_tokens_map.json', 'tokenizer.json', 'tokenizer_config.json']);
    const marker = JSON.parse(fs.readFileSync(path.join(model, '.tfalign-output.json'), 'utf8'));
    expect(marker).toMatchObject({ command: 'pretrain', modelPath: path.join(dir, 'base'), files: ['config.json', 'generation_config.json', 'model.safetensors', 'special_tokens_map.json', 'tokenizer.json', 'tokenizer_config.json'] });
    expect(marker.model).toMatch(/^[0-9a-f]{64}$/);

    const outputs = ['paged', 'dense', 'none'].map((kv) => {
      const g = tfalign('generate', '--model', model, '--prompt', 'the cat', '--temperature', '0', '--max-new-tokens', '12', '-n', '2', '--kv-cache', kv, '--json', '--backend', 'wasm');
      expect(g.status, g.stderr).toBe(0);
      return g.stdout.trim().split('\n').map((l) => JSON.parse(l).token_ids);
    });
    expect(outputs[0]).toEqual(outputs[1]);
    expect(outputs[0]).toEqual(outputs[2]);

    fs.writeFileSync(path.join(dir, 'rows.jsonl'), '{"prompt": "the cat", "response": " sat on the mat."}\n{"prompt_ids": [1, 5, 6], "response_ids": [7, 8]}\n');
    const lp = tfalign('logprobs', '--model', model, '--input', path.join(dir, 'rows.jsonl'), '--backend', 'wasm');
    expect(lp.status, lp.stderr).toBe(0);
    const rows = lp.stdout.trim().split('\n').map((l) => JSON.parse(l));
    expect(rows).toHaveLength(2);
    expect(rows[1].num_tokens).toBe(2);
    expect(rows[1].logprob).toBeCloseTo(rows[1].token_logprobs[0] + rows[1].token_logprobs[1], 5);
    for (const r of rows) for (const v of r.token_logprobs) expect(v).toBeLessThan(0);
  });

  it('model average writes the element-wise (weighted) mean of two checkpoints', () => {
    for (const seed of ['1', '2']) {
      expect(tfalign('model', 'init', '--config', 'configs/models/tiny.json', '--tokenizer', path.join(dir, 'tok'), '--out', path.join(dir, `m${seed}`), '--seed', seed, '--backend', 'wasm').status).toBe(0);
    }
    const avg = tfalign('model', 'average', path.join(dir, 'm1'), path.join(dir, 'm2'), '--weights', '3,1', '--out', path.join(dir, 'avg'), '--backend', 'wasm');
    expect(avg.status, avg.stderr).toBe(0);
    const name = 'model.layers.0.mlp.up_proj.weight';
    const [a, b, m] = ['m1', 'm2', 'avg'].map((f) => readSafetensors(path.join(dir, f, 'model.safetensors')).tensors.get(name)!.data);
    for (let i = 0; i < a!.length; i += 97) expect(m![i]).toBeCloseTo(0.75 * a![i]! + 0.25 * b![i]!, 6);
    expect(fs.existsSync(path.join(dir, 'avg', 'tokenizer.json'))).toBe(true);
  });

  it('bad input: one line naming file, row and field; non-zero exit; nothing written', () => {
    const model = path.join(dir, 'pre');
    fs.writeFileSync(path.join(dir, 'bad.jsonl'), '{"prompt_ids": [1, 2], "response_ids": [3, 99999]}\n');
    const bad = tfalign('logprobs', '--model', model, '--input', path.join(dir, 'bad.jsonl'), '--output', path.join(dir, 'out.jsonl'), '--backend', 'wasm');
    expect(bad.status).toBe(1);
    const errorLines = bad.stderr.split('\n').filter((l) => l.startsWith('error:'));
    expect(errorLines).toEqual([`error: ${path.join(dir, 'bad.jsonl')}:1: response_ids.1: token id 99999 is not below the vocabulary size ${JSON.parse(fs.readFileSync(path.join(model, 'config.json'), 'utf8')).vocab_size}`]);
    expect(fs.existsSync(path.join(dir, 'out.jsonl'))).toBe(false);

    fs.writeFileSync(path.join(dir, 'broken.jsonl'), '{"prompt": "a", "response": "b"}\n{"prompt": \n');
    const broken = tfalign('logprobs', '--model', model, '--input', path.join(dir, 'broken.jsonl'), '--backend', 'wasm');
    expect(broken.status).toBe(1);
    expect(broken.stderr).toContain(`error: ${path.join(dir, 'broken.jsonl')}:2: invalid JSON`);

    const cfg = path.join(dir, 'bad-arch.json');
    fs.writeFileSync(cfg, JSON.stringify({ vocab_size: 64, hidden_size: 30, intermediate_size: 64, num_hidden_layers: 1, num_attention_heads: 4 }));
    const arch = tfalign('model', 'init', '--config', cfg, '--out', path.join(dir, 'never'), '--backend', 'wasm');
    expect(arch.status).toBe(1);
    expect(arch.stderr).toContain('num_attention_heads: 4 heads do not divide hidden_size 30');
    expect(fs.existsSync(path.join(dir, 'never'))).toBe(false);

    const long = tfalign('generate', '--model', model, '--prompt-ids', JSON.stringify(Array.from({ length: 500 }, () => 5)), '--max-new-tokens', '64', '--backend', 'wasm');
    expect(long.status).toBe(1);
    expect(long.stderr).toMatch(/error: .*exceed.* context of 512/);
  });
});
