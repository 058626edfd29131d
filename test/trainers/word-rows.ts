/**
 * Small SFT and preference rows over eight words, for trainer tests that need real text of
 * varied lengths (so micro-batches pad and target counts differ by row).
 */
const WORDS = ['apple', 'river', 'stone', 'cloud', 'green', 'music', 'paper', 'light'];
export const word = (i: number): string => WORDS[i % WORDS.length]!;

/** `n` rows `{prompt, response}`, responses of 2–5 words. */
export function sftWordRows(n: number): { prompt: string; response: string }[] {
  return Array.from({ length: n }, (_, i) => ({
    prompt: `Tell me about ${word(i)}.`,
    response: Array.from({ length: 2 + (i % 4) }, (_, k) => word(i + 3 * k)).join(' ') + '.',
  }));
}

/** `n` preference rows; with `edited`, every third has an edited response (ranked edited > chosen > rejected). */
export function preferenceWordRows(n: number, opts: { edited?: boolean } = {}): { prompt: string; chosen: string; rejected: string; edited?: string }[] {
  return Array.from({ length: n }, (_, i) => ({
    prompt: `Say something about ${word(i)} and ${word(i + 1)}.`,
    chosen: `Gladly: ${Array.from({ length: 1 + (i % 3) }, (_, k) => word(i + k)).join(' ')}.`,
    rejected: `Nope, ${word(i + 5)}.`,
    ...(opts.edited && i % 3 === 0 ? { edited: `Gladly, with thanks: ${word(i + 2)} ${word(i + 4)}.` } : {}),
  }));
}
