/**
 * Text normalisation and word splitting shared by the cleaning rules, deduplication and topic
 * labels, so that "the same words" means the same thing in every curation step.
 *
 * `normalizeText`: Unicode NFKC (full-width letters, ligatures and compatibility forms become
 * their plain forms), lowercase, every punctuation character (Unicode category P: `.,;:!?'"()[]{}-_…`
 * and their non-ASCII forms) removed, runs of whitespace collapsed to one space, ends trimmed.
 * Symbols (category S: `+ = < > $ €`, emoji) and digits are kept: `2 + 2` and `2 = 2` stay different.
 * So `"Hello,  World!"` and `"hello world"` normalise alike, `don't` becomes `dont`.
 */

const PUNCTUATION = /\p{P}+/gu;
const WHITESPACE = /\s+/gu;

/** NFKC, lowercase, punctuation removed, whitespace collapsed and trimmed (module doc). */
export function normalizeText(text: string): string {
  return text.normalize('NFKC').toLowerCase().replace(PUNCTUATION, '').replace(WHITESPACE, ' ').trim();
}

/** The words of `text` after `normalizeText`: split on spaces, never empty strings. */
export function normalizedWords(text: string): string[] {
  const normalized = normalizeText(text);
  return normalized === '' ? [] : normalized.split(' ');
}
