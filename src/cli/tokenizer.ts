/**
 * `tfalign tokenizer …`: train a byte-level BPE tokenizer for a from-scratch model, and encode
 * text with a tokenizer folder (for debugging token boundaries).
 */
import type { Command } from 'commander';
import { example, intArg, overwriteOption } from './common.js';
import { claimOutputFolder } from '../util/atomic.js';
import { MAX_VOCAB_SIZE } from '../config/limits.js';
import { readCorpus } from '../../data/corpus.js';

export function registerTokenizerCommands(program: Command): void {
  const tokenizer = program.command('tokenizer').description('train and inspect byte-level BPE tokenizers');

  tokenizer
    .command('train')
    .description('train a byte-level BPE tokenizer (Llama 3 pre-tokenizer and chat format) into an HF tokenizer folder')
    .requiredOption('--corpus <file>', 'text file (whole file is the corpus) or .jsonl with a "text" field per line')
    .requiredOption('--vocab-size <n>', 'total ids: 256 bytes + merges + 6 special tokens (at least 262)', intArg('--vocab-size', { min: 1, max: MAX_VOCAB_SIZE }))
    .requiredOption('--out <dir>', 'folder to write tokenizer.json, tokenizer_config.json, special_tokens_map.json (new, empty, or a previous tokenizer train output)')
    .option('--min-frequency <n>', 'merge a pair only when it occurs at least this often', intArg('--min-frequency', { min: 1 }), 2)
    .option('--model-max-length <n>', 'model_max_length written to tokenizer_config.json', intArg('--model-max-length', { min: 1 }), 2048)
    .addOption(overwriteOption())
    .addHelpText('after', example('tfalign tokenizer train --corpus data/corpus.txt --vocab-size 4096 --out models/tok'))
    .action(async (options: { corpus: string; vocabSize: number; out: string; minFrequency: number; modelMaxLength: number; overwrite?: boolean }) => {
      const { buildTokenizerConfig, trainByteLevelBpe, writeTokenizerFolder } = await import('../tokenizer/bpe-trainer.js');
      const { vocabSize, minFrequency, modelMaxLength } = options;
      // Before the training: a folder this command may not write is refused at once.
      claimOutputFolder(options.out, { command: 'tokenizer train', overwrite: options.overwrite, flag: '--out' });
      const startMs = performance.now();
      const corpus = await readCorpus(options.corpus);
      const tokenizerJson = trainByteLevelBpe(corpus, { vocabSize, minFrequency });
      const tokenizerConfig = buildTokenizerConfig(tokenizerJson, { modelMaxLength });
      writeTokenizerFolder(options.out, { tokenizerJson, tokenizerConfig }, { overwrite: options.overwrite, flag: '--out' });
      const seconds = (performance.now() - startMs) / 1000;
      const numMerges = tokenizerJson.model.merges.length;
      const numSpecial = tokenizerJson.added_tokens.length;
      const numModelTokens = Object.keys(tokenizerJson.model.vocab).length;
      const trainedVocabSize = numModelTokens + numSpecial;
      const shortfall = trainedVocabSize < vocabSize ? ` (asked ${vocabSize}: no pair left with count >= ${minFrequency})` : '';
      console.log(
        `tokenizer: vocab ${trainedVocabSize}${shortfall} = 256 bytes + ${numModelTokens - 256} merged + ${numSpecial} special (${numMerges} merges), ${seconds.toFixed(2)} s -> ${options.out}`,
      );
    });

  tokenizer
    .command('encode')
    .description('print the token ids of a text as JSON')
    .requiredOption('--tokenizer <dir>', 'tokenizer folder (tokenizer.json, tokenizer_config.json)')
    .requiredOption('--text <text>', 'text to encode; special-token strings are plain text unless --parse-special-tokens')
    .option('--add-special-tokens', 'run the post-processor (adds BOS for Llama 3 tokenizers)', false)
    .option('--parse-special-tokens', 'match special-token strings in the text (<|eot_id|>) as their single ids', false)
    .addHelpText('after', example('tfalign tokenizer encode --tokenizer models/tok --text "<|start_header_id|>user<|end_header_id|>" --parse-special-tokens'))
    .action(async (options: { tokenizer: string; text: string; addSpecialTokens: boolean; parseSpecialTokens: boolean }) => {
      const { Tokenizer } = await import('../tokenizer/tokenizer.js');
      const tok = await Tokenizer.fromFolder(options.tokenizer);
      console.log(JSON.stringify(tok.encode(options.text, { addSpecialTokens: options.addSpecialTokens, parseSpecialTokens: options.parseSpecialTokens })));
    });
}
