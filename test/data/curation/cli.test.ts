import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Command } from 'commander';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { initBackend } from '../../../src/backend.js';
import { registerDataCommands } from '../../../src/cli/data.js';
import { loadPretrained } from '../../../src/model/pretrained.js';
import { Tokenizer } from '../../../src/tokenizer/tokenizer.js';
import { rewardQualityScores } from '../../../data/curation/quality.js';
import { difficultyScores } from '../../../data/curation/difficulty.js';
import { score as taskScore } from '../../../data/synthetic/task.js';
import { buildTinyCheckpoints, type TinyCheckpoints } from './fixtures.js';

const tmpRoot = fs.mkdtempSync(path.join(os.tmpdir(), 'tfalign-data-cli-'));
afterAll(() => fs.rmSync(tmpRoot, { recursive: true, force: true }));
let dirs: TinyCheckpoints;

beforeAll(async () => {
  await initBackend('wasm', { quiet: true });
  dirs = await buildTinyCheckpoints(tmpRoot);
});

/** Runs `tfalign data …` and returns what it printed on stdout. */
async function run(...args: string[]): Promise<string> {
  const program = new Command('tfalign');
  program.exitOverride();
  registerDataCommands(program);
  const log = vi.spyOn(console, 'log').mockImplementation(() => undefined);
  const stderr = vi.spyOn(process.stderr, 'write').mockImplementation(() => true);
  try {
    await program.parseAsync(['node', 'tfalign', 'data', ...args]);
    return log.mock.calls.map((c) => String(c[0])).join('\n');
  } finally {
    log.mockRestore();
    stderr.mockRestore();
  }
}

const file = (name: string) => path.join(tmpRoot, name);
const writeJsonl = (name: string, rows: unknown[]) => {
  fs.writeFileSync(file(name), rows.map((r) => (typeof r === 'string' ? r : JSON.stringify(r))).join('\n') + '\n');
  return file(name);
};
const readJsonl = (name: string) => fs.readFileSync(file(name), 'utf8').trim().split('\n').filter(Boolean).map((line) => JSON.parse(line));

describe('tfalign data clean', () => {
  const ROWS = [
    { prompt: 'Tell me about rivers.', response: 'Rivers flow to the sea.', id: 'ok1' },
    { prompt: 'Rivers?', response: "I'm sorry, I can't discuss rivers.", id: 'apology' },
    { prompt: 'Rivers?', response: 'Rivers are great 😀😀😀😀😀😀.', id: 'emoji' },
    { prompt: 'Rivers?', response: 'Rivers flow to', finish_reason: 'length', id: 'cut' },
    { prompt: 'Rivers?', chosen: 'They flow.', rejected: "I'm sorry!!!", id: 'pair' },
    { messages: [{ role: 'user', content: 'Hi' }, { role: 'assistant', content: '   ' }], id: 'empty' },
  ];

  it('writes kept rows, rejects with line and rule, and prints the summary table', async () => {
    const input = writeJsonl('clean-in.jsonl', ROWS);
    const printed = await run('clean', '--input', input, '--out', file('clean-out.jsonl'), '--rejects', file('clean-rejects.jsonl'));
    expect(readJsonl('clean-out.jsonl')).toEqual([ROWS[0], ROWS[4]]);
    expect(readJsonl('clean-rejects.jsonl')).toEqual([
      { line: 2, rule: 'stockOpener', detail: 'response: opens with "I\'m sorry"', row: ROWS[1] },
      { line: 3, rule: 'emoji', detail: 'response: 6 emoji (more than 5)', row: ROWS[2] },
      { line: 4, rule: 'truncated', detail: 'finish_reason: "length" (stopped at the token limit)', row: ROWS[3] },
      { line: 6, rule: 'empty', detail: 'messages.1.content: only whitespace', row: ROWS[5] },
    ]);
    expect(printed).toBe(
      [
        `data clean: ${input} → ${file('clean-out.jsonl')}`,
        '  rows in          6',
        '  − empty          1',
        '  − truncated      1',
        '  − tooLong        0',
        '  − repeatedNgram  0',
        '  − stockOpener    1',
        '  − emoji          1',
        '  − exclamation    0',
        '  rows out         2',
        `  rejects: ${file('clean-rejects.jsonl')}`,
      ].join('\n'),
    );
  });

  it('takes thresholds from a config file and --set', async () => {
    const input = writeJsonl('clean-in.jsonl', ROWS);
    fs.writeFileSync(file('clean.yaml'), 'emoji:\n  maxCount: 10\n  maxPerWord: 2\nstockOpener:\n  enabled: false\n');
    await run('clean', '--input', input, '--out', file('clean-out2.jsonl'), '--config', file('clean.yaml'), '--set', 'truncated.useFinishReason=false', '--set', 'truncated.textOnly=keep');
    expect(readJsonl('clean-out2.jsonl').map((r) => r.id)).toEqual(['ok1', 'apology', 'emoji', 'cut', 'pair']);
    await expect(run('clean', '--input', input, '--out', file('x.jsonl'), '--set', 'emoji.maxCont=3')).rejects.toThrow(/^config: emoji: Unrecognized key/);
    await expect(run('clean', '--input', input, '--out', file('x.jsonl'), '--set', 'tooLong.maxTokens=5')).rejects.toThrow(
      'data clean: tooLong.maxTokens needs --tokenizer DIR to count tokens',
    );
    // with a tokenizer, the token bound applies
    const printed = await run('clean', '--input', input, '--out', file('clean-out3.jsonl'), '--set', 'tooLong.maxTokens=5', '--tokenizer', dirs.tokenizerDir);
    expect(printed).toMatch(/− tooLong\s+[1-9]/);
  });

  it('stops at a malformed row with FILE:LINE: field: problem, or skips it when asked', async () => {
    const input = writeJsonl('bad.jsonl', [ROWS[0], '{"prompt": "Rivers?", "response": 3}', ROWS[4]]);
    await expect(run('clean', '--input', input, '--out', file('bad-out.jsonl'))).rejects.toThrow(`${input}:2: response: expected string, got number`);
    expect(fs.existsSync(file('bad-out.jsonl'))).toBe(false);
    const pair = writeJsonl('bad-pair.jsonl', [{ prompt: 'Rivers?', chosen: 'Same.', rejected: 'Same.' }]);
    await expect(run('clean', '--input', pair, '--out', file('bad-out.jsonl'))).rejects.toThrow(`${pair}:1: rejected: must differ from chosen`);
    const mixed = writeJsonl('bad-mixed.jsonl', [{ messages: [{ role: 'assistant', content: 'x.' }], response: 'y.' }]);
    await expect(run('clean', '--input', mixed, '--out', file('bad-out.jsonl'))).rejects.toThrow(`${mixed}:1: response: must not appear in a {messages} row`);
    const both = writeJsonl('bad-both.jsonl', [{ prompt: 'p', response: 'r.', chosen: 'a', rejected: 'b' }]);
    await expect(run('clean', '--input', both, '--out', file('bad-out.jsonl'))).rejects.toThrow(`${both}:1: chosen: must not appear in a {prompt, response} row`);
    const printed = await run('clean', '--input', input, '--out', file('bad-out.jsonl'), '--skip-invalid');
    expect(printed).toContain('  (malformed, skipped)  1');
    expect(readJsonl('bad-out.jsonl')).toEqual([ROWS[0], ROWS[4]]);
  });
});

describe('tfalign data dedup', () => {
  const words = (prefix: string, n: number) => Array.from({ length: n }, (_, i) => `${prefix}${i}`).join(' ');
  const ROWS = [
    { prompt: 'Tell me about rivers.', response: words('w', 30) },
    // the whole row is compared: 4 prompt words + 30 response words, 32 shingles; the changed last
    // word leaves 31 shared, J = 31/33 ≈ 0.939 with row 0
    { prompt: 'Tell me about rivers.', response: `${words('w', 29)} changed` },
    { prompt: 'tell me ABOUT rivers', response: `${words('w', 30)}!` }, // exact duplicate of row 0
    { prompt: 'Something else.', response: words('d', 30) },
    { prompt: 'Bread?', response: 'bake bread' },
    { prompt: 'Bread?', response: 'bake bread' },
  ];

  it('removes exact and near duplicates, reporting each under its rule', async () => {
    const input = writeJsonl('dedup-in.jsonl', ROWS);
    const exactOnly = await run('dedup', '--input', input, '--out', file('dedup-exact.jsonl'));
    expect(readJsonl('dedup-exact.jsonl')).toEqual([ROWS[0], ROWS[1], ROWS[3], ROWS[4]]);
    expect(exactOnly).toContain('  − exact   2\n  − near    0\n  rows out  4');
    const printed = await run('dedup', '--input', input, '--out', file('dedup-out.jsonl'), '--rejects', file('dedup-rejects.jsonl'), '--near');
    expect(readJsonl('dedup-out.jsonl')).toEqual([ROWS[0], ROWS[3], ROWS[4]]);
    const rejects = readJsonl('dedup-rejects.jsonl');
    expect(rejects.map((r) => [r.line, r.rule, r.detail])).toEqual([
      [2, 'near', 'near duplicate of line 1 (Jaccard 0.939)'],
      [3, 'exact', 'exact duplicate of line 1'],
      [6, 'exact', 'exact duplicate of line 5'],
    ]);
    expect(printed).toContain('  − near    1\n  rows out  3');
    expect(printed).toContain('minhash: 128 permutations, 13 bands × 7 rows');
    // a higher threshold keeps the near duplicate
    await run('dedup', '--input', input, '--out', file('dedup-95.jsonl'), '--near', '--threshold', '0.95');
    expect(readJsonl('dedup-95.jsonl')).toHaveLength(4);
  });

  it('keeps the better-scored copy when rows carry quality', async () => {
    const input = writeJsonl('dedup-q.jsonl', ROWS.map((row, i) => ({ ...row, quality: i === 1 ? 9 : i })));
    await run('dedup', '--input', input, '--out', file('dedup-q-out.jsonl'), '--near');
    expect(readJsonl('dedup-q-out.jsonl').map((r) => r.quality)).toEqual([9, 3, 5]);
  });

  it('removes semantic duplicates with a model and tags topics', async () => {
    const rows = [
      { prompt: 'Tell me about rivers.', response: 'The river flows about the stone.', quality: 0.1 },
      { prompt: 'Bread?', response: 'bake bread' },
      { prompt: 'Tell me about rivers.', response: 'The river flows about the stone!', quality: 0.9 }, // identical but for the mark: exact after normalisation
      { prompt: 'Music?', response: 'music paper light cloud' },
      { prompt: 'Water?', response: 'Tell me about water and light.' },
    ];
    const input = writeJsonl('sem-in.jsonl', rows);
    // rows 0 and 2 normalise alike, so exact dedup (which runs first) removes row 0, the lower-quality copy
    const printed = await run('dedup', '--input', input, '--out', file('sem-out.jsonl'), '--semantic', '--model', dirs.policyDir, '--clusters', '2', '--similarity', '0.99', '--topics', '2', '--backend', 'wasm');
    const out = readJsonl('sem-out.jsonl');
    expect(out.map((r) => r.response)).toEqual(['bake bread', 'The river flows about the stone!', 'music paper light cloud', 'Tell me about water and light.']);
    for (const row of out) {
      expect([0, 1]).toContain(row.topic);
      expect(typeof row.topic_label).toBe('string');
    }
    expect(printed).toMatch(/− exact\s+1\n\s+− near\s+0\n\s+− semantic\s+0\n\s+rows out\s+4/);
    expect(printed).toMatch(/semantic: 2 clusters \(k-means \d+ iterations\), cosine threshold 0\.99/);
    expect(printed).toMatch(/ {2}topic {2}rows {2}label\n {6}0 {3}\s*\d+ {2}\S/);
    // a low threshold makes near-identical texts semantic duplicates
    const loose = writeJsonl('sem-loose.jsonl', [rows[0], { ...rows[0], prompt: 'Tell me about a river.', quality: 0.9 }, rows[1]]);
    const looseOut = await run('dedup', '--input', loose, '--out', file('sem-loose-out.jsonl'), '--rejects', file('sem-loose-rej.jsonl'), '--semantic', '--model', dirs.policyDir, '--clusters', '1', '--similarity', '0.5', '--backend', 'wasm');
    expect(looseOut).toMatch(/− semantic\s+1/);
    const rejected = readJsonl('sem-loose-rej.jsonl');
    expect(rejected).toHaveLength(1);
    expect(rejected[0]).toMatchObject({ line: 1, rule: 'semantic' });
    expect(rejected[0].detail).toMatch(/^semantic duplicate of line 2 \(cosine 0\.\d{4}, cluster 0\)$/);
    await expect(run('dedup', '--input', input, '--out', file('x.jsonl'), '--semantic')).rejects.toThrow('data dedup: --semantic needs --model DIR');
  });
});

describe('tfalign data score', () => {
  const ROWS = [
    { prompt: 'sort: 3 1 2', response: '1 2 3' },
    { prompt: 'sort: 3 1 2', response: '3 1 2' },
    { prompt: 'reverse: a b c', response: 'c b a' },
    { prompt: 'reverse: a b c', response: 'a' },
    { prompt: 'repeat 2: cat', response: 'cat cat' },
    { prompt: 'repeat 2: cat', response: 'dog' },
    { prompt: 'initials: cat sun tree', chosen: 'c s t', rejected: 'c s' },
    { prompt: 'initials: cat sun tree', response: 'c' },
  ];

  it('adds quality, judge and difficulty scores and keeps the top fraction OR the judge\'s picks', async () => {
    const input = writeJsonl('score-in.jsonl', ROWS);
    const printed = await run(
      'score', '--input', input, '--out', file('score-out.jsonl'), '--rejects', file('score-rejects.jsonl'), '--reward-model', dirs.rewardDir,
      '--difficulty-model', dirs.policyDir, '--top-fraction', '0.25', '--judge', 'data/synthetic/judge.ts', '--judge-threshold', '1', '--batch-size', '3', '--backend', 'wasm',
    );
    // reference scores computed directly
    const rewardModel = await loadPretrained(dirs.rewardDir);
    const policy = await loadPretrained(dirs.policyDir);
    const tokenizer = await Tokenizer.fromFolder(dirs.rewardDir);
    const rewards = rewardQualityScores(rewardModel, tokenizer, ROWS, { batchSize: 1 });
    const difficulty = difficultyScores(policy, tokenizer, ROWS, { batchSize: 1 });
    rewardModel.dispose();
    policy.dispose();
    const judge = ROWS.map((r) => taskScore(r.prompt, 'chosen' in r ? r.chosen! : r.response!));
    expect(judge.map((s) => s === 1)).toEqual([true, false, true, false, true, false, true, false]);
    // top quartile of 8 by reward: ⌈2⌉ rows at or above the 2nd highest; OR judge = 1
    const bar = [...rewards].sort((a, b) => b - a)[1]!;
    const expectedKept = ROWS.map((_, i) => i).filter((i) => rewards[i]! >= bar || judge[i] === 1);
    const out = readJsonl('score-out.jsonl');
    const rejects = readJsonl('score-rejects.jsonl');
    expect(out.map((r) => ROWS.findIndex((row) => JSON.stringify(row) === JSON.stringify({ ...r, quality: undefined, judge_score: undefined, difficulty: undefined })))).toEqual(expectedKept);
    expect(out.length + rejects.length).toBe(8);
    for (const row of [...out, ...rejects.map((r) => r.row)]) {
      const i = ROWS.findIndex((source) => source.prompt === row.prompt && (source.response ?? source.chosen) === (row.response ?? row.chosen));
      expect(Math.abs(row.quality - rewards[i]!)).toBeLessThan(1e-5);
      expect(Math.abs(row.difficulty - difficulty[i]!)).toBeLessThan(1e-4);
      expect(row.judge_score).toBe(judge[i]);
    }
    for (const reject of rejects) expect(reject).toMatchObject({ rule: 'quality' });
    expect(rejects[0].detail).toMatch(/^reward -?\d+\.\d{4} below the top-fraction bar -?\d+\.\d{4} and judge score below its threshold$/);
    expect(printed).toContain(`  − quality  ${8 - expectedKept.length}\n  rows out   ${expectedKept.length}`);
    expect(printed).toMatch(/reward bar -?\d+\.\d{4}: 2 rows kept by reward/);
  });

  it('refuses a causal LM as the reward model and a malformed row before loading any model', async () => {
    const input = writeJsonl('score-in.jsonl', ROWS);
    await expect(run('score', '--input', input, '--out', file('x.jsonl'), '--reward-model', dirs.policyDir, '--backend', 'wasm')).rejects.toThrow(
      `--reward-model: ${dirs.policyDir} is a causal LM; give a reward model (rm train's OUT)`,
    );
    const bad = writeJsonl('score-bad.jsonl', [ROWS[0], { prompt: 7, response: 'x' }]);
    await expect(run('score', '--input', bad, '--out', file('x.jsonl'), '--reward-model', path.join(tmpRoot, 'missing'))).rejects.toThrow(
      `${bad}:2: prompt: expected string, got number`,
    );
  });
});
