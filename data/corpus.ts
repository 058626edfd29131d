/**
 * Text corpora for tokenizer training and pretraining. `.jsonl`: one document per row, in its
 * `text` field (validated like every other row). Anything else: plain UTF-8 text (decoded strictly:
 * invalid bytes are an error naming the line) whose documents are separated by blank lines (a
 * file without blank lines is one document).
 */
import { z } from 'zod';
import { readJsonl } from './jsonl.js';
import { readUtf8File } from '../src/util/utf8.js';

const CorpusRowSchema = z.object({ text: z.string().describe('The document text.') });

export async function readCorpus(file: string): Promise<string[]> {
  if (file.endsWith('.jsonl')) {
    const { rows } = await readJsonl(file, CorpusRowSchema);
    return rows.map((r) => r.value.text);
  }
  return readUtf8File(file)
    .split(/\r?\n\s*\r?\n/)
    .map((doc) => doc.trim())
    .filter((doc) => doc.length > 0);
}
