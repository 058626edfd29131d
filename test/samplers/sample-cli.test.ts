import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Command } from 'commander';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { initBackend } from '../../src/backend.js';
import { buildTokenizerConfig, trainByteLevelBpe, writeTokenizerFolder } from '../../src/tokenizer/bpe-trainer.js';
import { Tokenizer } from '../../src/tokenizer/tokenizer.js';
import { createModel } from '../../src/model/create.js';
import { loadPretrained, savePretrained } from '../../src/model/pretrained.js';
import { toRewardModel } from '../../src/model/weights.js';
import { scoreResponses } from '../../src/inference/reward-scoring.js';
import { registerSampleCommands } from '../../src/cli/sample.js';
import { PreferenceRowSchema, SftRowSchema } from '../../data/rows.js';

const tmpRoot = fs.mkdtempSync(path.join(os.tmpdir(), 'tfalign-sample-'));
afterAll(() => fs.rmSync(tmpRoot, { recursive: true, force: true }));

let policyDir: string;
let rewardDir: string;
let promptsFile: string;

const PROMPTS = [
  { prompt: 'Tell me about apples.', id: 'a' },
  { prompt: [{ role: 'system', content: 'Answer briefly.' }, { role: 'user', content: 'Tell me about rivers.' }] },
  { prompt: 'Say something about stones and clouds.', id: 'c' },
];

beforeAll(async () => {
  await initBackend('wasm', { quiet: true });
  const tokDir = path.join(tmpRoot, 'tok');
  const words = ['apple', 'river', 'stone', 'cloud', 'green', 'music', 'paper', 'light', 'Tell', 'me', 'about', 'Answer', 'briefly'];
  const corpus = Array.from({ length: 400 }, (_, i) => `${words[i % 13]} ${words[(i * 5) % 13]} ${words[(i * 7 + 3) % 13]}.`);
  const tokenizerJson = trainByteLevelBpe([corpus.join('\n')], { vocabSize: 320 });
  writeTokenizerFolder(tokDir, { tokenizerJson, tokenizerConfig: buildTokenizerConfig(tokenizerJson) });
  policyDir = path.join(tmpRoot, 'policy');
  const policy = await createModel({ configFile: 'configs/models/tiny.json', tokenizerDir: tokDir, out: policyDir, seed: 3 });
  rewardDir = path.join(tmpRoot, 'rm');
  const rewardModel = toRewardModel(policy, 5);
  await savePretrained(rewardModel, rewardDir, { tokenizerDir: tokDir });
  policy.dispose();
  rewardModel.dispose();
  promptsFile = path.join(tmpRoot, 'prompts.jsonl');
  fs.writeFileSync(promptsFile, PROMPTS.map((p) => JSON.stringify(p)).join('\n') + '\n');
});

async function run(...args: string[]): Promise<string[]> {
  const program = new Command('tfalign');
  program.exitOverride();
  registerSampleCommands(program);
  const log = vi.spyOn(console, 'log').mockImplementation(() => undefined);
  const stderr = vi.spyOn(process.stderr, 'write').mockImplementation(() => true);
  try {
    await program.parseAsync(['node', 'tfalign', 'sample', ...args]);
    return log.mock.calls.map((c) => String(c[0]));
  } finally {
    log.mockRestore();
    stderr.mockRestore();
  }
}

const readJsonl = (file: string) => fs.readFileSync(file, 'utf8').trim().split('\n').map((line) => JSON.parse(line));

describe('tfalign sample', () => {
  it('writes samples with rewards, the best-of-K SFT rows and preference pairs', async () => {
    const out = path.join(tmpRoot, 'out-paged');
    const logged = await run('--policy', policyDir, '--reward-model', rewardDir, '--prompts', promptsFile, '-k', '4', '--out', out, '--max-new-tokens', '6', '--seed', '11', '--backend', 'wasm');
    const samples = readJsonl(path.join(out, 'samples.jsonl'));
    expect(samples).toHaveLength(3);
    expect(samples.map((r) => r.id)).toEqual(['a', undefined, 'c']);
    expect(samples[1].prompt).toEqual(PROMPTS[1]!.prompt);

    // Rewards are the reward model's scores of (prompt, text), recomputed independently here.
    const rewardModel = await loadPretrained(rewardDir);
    const tok = await Tokenizer.fromFolder(rewardDir);
    const expected = scoreResponses(rewardModel, tok, samples.flatMap((r) => r.samples.map((s: { text: string }) => ({ prompt: r.prompt, response: s.text }))), { batchSize: 5 });
    rewardModel.dispose();
    const rewards = samples.flatMap((r) => r.samples.map((s: { reward: number }) => s.reward));
    rewards.forEach((reward, i) => expect(Math.abs(reward - expected[i]!)).toBeLessThan(1e-5));

    const sft = readJsonl(path.join(out, 'sft.jsonl'));
    const preferences = readJsonl(path.join(out, 'preferences.jsonl'));
    samples.forEach((row, j) => {
      expect(row.samples).toHaveLength(4);
      for (const s of row.samples) {
        expect(s.num_tokens).toBeGreaterThan(0);
        expect(s.num_tokens).toBeLessThanOrEqual(6);
        expect(['stop', 'length']).toContain(s.finish_reason);
      }
      const best = row.samples.reduce((b: number, s: { reward: number }, i: number) => (s.reward > row.samples[b].reward ? i : b), 0);
      expect(row.best).toBe(best);
      const sftResponse = 'messages' in sft[j] ? sft[j].messages.at(-1).content : sft[j].response;
      expect(sftResponse).toBe(row.samples[best].text);
      expect(SftRowSchema.safeParse(sft[j]).success).toBe(true);
    });
    expect(preferences.length).toBeGreaterThan(0);
    expect(new Set(samples[0].samples.map((s: { text: string }) => s.text)).size).toBeGreaterThan(1);
    for (const pair of preferences) {
      expect(PreferenceRowSchema.safeParse(pair).success).toBe(true);
      const row = samples.find((r) => JSON.stringify(r.prompt) === JSON.stringify(pair.prompt))!;
      expect(pair.chosen).toBe(row.samples[row.best].text);
      expect(pair.chosen_reward).toBe(Math.max(...row.samples.map((s: { reward: number }) => s.reward)));
    }
    expect(logged).toHaveLength(1);
    expect(logged[0]).toMatch(/^sample: 3 prompts × 4 samples, \d+ tokens in [\d.]+ s \([\d.]+ tokens\/s, kv-cache paged\); reward mean -?[\d.]+, best-of-4 mean -?[\d.]+, gain [\d.]+; \d+ pairs/);

    // The dense baseline draws the same samples (sample i of prompt j uses seed + j·K + i).
    const denseOut = path.join(tmpRoot, 'out-dense');
    await run('--policy', policyDir, '--reward-model', rewardDir, '--prompts', promptsFile, '-k', '4', '--out', denseOut, '--max-new-tokens', '6', '--seed', '11', '--kv-cache', 'dense', '--backend', 'wasm');
    const texts = (file: string) => readJsonl(file).map((r) => r.samples.map((s: { text: string }) => s.text));
    expect(texts(path.join(denseOut, 'samples.jsonl'))).toEqual(texts(path.join(out, 'samples.jsonl')));
  });

  it('fails with one line naming the input', async () => {
    const args = (prompts: string, policy = policyDir, reward = rewardDir) => [
      '--policy', policy, '--reward-model', reward, '--prompts', prompts, '-k', '2', '--out', path.join(tmpRoot, 'bad'), '--backend', 'wasm',
    ];
    await expect(run(...args(promptsFile, rewardDir))).rejects.toThrow(`--policy: ${rewardDir} is a reward model; give a causal LM`);
    await expect(run(...args(promptsFile, policyDir, policyDir))).rejects.toThrow(`--reward-model: ${policyDir} is a causal LM; give a reward model (rm train's OUT: LlamaForSequenceClassification, or a causal LM with tfalign_reward)`);
    const badFile = path.join(tmpRoot, 'bad.jsonl');
    fs.writeFileSync(badFile, '{"prompt": "ok"}\n{"prompt": 3}\n');
    await expect(run(...args(badFile))).rejects.toThrow(`${badFile}:2: prompt`);
    const longFile = path.join(tmpRoot, 'long.jsonl');
    fs.writeFileSync(longFile, JSON.stringify({ prompt: 'apple '.repeat(300) }) + '\n');
    await expect(run(...args(longFile))).rejects.toThrow(new RegExp(`^${longFile.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}:1: prompt: \\d+ tokens \\+ 256 new tokens exceed the policy's context of 512$`));
    expect(fs.existsSync(path.join(tmpRoot, 'bad'))).toBe(false);
  });
});
