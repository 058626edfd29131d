/**
 * The defects a hostile test found (issue 11), reproduced through the real binary: each case is
 * the report's command, and the test asserts the one-line error (or the output) that now comes
 * instead of deleted files, replaced device nodes, V8 aborts, silent garbage or raw ZodErrors.
 * Runs that need a finished run live in test/rounds/integrity.test.ts.
 */
import { spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { initBackend } from '../../src/backend.js';
import { buildTokenizerConfig, trainByteLevelBpe, writeTokenizerFolder } from '../../src/tokenizer/bpe-trainer.js';
import { createModel } from '../../src/model/create.js';
import { savePretrained } from '../../src/model/pretrained.js';
import { toRewardModel } from '../../src/model/weights.js';
import { readSafetensors, writeSafetensors } from '../../src/model/safetensors.js';
import { OUTPUT_MARKER } from '../../src/util/atomic.js';

const REPO = path.resolve(import.meta.dirname, '..', '..');
const CLI = path.join(REPO, 'bin', 'tfalign.js');
const root = fs.mkdtempSync(path.join(os.tmpdir(), 'tfalign-hostile-'));
afterAll(() => fs.rmSync(root, { recursive: true, force: true }));

/** The real binary; `errors` are its `error:` lines. */
function tfalign(args: string[], opts: { cwd?: string; timeout?: number } = {}) {
  const r = spawnSync(process.execPath, [CLI, ...args], { cwd: opts.cwd ?? REPO, encoding: 'utf8', timeout: opts.timeout ?? 120_000, env: { ...process.env, TFALIGN_DEBUG: '' } });
  return { status: r.status, signal: r.signal, stdout: r.stdout, stderr: r.stderr, errors: r.stderr.split('\n').filter((l) => l.startsWith('error: ')) };
}

const file = (name: string) => path.join(root, name);
let tokDir: string;
let base: string;
let base2: string;
let rmDir: string;
const rows = file('rows.jsonl');
const prefs = file('prefs.jsonl');

/** A copy of model folder `from` whose tensor `name` holds NaN at element 3. */
function poisoned(from: string, to: string, name: string): string {
  fs.cpSync(from, to, { recursive: true });
  const weights = path.join(to, 'model.safetensors');
  const { tensors } = readSafetensors(weights);
  tensors.get(name)!.data[3] = Number.NaN;
  writeSafetensors(weights, tensors);
  return to;
}

beforeAll(async () => {
  await initBackend('cpu', { quiet: true });
  tokDir = file('tok');
  const words = 'the cat dog bird sat ran on under mat log tree red blue green big small'.split(' ');
  const corpus = Array.from({ length: 300 }, (_, d) => Array.from({ length: 6 + (d % 5) }, (_, i) => words[(d * 7 + i * 3) % words.length]).join(' ') + '.');
  const tokenizerJson = trainByteLevelBpe([corpus.join('\n')], { vocabSize: 300 });
  writeTokenizerFolder(tokDir, { tokenizerJson, tokenizerConfig: buildTokenizerConfig(tokenizerJson) });
  base = file('base');
  base2 = file('base2');
  const model = await createModel({ configFile: 'configs/models/tiny.json', tokenizerDir: tokDir, out: base, seed: 1 });
  (await createModel({ configFile: 'configs/models/tiny.json', tokenizerDir: tokDir, out: base2, seed: 2 })).dispose();
  rmDir = file('rm');
  const rm = toRewardModel(model, 3);
  await savePretrained(rm, rmDir, { tokenizerDir: tokDir });
  rm.dispose();
  model.dispose();
  fs.writeFileSync(rows, ['{"prompt": "the cat", "response": " sat on the mat."}', '{"prompt": "a dog", "response": " ran."}'].join('\n') + '\n');
  const pairs = Array.from({ length: 8 }, (_, i) => ({ prompt: `the ${words[i]}`, chosen: ' sat on the mat.', rejected: ` ran under the ${words[i + 1]}.` }));
  fs.writeFileSync(prefs, pairs.map((p) => JSON.stringify(p)).join('\n') + '\n');
}, 120_000);

describe('item 1: --out never deletes what is there', () => {
  it('model init --out . in a working directory refuses, keeps its files, and --overwrite writes beside them', () => {
    const work = file('work');
    fs.mkdirSync(work);
    fs.writeFileSync(path.join(work, 'thesis.tex'), 'years of work');
    fs.mkdirSync(path.join(work, 'data'));
    const refused = tfalign(['model', 'init', '--config', path.join(REPO, 'configs/models/tiny.json'), '--tokenizer', tokDir, '--out', '.', '--backend', 'cpu'], { cwd: work });
    expect(refused.status).toBe(1);
    expect(refused.errors).toEqual([
      'error: --out .: holds files tfalign model init did not write (data, thesis.tex); give a new or empty folder, or pass --overwrite to write into it (files it does not write are kept)',
    ]);
    expect(fs.readdirSync(work).sort()).toEqual(['data', 'thesis.tex']);
    const forced = tfalign(['model', 'init', '--config', path.join(REPO, 'configs/models/tiny.json'), '--tokenizer', tokDir, '--out', '.', '--overwrite', '--backend', 'cpu'], { cwd: work });
    expect(forced.status, forced.stderr).toBe(0);
    expect(fs.readFileSync(path.join(work, 'thesis.tex'), 'utf8')).toBe('years of work');
    expect(fs.readdirSync(work)).toEqual(expect.arrayContaining(['data', 'config.json', 'model.safetensors', OUTPUT_MARKER]));
  });

  it('model average and tokenizer train refuse a foreign folder; a previous output of the same command is replaced', () => {
    const foreign = file('foreign');
    fs.mkdirSync(foreign);
    fs.writeFileSync(path.join(foreign, 'keep.txt'), 'x');
    const avg = tfalign(['model', 'average', base, base2, '--out', foreign, '--backend', 'cpu']);
    expect(avg.status).toBe(1);
    expect(avg.errors[0]).toMatch(/^error: --out .*foreign: holds files tfalign model average did not write \(keep\.txt\)/);
    expect(fs.readdirSync(foreign)).toEqual(['keep.txt']);
    const out = file('avg');
    expect(tfalign(['model', 'average', base, base2, '--out', out, '--backend', 'cpu']).status).toBe(0);
    expect(tfalign(['model', 'average', base, base2, '--out', out, '--weights', '3,1', '--backend', 'cpu']).status).toBe(0);
    // …but not the output of another command.
    const other = tfalign(['model', 'init', '--config', 'configs/models/tiny.json', '--tokenizer', tokDir, '--out', out, '--backend', 'cpu']);
    expect(other.errors[0]).toMatch(/is the output of tfalign model average, not of model init/);
    const tok = tfalign(['tokenizer', 'train', '--corpus', path.join(foreign, 'keep.txt'), '--vocab-size', '262', '--out', foreign]);
    expect(tok.errors[0]).toMatch(/holds files tfalign tokenizer train did not write/);
  });

  it('sft refuses an --out that is not its own before training or writing anything', () => {
    const foreign = file('foreign-sft');
    fs.mkdirSync(foreign);
    fs.writeFileSync(path.join(foreign, 'results.csv'), '1,2');
    const r = tfalign(['sft', '--model', base, '--train', rows, '--out', foreign, '--max-steps', '1', '--set', 'maxLength=64', '--backend', 'cpu']);
    expect(r.status).toBe(1);
    expect(r.errors[0]).toMatch(/^error: out .*foreign-sft: holds files tfalign sft did not write \(results\.csv\)/);
    expect(fs.readdirSync(foreign)).toEqual(['results.csv']);
  });
});

describe('item 2: outputs are written through links and special files, never replacing them', () => {
  it('logprobs --output through a symbolic link keeps the link and fills its target', () => {
    const target = file('target.jsonl');
    fs.writeFileSync(target, 'old\n');
    const link = file('link.jsonl');
    fs.symlinkSync(target, link);
    const r = tfalign(['logprobs', '--model', base, '--input', rows, '--output', link, '--backend', 'cpu']);
    expect(r.status, r.stderr).toBe(0);
    expect(fs.lstatSync(link).isSymbolicLink()).toBe(true);
    expect(fs.readFileSync(target, 'utf8').trim().split('\n')).toHaveLength(2);
  });

  it('rm score --output into a FIFO streams to its reader and leaves the FIFO a FIFO', async () => {
    const fifo = file('scores.fifo');
    expect(spawnSync('mkfifo', [fifo]).status).toBe(0);
    const reader = spawn('cat', [fifo]);
    let received = '';
    reader.stdout.on('data', (chunk: Buffer) => (received += chunk.toString()));
    const done = new Promise((resolve) => reader.on('exit', resolve));
    const r = tfalign(['rm', 'score', '--model', rmDir, '--input', rows, '--output', fifo, '--backend', 'cpu']);
    await done;
    expect(r.status, r.stderr).toBe(0);
    expect(fs.lstatSync(fifo).isFIFO()).toBe(true);
    const scored = received.trim().split('\n').map((l) => JSON.parse(l) as { reward: number });
    expect(scored).toHaveLength(2);
    for (const row of scored) expect(Number.isFinite(row.reward)).toBe(true);
  });

  it('rm score --output /dev/full is one line naming the device, which stays a device', () => {
    const r = tfalign(['rm', 'score', '--model', rmDir, '--input', rows, '--output', '/dev/full', '--backend', 'cpu']);
    expect(r.status).toBe(1);
    expect(r.errors).toEqual(['error: /dev/full: cannot write: no space left on device (ENOSPC)']);
    expect(fs.lstatSync('/dev/full').isCharacterDevice()).toBe(true);
    expect(tfalign(['rm', 'score', '--model', rmDir, '--input', rows, '--output', root, '--backend', 'cpu']).errors).toEqual([
      `error: ${root}: cannot write: it is a folder; give a file name`,
    ]);
  });
});

describe('item 3: limits instead of V8 aborts', () => {
  it('batchSize 1e9 in an sft config, --workers 64 and rounds=1e9 are one-line errors naming the field', () => {
    const config = file('big.yaml');
    fs.writeFileSync(config, `model: ${base}\ntrain: ${rows}\nout: ${file('never-big')}\nbatchSize: 1000000000\nbackend: cpu\n`);
    const big = tfalign(['sft', '--config', config]);
    expect(big.status).toBe(1);
    expect(big.signal).toBeNull();
    expect(big.errors).toEqual([`error: ${config}: batchSize: must be at most 1,048,576 (rows in one batch)`]);
    const workers = tfalign(['sft', '--model', base, '--train', rows, '--out', file('never-w'), '--workers', '64', '--backend', 'cpu']);
    expect(workers.status).toBe(1);
    expect(workers.errors[0]).toMatch(/^error: sft config: workers: 64 is more than the \d+ cores of this machine/);
    const rounds = tfalign(['run', '--config', 'test/rounds/fixtures/tiny-run.yaml', '--set', `project=${file('never-run')}`, '--set', 'rounds=1000000000']);
    expect(rounds.status).toBe(1);
    expect(rounds.errors).toEqual(['error: test/rounds/fixtures/tiny-run.yaml: rounds: must be at most 1,000 (rounds of a run)']);
    for (const never of ['never-big', 'never-w', 'never-run']) expect(fs.existsSync(file(never))).toBe(false);
    const score = tfalign(['rm', 'score', '--model', rmDir, '--input', rows, '--workers', '64']);
    expect(score.errors[0]).toMatch(/^error: rm score: --workers: 64 is more than the \d+ cores .*--force-workers/);
  });
});

describe('item 11: NaN/Inf weights are an error naming the tensor', () => {
  it('generate, rm score, sft and dpo stop before writing anything', () => {
    const bad = poisoned(base, file('nan-policy'), 'model.layers.0.mlp.up_proj.weight');
    const badRm = poisoned(rmDir, file('nan-rm'), 'model.norm.weight');
    const tensorError = (dir: string, name: string) =>
      new RegExp(`^error: checkpoint: ${path.join(dir, 'model.safetensors')}: tensor ${name.replace(/\./g, '\\.')} holds NaN at element 3 \\(1 non-finite value of \\d+\\); the checkpoint is corrupt or its training diverged$`);
    const gen = tfalign(['generate', '--model', bad, '--prompt', 'the cat', '--backend', 'cpu']);
    expect(gen.status).toBe(1);
    expect(gen.stdout).toBe('');
    expect(gen.errors[0]).toMatch(tensorError(bad, 'model.layers.0.mlp.up_proj.weight'));
    const out = file('nan-scores.jsonl');
    const score = tfalign(['rm', 'score', '--model', badRm, '--input', rows, '--output', out, '--backend', 'cpu']);
    expect(score.errors[0]).toMatch(tensorError(badRm, 'model.norm.weight'));
    expect(fs.existsSync(out)).toBe(false);
    const sft = tfalign(['sft', '--model', bad, '--train', rows, '--out', file('nan-sft'), '--max-steps', '1', '--set', 'maxLength=64', '--backend', 'cpu']);
    expect(sft.errors[0]).toMatch(tensorError(bad, 'model.layers.0.mlp.up_proj.weight'));
    expect(fs.existsSync(file('nan-sft'))).toBe(false);
    const dpo = tfalign(['dpo', '--model', bad, '--train', prefs, '--out', file('nan-dpo'), '--max-steps', '1', '--backend', 'cpu']);
    expect(dpo.errors[0]).toMatch(tensorError(bad, 'model.layers.0.mlp.up_proj.weight'));
    expect(fs.existsSync(file('nan-dpo'))).toBe(false);
  });
});

describe('item 7: the judge module\'s trust model is documented where it is set', () => {
  it('run --help, round --help and data score --help say the module runs in-process with the user\'s permissions', () => {
    for (const args of [['run', '--help'], ['round', '--help']]) {
      const help = tfalign(args);
      expect(help.status).toBe(0);
      expect(help.stdout).toContain('is imported and run inside this process with your');
      expect(help.stdout).toContain("after the run's lock is held");
    }
    expect(tfalign(['data', 'score', '--help']).stdout).toMatch(/it is code run in this process with\s+your\s+permissions/);
  });
});

describe('item 13 and 18: one readable line, never `error: [`', () => {
  it('generate --top-p 0, eos_token_id -1 and an out-of-range bos_token_id', () => {
    const topP = tfalign(['generate', '--model', base, '--prompt', 'the cat', '--top-p', '0', '--backend', 'cpu']);
    expect(topP.status).toBe(1);
    expect(topP.stderr).not.toContain('error: [');
    expect(topP.stderr).toContain('--top-p: must be greater than 0, got 0');
    for (const [field, value, message] of [
      ['eos_token_id', -1, 'eos_token_id: token id -1 is outside the vocabulary [0, 300)'],
      ['bos_token_id', 99999, 'bos_token_id: token id 99999 is outside the vocabulary [0, 300)'],
    ] as const) {
      const dir = file(`bad-${field}`);
      fs.cpSync(base, dir, { recursive: true });
      const config = JSON.parse(fs.readFileSync(path.join(dir, 'config.json'), 'utf8'));
      fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify({ ...config, [field]: value }));
      const r = tfalign(['generate', '--model', dir, '--prompt', 'the cat', '--backend', 'cpu']);
      expect(r.status).toBe(1);
      expect(r.errors).toEqual([`error: ${path.join(dir, 'config.json')}: ${message}`]);
    }
  });

  it('empty inputs fail for scoring commands as for training commands', () => {
    const empty = file('empty.jsonl');
    fs.writeFileSync(empty, '');
    expect(tfalign(['rm', 'score', '--model', rmDir, '--input', empty, '--backend', 'cpu']).errors).toEqual([`error: ${empty}: no rows to score`]);
    expect(tfalign(['logprobs', '--model', base, '--input', empty, '--backend', 'cpu']).errors).toEqual([`error: ${empty}: no rows to score`]);
  });

  it('an input of binary bytes is named without being echoed', () => {
    const binary = file('secret.jsonl');
    fs.writeFileSync(binary, 'API_KEY=sk-live-1234567890 and more\n');
    const r = tfalign(['logprobs', '--model', base, '--input', binary, '--backend', 'cpu']);
    expect(r.errors).toEqual([`error: ${binary}:1: invalid JSON: unexpected character`]);
    expect(r.stderr).not.toContain('sk-live');
  });

  it('project: /proc fails at once with the path instead of looping', () => {
    const r = tfalign(['run', '--config', 'test/rounds/fixtures/tiny-run.yaml', '--set', 'project=/proc'], { timeout: 60_000 });
    expect(r.signal).toBeNull();
    expect(r.status).toBe(1);
    expect(r.errors).toEqual(['error: /proc/.tfalign: cannot create the folder: no such file or folder (ENOENT)']);
  });
});

describe('item 14: invalid UTF-8 and unpaired surrogates are errors naming file and line', () => {
  it('in a JSONL input', () => {
    const bad = file('latin1.jsonl');
    fs.writeFileSync(bad, Buffer.concat([Buffer.from('{"prompt": "a", "response": "b"}\n{"prompt": "caf'), Buffer.from([0xe9]), Buffer.from('", "response": "b"}\n')]));
    expect(tfalign(['logprobs', '--model', base, '--input', bad, '--backend', 'cpu']).errors).toEqual([
      `error: ${bad}:2: invalid UTF-8 (0xE9 at byte 16 of the line); save the file as UTF-8`,
    ]);
    const lone = file('surrogate.jsonl');
    fs.writeFileSync(lone, '{"prompt": "a", "response": "b\\ud800"}\n');
    expect(tfalign(['logprobs', '--model', base, '--input', lone, '--backend', 'cpu']).errors).toEqual([
      `error: ${lone}:1: response: unpaired UTF-16 surrogate (a lone \\ud800–\\udfff escape is not text)`,
    ]);
  });
});

describe('item 16: dpo --resume with another model', () => {
  it('is refused instead of reusing the first model\'s reference log-probs', () => {
    const out = file('dpo-run');
    const first = tfalign(['dpo', '--model', base, '--train', prefs, '--out', out, '--max-steps', '2', '--set', 'saveEvery=1', '--set', 'evalFraction=0', '--workers', '1', '--backend', 'wasm']);
    expect(first.status, first.stderr).toBe(0);
    const reference = fs.readFileSync(path.join(out, 'reference_logps.jsonl'), 'utf8');
    const other = tfalign(['dpo', '--model', base2, '--train', prefs, '--out', out, '--max-steps', '4', '--resume', '--set', 'evalFraction=0', '--workers', '1', '--backend', 'wasm']);
    expect(other.status).toBe(1);
    expect(other.errors).toHaveLength(1);
    expect(other.errors[0]).toMatch(
      new RegExp(`^error: dpo: --resume: ${out} was started from another model \\(${base}\\), not ${base2} \\(weights sha256 [0-9a-f]{12}… vs [0-9a-f]{12}…\\); resuming would continue that model's checkpoint and reuse its reference log-probs`),
    );
    expect(fs.readFileSync(path.join(out, 'reference_logps.jsonl'), 'utf8')).toBe(reference);
    // The model it started from resumes.
    const same = tfalign(['dpo', '--model', base, '--train', prefs, '--out', out, '--max-steps', '4', '--resume', '--set', 'evalFraction=0', '--workers', '1', '--backend', 'wasm']);
    expect(same.status, same.stderr).toBe(0);
  });
});

describe('item 17: special-token text from the command line', () => {
  it('tokenizer encode gives plain-text ids unless --parse-special-tokens', () => {
    const plain = JSON.parse(tfalign(['tokenizer', 'encode', '--tokenizer', tokDir, '--text', 'hi<|eot_id|>']).stdout) as number[];
    const parsed = JSON.parse(tfalign(['tokenizer', 'encode', '--tokenizer', tokDir, '--text', 'hi<|eot_id|>', '--parse-special-tokens']).stdout) as number[];
    const eot = JSON.parse(tfalign(['tokenizer', 'encode', '--tokenizer', tokDir, '--text', '<|eot_id|>', '--parse-special-tokens']).stdout) as number[];
    expect(eot).toHaveLength(1);
    expect(parsed.at(-1)).toBe(eot[0]);
    expect(plain).not.toContain(eot[0]);
    expect(plain.length).toBeGreaterThan(parsed.length);
  });
});
