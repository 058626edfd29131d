import { describe, expect, it } from 'vitest';
import {
  DEFAULT_NOISE_LEVEL,
  HELDOUT_MODULUS,
  STRENGTH_THRESHOLDS,
  TASK_KINDS,
  WORDS,
  alignItems,
  buildPretrainingCorpus,
  buildTokenizerCorpus,
  correctAnswer,
  createSyntheticJudge,
  fixFirstError,
  formatPrompt,
  generatePrompts,
  judge as defaultJudge,
  noisyDemonstration,
  parsePrompt,
  renderDemonstration,
  score,
  splitOf,
  strengthFromGap,
  type Judge,
} from '../../data/synthetic/index.js';
import judgeModuleDefault from '../../data/synthetic/judge.js';
import { STRENGTHS } from '../../data/rows.js';
import { buildTokenizerConfig, trainByteLevelBpe } from '../../src/tokenizer/bpe-trainer.js';
import { applyChatTemplate, tokenizePromptResponse } from '../../src/tokenizer/chat-template.js';
import { Tokenizer } from '../../src/tokenizer/tokenizer.js';
import { Rng } from '../../src/util/rng.js';

const mean = (values: readonly number[]): number => values.reduce((sum, v) => sum + v, 0) / values.length;

/** Occurrences of `needle` in `text`. */
const countOf = (text: string, needle: string): number => text.split(needle).length - 1;

describe('synthetic task: prompts', () => {
  it('draws the same prompts for the same seed, others for another seed, in a replayable prefix order', () => {
    const prompts = generatePrompts(200, 11);
    expect(generatePrompts(200, 11)).toEqual(prompts);
    expect(generatePrompts(50, 11)).toEqual(prompts.slice(0, 50));
    const other = generatePrompts(200, 12);
    expect(other.filter((p) => prompts.includes(p)).length).toBeLessThan(20);
    expect(new Set(prompts).size).toBe(200);
    // A literal snapshot: the quickstart's figures depend on this stream staying what it is.
    expect(generatePrompts(4, 0)).toEqual(['reverse: h a w', 'initials: cow rock ship', 'sort: 6 0 2 3', 'initials: pig frog owl frog']);
    expect(generatePrompts(3, 0, { split: 'heldout' })).toEqual(['initials: snow hill box', 'initials: drum rock fig bell lamp', 'initials: milk snow hat']);
  });

  it('keeps held-out prompts out of the training split, for any seeds', () => {
    const train = generatePrompts(2000, 0);
    const heldout = generatePrompts(400, 0, { split: 'heldout' });
    const trainSet = new Set([...train, ...generatePrompts(2000, 1)]);
    expect(heldout.filter((p) => trainSet.has(p))).toEqual([]);
    expect(train.every((p) => splitOf(p) === 'train')).toBe(true);
    expect(heldout.every((p) => splitOf(p) === 'heldout')).toBe(true);
    // Every prompt of the space is in exactly one split; about 1 in HELDOUT_MODULUS is held out.
    const allRepeat = WORDS.flatMap((word) => [2, 3, 4, 5].map((count) => formatPrompt({ kind: 'repeat', word, count })));
    const heldoutShare = allRepeat.filter((p) => splitOf(p) === 'heldout').length / allRepeat.length;
    expect(heldoutShare).toBeGreaterThan(1 / HELDOUT_MODULUS - 0.1);
    expect(heldoutShare).toBeLessThan(1 / HELDOUT_MODULUS + 0.1);
  });

  it('draws each kind about equally often, within the generated sizes, and restricts to chosen kinds', () => {
    const prompts = generatePrompts(600, 3);
    const counts = new Map<string, number>();
    for (const prompt of prompts) {
      const instance = parsePrompt(prompt);
      counts.set(instance.kind, (counts.get(instance.kind) ?? 0) + 1);
      expect(formatPrompt(instance)).toBe(prompt);
      const numItems =
        instance.kind === 'reverse' ? instance.letters.length
        : instance.kind === 'sort' ? instance.digits.length
        : instance.kind === 'repeat' ? instance.count
        : instance.words.length;
      const [min, max] = instance.kind === 'repeat' ? [2, 5] : instance.kind === 'initials' ? [3, 5] : [3, 6];
      expect(numItems).toBeGreaterThanOrEqual(min);
      expect(numItems).toBeLessThanOrEqual(max);
    }
    // 600 prompts, Binomial(600, 1/4) per kind: σ ≈ 10.6, 4σ ≈ 42; `repeat` stays balanced although
    // redraws hit prompts already taken (about 154 train repeat prompts exist).
    for (const kind of TASK_KINDS) expect(Math.abs(counts.get(kind)! - 150), kind).toBeLessThan(42);
    const sortsOnly = generatePrompts(100, 3, { kinds: ['sort'] });
    expect(sortsOnly.every((p) => p.startsWith('sort: '))).toBe(true);
  });

  it('refuses an impossible request and a bad count, in one line naming the field', () => {
    // 48 words × 4 counts = 192 repeat prompts in all, 145 of them in the training split.
    const allRepeat = WORDS.flatMap((word) => [2, 3, 4, 5].map((count) => formatPrompt({ kind: 'repeat', word, count })));
    expect(allRepeat.filter((p) => splitOf(p) === 'train').length).toBe(145);
    expect(() => generatePrompts(200, 0, { kinds: ['repeat'] })).toThrow(/^synthetic task: only 145 distinct train prompts exist of the 200 asked for$/);
    // Once `repeat` is used up the other kinds fill the set.
    const many = generatePrompts(1000, 0, { kinds: ['repeat', 'sort'] });
    expect(many.filter((p) => p.startsWith('repeat')).length).toBe(145);
    expect(() => generatePrompts(-1, 0)).toThrow('synthetic task: numPrompts must be a non-negative integer, got -1');
  });

  it('parses every documented format and refuses others', () => {
    expect(parsePrompt('reverse: k q b m')).toEqual({ kind: 'reverse', letters: ['k', 'q', 'b', 'm'] });
    expect(parsePrompt('sort: 7 2 9 2 4')).toEqual({ kind: 'sort', digits: ['7', '2', '9', '2', '4'] });
    expect(parsePrompt('repeat 3: cat')).toEqual({ kind: 'repeat', word: 'cat', count: 3 });
    expect(parsePrompt('initials: cat sun tree')).toEqual({ kind: 'initials', words: ['cat', 'sun', 'tree'] });
    expect(correctAnswer('reverse: k q b m')).toBe('m b q k');
    expect(correctAnswer('sort: 7 2 9 2 4')).toBe('2 2 4 7 9');
    expect(correctAnswer('repeat 3: cat')).toBe('cat cat cat');
    expect(correctAnswer('initials: cat sun tree')).toBe('c s t');
    for (const bad of ['reverse: K Q', 'sort: 12 3', 'repeat 0: cat', 'initials:', 'reverse: a b ', 'hello']) {
      expect(() => parsePrompt(bad), bad).toThrow(`synthetic task: prompt ${JSON.stringify(bad)} is none of`);
    }
  });
});

describe('synthetic task: scoring', () => {
  it('gives 1 to every correct answer and less to anything else', () => {
    for (const prompt of generatePrompts(300, 5)) {
      expect(score(prompt, correctAnswer(prompt))).toBe(1);
      expect(score(prompt, `${correctAnswer(prompt)} x`)).toBeLessThan(1);
    }
  });

  it('falls with each corruption: reverse a b c d (hand-worked)', () => {
    // target d c b a (n = 4); score = 0.7·(1 − OSA/max(m, n)) + 0.3·max(0, 1 − |m − n|/n) − 0.1·[bad spacing]
    const prompt = 'reverse: a b c d';
    const steps = [
      ['d c b a', 1], //                   0 corruptions
      ['d b c a', 0.825], //               swap:            OSA 1, m 4: 0.7·0.75 + 0.3·1
      ['d b c', 0.575], //                 swap + drop:     OSA 2, m 3: 0.7·0.5 + 0.3·0.75
      ['d b c x y', 0.505], //             + 2 junk items:  OSA 3, m 5: 0.7·0.4 + 0.3·0.75
      ['d b c x y\n', 0.405], //           + a trailing newline: −0.1
      ['', 0], //                          nothing:         OSA 4, m 0: 0.7·0 + 0.3·0
    ] as const;
    for (const [response, expected] of steps) expect(score(prompt, response), JSON.stringify(response)).toBeCloseTo(expected, 12);
  });

  it('falls with each corruption: sort 3 1 2 (hand-worked)', () => {
    // target 1 2 3 (n = 3)
    const prompt = 'sort: 3 1 2';
    expect(score(prompt, '1 2 9')).toBeCloseTo(0.7 * (2 / 3) + 0.3, 12); // substitute: OSA 1, m 3 → 0.7667
    expect(score(prompt, '1 2 9 9')).toBeCloseTo(0.7 * 0.5 + 0.3 * (2 / 3), 12); // + junk: OSA 2, m 4 → 0.55
    expect(score(prompt, '1 2 9 9 9')).toBeCloseTo(0.7 * 0.4 + 0.3 * (1 / 3), 12); // + junk: OSA 3, m 5 → 0.38
  });

  it('rewards stopping at the right place: repeat 2 cat (hand-worked)', () => {
    const prompt = 'repeat 2: cat';
    expect(score(prompt, 'cat')).toBeCloseTo(0.7 * 0.5 + 0.3 * 0.5, 12); // one short: 0.5
    expect(score(prompt, 'cat cat cat')).toBeCloseTo(0.7 * (2 / 3) + 0.3 * 0.5, 12); // one too many: 0.6167
    expect(score(prompt, 'cat cat cat cat')).toBeCloseTo(0.7 * 0.5, 12); // two too many: 0.35
    expect(score(prompt, ' cat cat')).toBeCloseTo(0.9, 12); // right items, bad spacing
  });

  it('aligns with swaps of neighbours costing 1 (OSA), and its path rebuilds the target', () => {
    expect(alignItems(['a', 'c', 'b'], ['a', 'b', 'c']).distance).toBe(1); // one swap
    expect(alignItems(['c', 'a'], ['a', 'b', 'c']).distance).toBe(3); // OSA edits no item twice (unrestricted Damerau: 2)
    expect(alignItems([], ['a', 'b']).distance).toBe(2);
    expect(alignItems(['a', 'b'], []).distance).toBe(2);
    const rng = new Rng(13);
    for (const prompt of generatePrompts(300, 13)) {
      const target = correctAnswer(prompt).split(' ');
      const response = noisyDemonstration(prompt, rng, 0.9).split(' ').filter((item) => item.length > 0);
      const { distance, ops } = alignItems(response, target);
      expect(ops.filter((op) => op.op !== 'match').length).toBe(distance);
      // Replay the path: matches and substitutions/swaps emit target items, deletions nothing.
      const rebuilt: string[] = [];
      for (const op of ops) {
        if (op.op === 'match') rebuilt.push(response[op.at]!);
        else if (op.op === 'swap') rebuilt.push(response[op.at + 1]!, response[op.at]!);
        else if (op.op !== 'delete') rebuilt.push(target[op.target]!);
      }
      expect(rebuilt).toEqual(target);
    }
  });

  it('fixes the first error of a response, always raising its score', () => {
    const prompt = 'reverse: a b c d';
    expect(fixFirstError(prompt, 'd b c a')).toBe('d c b a');
    expect(fixFirstError(prompt, 'd c b a\n')).toBe('d c b a');
    expect(fixFirstError(prompt, 'd c b a')).toBe('d c b a');
    expect(fixFirstError('repeat 2: cat', 'cat cat cat')).toBe('cat cat');
    expect(fixFirstError(prompt, '')).toBe('d');
    const rng = new Rng(21);
    for (const prompt of generatePrompts(400, 21)) {
      const response = noisyDemonstration(prompt, rng, 0.9);
      const fixed = fixFirstError(prompt, response);
      if (score(prompt, response) === 1) expect(fixed).toBe(response);
      else expect(score(prompt, fixed), `${prompt} / ${response} → ${fixed}`).toBeGreaterThan(score(prompt, response));
    }
  });
});

describe('synthetic task: noisy demonstrations', () => {
  const prompts = generatePrompts(2000, 8);

  function meanDemoScore(noiseLevel: number, seed: number): number {
    const rng = new Rng(seed);
    return mean(prompts.map((p) => score(p, noisyDemonstration(p, rng, noiseLevel))));
  }

  it('is the correct answer at noise 0, and replays from the seed', () => {
    const rng = new Rng(1);
    for (const prompt of prompts.slice(0, 100)) expect(noisyDemonstration(prompt, rng, 0)).toBe(correctAnswer(prompt));
    const first = prompts.slice(0, 50).map((p, i) => noisyDemonstration(p, new Rng(2).fork(i)));
    const again = prompts.slice(0, 50).map((p, i) => noisyDemonstration(p, new Rng(2).fork(i)));
    expect(again).toEqual(first);
    expect(() => noisyDemonstration(prompts[0]!, rng, 1.5)).toThrow('synthetic task: noiseLevel must be in [0, 1], got 1.5');
  });

  it('has a mean score of 0.65–0.78 at the default noise (measured 0.726, 39% exact), falling with the noise level', () => {
    expect(DEFAULT_NOISE_LEVEL).toBe(0.5);
    const atDefault = meanDemoScore(DEFAULT_NOISE_LEVEL, 4);
    expect(atDefault).toBeGreaterThan(0.65);
    expect(atDefault).toBeLessThan(0.78);
    const rng = new Rng(4);
    const exactShare = mean(prompts.map((p) => (score(p, noisyDemonstration(p, rng)) === 1 ? 1 : 0)));
    expect(exactShare).toBeGreaterThan(0.3); // best-of-K from a model of these finds correct answers
    expect(exactShare).toBeLessThan(0.45);
    expect(meanDemoScore(0.2, 4)).toBeGreaterThan(atDefault + 0.1);
    expect(meanDemoScore(0.9, 4)).toBeLessThan(atDefault - 0.1);
  });
});

describe('synthetic judge', () => {
  const prompt = 'reverse: a b c d';
  const exact = 'd c b a'; // 1
  const oneSwap = 'd b c a'; // 0.825
  const swapDrop = 'd b c'; // 0.575
  const junk = 'd b c x y'; // 0.505
  const badSpacing = 'd b c a\n'; // 0.725

  it('gives the documented strengths for crafted pairs, in either order', () => {
    const quiet = createSyntheticJudge({ labelNoise: 0, editRate: 0 });
    const cases: [string, string, string][] = [
      [exact, oneSwap, 'slightly_better'], //        gap 0.175
      [oneSwap, badSpacing, 'slightly_better'], //   gap 0.1 (0.09999999999999998 in floats)
      [exact, swapDrop, 'better'], //                gap 0.425
      [oneSwap, swapDrop, 'better'], //              gap 0.25 exactly on the threshold
      [exact, '', 'significantly_better'], //        gap 1
      [exact, 'd b c x y\n', 'significantly_better'], // gap 0.595
      [swapDrop, junk, 'marginally_better'], //      gap 0.07
    ];
    for (const [better, worse, strength] of cases) {
      expect(quiet.compare(prompt, better, worse, new Rng(0)), `${better} > ${worse}`).toEqual({ preferred: 'a', strength });
      expect(quiet.compare(prompt, worse, better, new Rng(0))).toEqual({ preferred: 'b', strength });
    }
    expect(STRENGTH_THRESHOLDS.map((t) => t.strength)).toEqual([...STRENGTHS]);
    expect([0.5, 0.49, 0.25, 0.24, 0.1, 0.09, 0].map(strengthFromGap)).toEqual([
      'significantly_better', 'better', 'better', 'slightly_better', 'slightly_better', 'marginally_better', 'marginally_better',
    ]);
  });

  /** Pairs of two noisy demonstrations per prompt, with their task scores. */
  function makePairs(numPrompts: number, seed: number): { prompt: string; a: string; b: string; gap: number; better: 'a' | 'b' }[] {
    const rng = new Rng(seed);
    return generatePrompts(numPrompts, seed).flatMap((p) => {
      const a = noisyDemonstration(p, rng, 0.7);
      const b = noisyDemonstration(p, rng, 0.7);
      const [scoreA, scoreB] = [score(p, a), score(p, b)];
      return scoreA === scoreB ? [] : [{ prompt: p, a, b, gap: Math.abs(scoreA - scoreB), better: scoreA > scoreB ? ('a' as const) : ('b' as const) }];
    });
  }

  it('always prefers the higher score without label noise', () => {
    const quiet = createSyntheticJudge({ labelNoise: 0 });
    const rng = new Rng(3);
    const pairs = makePairs(1500, 31);
    expect(pairs.length).toBeGreaterThan(700);
    for (const pair of pairs) expect(quiet.compare(pair.prompt, pair.a, pair.b, rng).preferred).toBe(pair.better);
  });

  it('flips close pairs at the configured rate and never flips wide ones', () => {
    const labelNoise = 0.3;
    const noisy = createSyntheticJudge({ labelNoise, editRate: 0 });
    const rng = new Rng(4);
    const pairs = makePairs(3000, 41);
    const close = pairs.filter((p) => p.gap < 0.5 - 1e-9);
    const wide = pairs.filter((p) => p.gap >= 0.5 - 1e-9);
    expect(close.length).toBeGreaterThan(1000);
    expect(wide.length).toBeGreaterThan(100);
    const flipRate = mean(close.map((p) => (noisy.compare(p.prompt, p.a, p.b, rng).preferred === p.better ? 0 : 1)));
    const sigma = Math.sqrt((labelNoise * (1 - labelNoise)) / close.length);
    expect(Math.abs(flipRate - labelNoise)).toBeLessThan(4 * sigma);
    for (const p of wide) expect(noisy.compare(p.prompt, p.a, p.b, rng).preferred).toBe(p.better);
    // A judge with noisyGapBelow 0.25 leaves `better` pairs alone too.
    const careful = createSyntheticJudge({ labelNoise: 1, editRate: 0, noisyGapBelow: 0.25 });
    for (const p of pairs.slice(0, 300)) {
      const expected = p.gap < 0.25 - 1e-9 ? (p.better === 'a' ? 'b' : 'a') : p.better;
      expect(careful.compare(p.prompt, p.a, p.b, rng).preferred).toBe(expected);
    }
  });

  it('edits at the configured rate, and an edit always scores above the preferred response', () => {
    const editRate = 0.2;
    const editing = createSyntheticJudge({ labelNoise: 0.1, editRate });
    const rng = new Rng(5);
    let numImperfect = 0;
    let numEdited = 0;
    for (const p of makePairs(2000, 51)) {
      const verdict = editing.compare(p.prompt, p.a, p.b, rng);
      const preferred = verdict.preferred === 'a' ? p.a : p.b;
      if (score(p.prompt, preferred) < 1) numImperfect++;
      if (verdict.edited === undefined) continue;
      numEdited++;
      expect(verdict.edited).not.toBe(preferred);
      expect(score(p.prompt, verdict.edited)).toBeGreaterThan(score(p.prompt, preferred));
    }
    const sigma = Math.sqrt((editRate * (1 - editRate)) / numImperfect);
    expect(Math.abs(numEdited / numImperfect - editRate)).toBeLessThan(4 * sigma);
    // Never an edit of a correct response.
    const always = createSyntheticJudge({ labelNoise: 0, editRate: 1 });
    expect(always.compare(prompt, exact, '', new Rng(0))).toEqual({ preferred: 'a', strength: 'significantly_better' });
    expect(always.compare(prompt, junk, oneSwap, new Rng(0))).toEqual({ preferred: 'b', strength: 'better', edited: exact });
  });

  it('fixes up to editFixes errors per edit: a rewrite scores at least as high as a touch-up', () => {
    // reverse: a b c d → d c b a; "a b c d" needs several fixes.
    const prompt = 'reverse: a b c d';
    const touchUp = createSyntheticJudge({ labelNoise: 0, editRate: 1, editFixes: 1 }).compare(prompt, 'a b c d', 'x', new Rng(1));
    const rewrite = createSyntheticJudge({ labelNoise: 0, editRate: 1, editFixes: 10 }).compare(prompt, 'a b c d', 'x', new Rng(1));
    expect(touchUp.edited).toBe(fixFirstError(prompt, 'a b c d'));
    expect(rewrite.edited).toBe('d c b a');
    expect(score(prompt, rewrite.edited!)).toBe(1);
    expect(score(prompt, rewrite.edited!)).toBeGreaterThan(score(prompt, touchUp.edited!));
  });

  it('replays verdicts from the seed, draws three numbers per call, and breaks ties by a coin', () => {
    const pairs = makePairs(200, 61);
    const run = (j: Judge): unknown[] => {
      const rng = new Rng(9);
      return pairs.map((p) => j.compare(p.prompt, p.a, p.b, rng));
    };
    expect(run(defaultJudge)).toEqual(run(createSyntheticJudge()));
    const rng = new Rng(9);
    defaultJudge.compare(prompt, exact, '', rng);
    const expectedNext = new Rng(9);
    for (let k = 0; k < 3; k++) expectedNext.next();
    expect(rng.next()).toBe(expectedNext.next());
    const tieWinners = new Set(Array.from({ length: 40 }, (_, i) => defaultJudge.compare(prompt, 'd c b x', 'd c b y', new Rng(i)).preferred));
    expect(tieWinners).toEqual(new Set(['a', 'b']));
    expect(defaultJudge.compare(prompt, 'd c b x', 'd c b y', new Rng(0)).strength).toBe('marginally_better');
  });

  it('is the default export of the module a config names, and refuses bad options in one line', () => {
    expect(judgeModuleDefault).toBe(defaultJudge);
    expect(defaultJudge.score(prompt, oneSwap)).toBeCloseTo(0.825, 12);
    expect(() => createSyntheticJudge({ labelNoise: 2 })).toThrow(/^synthetic judge: options\.labelNoise: /);
  });
});

describe('synthetic corpus', () => {
  const documents = buildPretrainingCorpus({ numDocuments: 1500, seed: 1 });
  const tokenizerJson = trainByteLevelBpe(buildTokenizerCorpus({ numDocuments: 1500, seed: 0 }), { vocabSize: 768 });
  const tok = Tokenizer.fromJson(tokenizerJson, buildTokenizerConfig(tokenizerJson));

  it('renders each demonstration in the Llama 3 chat layout, special tokens once per turn', () => {
    expect(renderDemonstration('sort: 7 2 9', '2 7 9')).toBe(
      '<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nsort: 7 2 9<|eot_id|>' +
        '<|start_header_id|>assistant<|end_header_id|>\n\n2 7 9<|eot_id|>',
    );
    for (const doc of documents) {
      expect(doc.startsWith('<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\n')).toBe(true);
      expect(countOf(doc, '<|begin_of_text|>')).toBe(1);
      expect(countOf(doc, '<|start_header_id|>')).toBe(2);
      expect(countOf(doc, '<|end_header_id|>')).toBe(2);
      expect(countOf(doc, '<|eot_id|>')).toBe(2);
      expect(doc.endsWith('<|eot_id|>')).toBe(true);
    }
  });

  it('is deterministic, document i independent of the count, prompts from the training split only', () => {
    expect(buildPretrainingCorpus({ numDocuments: 100, seed: 1 })).toEqual(documents.slice(0, 100));
    const prompts = documents.map((doc) => /user<\|end_header_id\|>\n\n(.*?)<\|eot_id\|>/.exec(doc)![1]!);
    expect(prompts.every((p) => splitOf(p) === 'train')).toBe(true);
    const clean = buildPretrainingCorpus({ numDocuments: 50, seed: 1, noiseLevel: 0 });
    clean.forEach((doc, i) => expect(doc).toBe(renderDemonstration(prompts[i]!, correctAnswer(prompts[i]!))));
  });

  it('tokenizes to exactly the prompt + response ids that sampling and SFT use', () => {
    for (const doc of documents.slice(0, 200)) {
      const [, prompt, answer] = /user<\|end_header_id\|>\n\n(.*?)<\|eot_id\|>.*assistant<\|end_header_id\|>\n\n(.*)<\|eot_id\|>$/s.exec(doc)!;
      expect(applyChatTemplate(tok, [{ role: 'user', content: prompt! }, { role: 'assistant', content: answer! }])).toBe(doc);
      const { promptIds, responseIds } = tokenizePromptResponse(tok, prompt!, answer!);
      expect(tok.encode(doc, { parseSpecialTokens: true })).toEqual([...promptIds, ...responseIds]);
    }
  });

  it('fits a 128-token context: ≤ 64 tokens per document on average, prompts ≤ 40, correct answers ≤ 24', () => {
    const lengths = documents.map((doc) => tok.encode(doc, { parseSpecialTokens: true }).length);
    const meanLength = mean(lengths);
    // Measured: 23.5 tokens per document (max 44); the BPE stops at 466 ids, every word merged whole.
    expect(meanLength).toBeGreaterThan(18);
    expect(meanLength).toBeLessThan(30);
    expect(Math.max(...lengths)).toBeLessThanOrEqual(64);
    expect(tok.vocabSize).toBeLessThanOrEqual(768);
    for (const word of WORDS) expect(tok.encode(` ${word}`), word).toHaveLength(1);
    for (const prompt of generatePrompts(500, 2, { split: 'heldout' })) {
      const { promptIds, responseIds } = tokenizePromptResponse(tok, prompt, correctAnswer(prompt));
      expect(promptIds.length).toBeLessThanOrEqual(40);
      expect(responseIds.length).toBeLessThanOrEqual(24);
    }
  });
});
