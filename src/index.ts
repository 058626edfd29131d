/**
 * The public API: `import { … } from 'tfalign'`. Explicit named exports only; everything here
 * works end to end and is covered by tests.
 */

// Backends
export { initBackend, currentBackend, describeBackend, BACKEND_NAMES, type BackendName, type BackendInfo } from './backend.js';

// Models and checkpoints
export { LlamaConfigSchema, parseLlamaConfig, modelDims, countParameters, type LlamaConfig, type LlamaConfigInput, type ModelDims } from './model/config.js';
export { LlamaModel, parameterSpecs } from './model/llama.js';
export { FullAttention, DenseKVCache, scaledDotProductAttention, type AttentionContext } from './model/attention.js';
export { initModel, toRewardModel, toHfTensors, fromHfTensors } from './model/weights.js';
export { loadPretrained, savePretrained, loadConfig, loadWithAdapter, saveAdapterFolder, type SaveOptions, type SaveAdapterOptions } from './model/pretrained.js';
export { createModel, averageModels, mergeAdapter } from './model/create.js';
export { LoraAdapters, attachedAdapters, trainingParameters, freezeBaseForLora, numLoraParameters, type LoraOptions, type LoraOptionsInput } from './model/lora.js';
export { LoraOptionsSchema, LORA_TARGET_MODULES } from './config/lora.js';
export { loadAdapter, readAdapterConfig, isAdapterFolder, restoreAdapterWeights, ADAPTER_CONFIG_NAME, ADAPTER_WEIGHTS_NAME, type PeftAdapterConfig } from './model/peft.js';
export { labelLogprobs } from './model/lm-head.js';
export { configureTrainingModel } from './train/model-setup.js';
export { checkTrainingFits, estimateTrainingMemory, type TrainingMemory } from './train/fits.js';
export { readSafetensors, writeSafetensors, CheckpointError, type NamedTensor, type ByteTensor } from './model/safetensors.js';

// Quantized inference (INT8 absmax, FP8 E4M3 row-wise)
export { QuantizationOptionsSchema, QUANT_SCHEMES, PROJECTIONS, selectQuantizedWeights, type QuantizationOptions, type QuantizationOptionsInput } from './model/quantization/options.js';
export { quantizeModel, initQuantizedModel, quantizationOf, dequantizedTwin, weightBytes, type ModelQuantization, type WeightBytes } from './model/quantization/quantize-model.js';
export { quantizeFolder } from './model/quantization/quantize-folder.js';
export { encodeE4M3, decodeE4M3, roundToE4M3, E4M3_MAX } from './model/quantization/e4m3.js';
export { quantizeInt8Absmax, quantizeFp8Rowwise, dequantizeInt8, dequantizeFp8 } from './model/quantization/absmax.js';
export { runQuantizationEval, compareScores, type QuantizationEvalResult } from './pipelines/quantization-eval.js';
export { ksStatistic, ksPValue } from './eval/statistics.js';

// Tokenizers and chat format
export { Tokenizer } from './tokenizer/tokenizer.js';
export { trainByteLevelBpe, buildTokenizerConfig, writeTokenizerFolder } from './tokenizer/bpe-trainer.js';
export { applyChatTemplate, tokenizeConversation, tokenizePromptResponse, LLAMA3_CHAT_TEMPLATE, type ChatMessage } from './tokenizer/chat-template.js';

// Training core
export { AdamW } from './train/adamw.js';
export { learningRateAt } from './train/schedule.js';
export { clipByGlobalNorm, globalNorm } from './train/grad-clip.js';
export { computeGradients, GradientAccumulator } from './train/grad-accumulator.js';
export { averageWeights } from './model/average.js';
export { Rng } from './util/rng.js';
export { runTrainingLoop, type TrainingResult, type LogRecord } from './train/loop.js';
export { LocalStepEngine, type StepEngine, type StepResult } from './train/step-engine.js';
export { evaluateObjective, normalizedLoss, type LossFn, type MicroBatchObjective, type MetricSum, type Objective, type UnitCounts, type UnitsFn } from './train/objective.js';
export { trainingOptionsSchema, type TrainingOptions } from './config/training.js';
export { loadConfig as loadConfigFile, validateConfig } from './config/load.js';

// Trainers
export { pretrain, PretrainConfigSchema, type PretrainConfigInput } from './trainers/pretrain.js';
export { sft, SftConfigSchema, type SftConfigInput } from './trainers/sft.js';
export { responseLogprobs } from './inference/token-logprobs.js';
export { causalLmLoss, causalLmUnits } from './tasks/causal-lm.js';
export { trainRewardModel, RewardConfigSchema, type RewardConfigInput } from './trainers/reward.js';
export { scoreResponses, scoreTokenIds } from './inference/reward-scoring.js';
export { dpo, DpoConfigSchema, type DpoConfigInput } from './trainers/dpo.js';

// Losses
export * as losses from '../losses/index.js';

// Sampling
export { generate, type GeneratedSequence, type GenerateOptions } from '../samplers/generate.js';
export { DecodingOptionsSchema, sampleToken, type DecodingOptions } from '../samplers/decoding.js';
export { KVCacheManager, PagedKVStorage } from '../samplers/kv/index.js';

// Data
export { readJsonl, writeJsonlAtomic } from '../data/jsonl.js';
export { SftRowSchema, PreferenceRowSchema, PromptRowSchema, STRENGTHS, type SftRow, type PreferenceRow, type Strength } from '../data/rows.js';
export { DataError } from './util/errors.js';
export * as synthetic from '../data/synthetic/index.js';

// Rounds
export { AlignmentRun, readRunConfig, type RunEvents, type RunSelection } from './rounds/runner.js';
export { RunConfigSchema, type RunConfig, type RunConfigInput } from './rounds/run-config.js';
export { RunStore } from './store/store.js';
export { acquireRunLock, RunLockedError, type RunLock } from './store/lock.js';

// Sampling engine and rejection sampling
export { SamplingEngine, SamplingEngineOptionsSchema, KV_CACHE_KINDS, type SamplingRequest, type SamplingResult, type SamplingStats } from '../samplers/engine.js';
export { samplePolicy, type PolicySamplingOptions } from '../samplers/policy-sampler.js';
export { buildRejectionRows, scorePrompts, RejectionOptionsSchema, PAIR_STRATEGIES } from '../samplers/rejection.js';

// Data-parallel training
export { createStepEngine, defaultNumWorkers } from './parallel/factory.js';

// Data curation
export { cleanRows, CleaningOptionsSchema, RULE_NAMES } from '../data/curation/rules.js';
export { findDuplicates, DedupOptionsSchema } from '../data/curation/dedup.js';
export { semanticDedupRows, SemanticDedupOptionsSchema } from '../data/curation/semantic-dedup.js';
export { rewardQualityScores, QualityOptionsSchema } from '../data/curation/quality.js';
export { cleanFile, dedupFile, scoreFile, formatReport } from '../data/curation/steps.js';
