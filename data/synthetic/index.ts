/**
 * The quickstart's synthetic instruction task: prompts and checkable answers (`task.ts`), the judge
 * that stands in for annotators (`judge.ts`), and the tokenizer / pretraining text (`corpus.ts`).
 */
export {
  DEFAULT_NOISE_LEVEL,
  DIGITS,
  HELDOUT_MODULUS,
  LETTERS,
  TASK_KINDS,
  WORDS,
  alignItems,
  answerItems,
  correctAnswer,
  drawInstance,
  drawPrompt,
  drawPromptOfKind,
  fixFirstError,
  formatPrompt,
  generatePrompts,
  noisyDemonstration,
  parsePrompt,
  responseItems,
  score,
  scoreAgainst,
  splitOf,
  type AlignmentOp,
  type GeneratePromptsOptions,
  type Split,
  type TaskInstance,
  type TaskKind,
} from './task.js';
export {
  STRENGTH_THRESHOLDS,
  SyntheticJudgeOptionsSchema,
  createSyntheticJudge,
  judge,
  strengthFromGap,
  type Judge,
  type JudgeVerdict,
  type Strength,
  type SyntheticJudgeOptions,
} from './judge.js';
export {
  buildPretrainingCorpus,
  buildTokenizerCorpus,
  renderDemonstration,
  type PretrainingCorpusOptions,
} from './corpus.js';
