import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Command } from 'commander';
import { afterAll, afterEach, beforeEach, describe, expect, it, vi, type MockInstance } from 'vitest';
import { registerTokenizerCommands } from '../../src/cli/tokenizer.js';
import { Tokenizer } from '../../src/tokenizer/tokenizer.js';

const tmpRoot = fs.mkdtempSync(path.join(os.tmpdir(), 'tfalign-tokcli-'));
afterAll(() => fs.rmSync(tmpRoot, { recursive: true, force: true }));

/** A small deterministic corpus: 300 numbered lines over a handful of words. */
function corpusLines(): string[] {
  const words = ['alpha', 'beta', 'gamma', 'delta', 'tokens', 'merge', 'pairs', 'often'];
  return Array.from({ length: 300 }, (_, i) => `${words[i % 8]} ${words[(i * 3) % 8]} ${words[(i * 5 + 1) % 8]} line ${i % 37}.`);
}

function program(): Command {
  const root = new Command('tfalign');
  root.exitOverride();
  registerTokenizerCommands(root);
  return root;
}

async function run(...args: string[]): Promise<void> {
  await program().parseAsync(['node', 'tfalign', ...args]);
}

describe('tfalign tokenizer', () => {
  let logSpy: MockInstance<typeof console.log>;
  beforeEach(() => {
    logSpy = vi.spyOn(console, 'log').mockImplementation(() => undefined);
  });
  afterEach(() => logSpy.mockRestore());

  it('trains from a text file, prints a summary, and the folder reloads', async () => {
    const corpus = path.join(tmpRoot, 'corpus.txt');
    fs.writeFileSync(corpus, corpusLines().join('\n'));
    const out = path.join(tmpRoot, 'tok-txt');
    await run('tokenizer', 'train', '--corpus', corpus, '--vocab-size', '300', '--out', out);
    expect(logSpy).toHaveBeenCalledTimes(1);
    const summary = String(logSpy.mock.calls[0]![0]);
    expect(summary).toMatch(new RegExp(`^tokenizer: vocab 300 = 256 bytes \\+ 38 merged \\+ 6 special \\(38 merges\\), \\d+\\.\\d\\d s -> ${out.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}$`));
    const tok = await Tokenizer.fromFolder(out);
    expect(tok.vocabSize).toBe(300);
    expect(tok.decode(tok.encode('alpha beta gamma line 7.\n'))).toBe('alpha beta gamma line 7.\n');
    expect(JSON.parse(fs.readFileSync(path.join(out, 'tokenizer_config.json'), 'utf8')).model_max_length).toBe(2048);
  });

  it('trains from JSONL text fields and encodes with the result', async () => {
    const corpus = path.join(tmpRoot, 'corpus.jsonl');
    fs.writeFileSync(corpus, corpusLines().map((text) => JSON.stringify({ text, id: 1 })).join('\n') + '\n\n');
    const out = path.join(tmpRoot, 'tok-jsonl');
    await run('tokenizer', 'train', '--corpus', corpus, '--vocab-size', '290', '--out', out, '--min-frequency', '3', '--model-max-length', '128');
    const tok = await Tokenizer.fromFolder(out);
    expect(tok.vocabSize).toBe(290);
    logSpy.mockClear();
    await run('tokenizer', 'encode', '--tokenizer', out, '--text', 'alpha beta<|eot_id|>');
    expect(logSpy.mock.calls[0]![0]).toBe(JSON.stringify(tok.encode('alpha beta<|eot_id|>')));
    logSpy.mockClear();
    await run('tokenizer', 'encode', '--tokenizer', out, '--text', 'alpha', '--add-special-tokens');
    expect(JSON.parse(String(logSpy.mock.calls[0]![0]))[0]).toBe(tok.bosTokenId);
  });

  it('says when the corpus runs out of pairs before the requested size', async () => {
    const corpus = path.join(tmpRoot, 'tiny.txt');
    fs.writeFileSync(corpus, 'hug hug hug pug pun bun');
    await run('tokenizer', 'train', '--corpus', corpus, '--vocab-size', '1000', '--out', path.join(tmpRoot, 'tok-tiny'));
    expect(String(logSpy.mock.calls[0]![0])).toContain('vocab 267 (asked 1000: no pair left with count >= 2) = 256 bytes + 5 merged + 6 special (5 merges)');
  });

  it('rejects bad input with one-line errors', async () => {
    const corpus = path.join(tmpRoot, 'corpus.txt');
    const out = path.join(tmpRoot, 'never');
    await expect(run('tokenizer', 'train', '--corpus', corpus, '--vocab-size', '4k', '--out', out)).rejects.toThrow(
      '--vocab-size: expected an integer, got "4k"',
    );
    await expect(run('tokenizer', 'train', '--corpus', corpus, '--vocab-size', '100', '--out', out)).rejects.toThrow('vocabSize 100 must be an integer of at least 262');
    await expect(run('tokenizer', 'train', '--corpus', path.join(tmpRoot, 'missing.txt'), '--vocab-size', '300', '--out', out)).rejects.toThrow(
      `${path.join(tmpRoot, 'missing.txt')}: no such file`,
    );
    const badJsonl = path.join(tmpRoot, 'bad.jsonl');
    fs.writeFileSync(badJsonl, '{"text": "ok"}\n{"content": "no text"}\n');
    await expect(run('tokenizer', 'train', '--corpus', badJsonl, '--vocab-size', '300', '--out', out)).rejects.toThrow(
      `${badJsonl}:2: text: missing (expected string)`,
    );
    fs.writeFileSync(badJsonl, '{"text": "ok"}\n{"text": \n');
    await expect(run('tokenizer', 'train', '--corpus', badJsonl, '--vocab-size', '300', '--out', out)).rejects.toThrow(`${badJsonl}:2: invalid JSON`);
    expect(fs.existsSync(out)).toBe(false);
    await expect(run('tokenizer', 'encode', '--tokenizer', out, '--text', 'x')).rejects.toThrow(`tokenizer: ${out}: no tokenizer.json`);
  });

  it('shows an example in the help text', () => {
    const train = program().commands.find((c) => c.name() === 'tokenizer')!.commands.find((c) => c.name() === 'train')!;
    let help = '';
    train.configureOutput({ writeOut: (text) => (help += text) });
    train.outputHelp();
    expect(help).toContain('Example:\n  tfalign tokenizer train --corpus data/corpus.txt --vocab-size 4096 --out models/tok');
    expect(help).toContain('--min-frequency <n>');
  });
});
