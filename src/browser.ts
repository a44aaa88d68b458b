// Public API of Brickwork that runs anywhere, browsers included (no Node modules): src/index.ts adds
// the Node-only parts (folders on disk). Bundled for browsers by scripts/build-browser.ts.

export { BrickworkError, CheckpointError, ContextLengthError, SpecError, TensorMismatchError, UnsupportedModelError, UnsupportedOpError, UsageError, ShapeError, PolicyError, TrainingError, NonFiniteError } from './util/errors.ts';
export type { DType } from './tensor/dtype.ts';
export { Tensor, type Backend } from './tensor/tensor.ts';
export * as ops from './tensor/api.ts';
export { OP_NAMES, IN_PLACE_OPS, type OpName, type OpAttrs } from './tensor/ops.ts';
export { Tape, NoGradientError } from './tensor/autograd.ts';
export { GRAD_RULES, type GradRule, type GradArgs } from './tensor/grad.ts';
export { getBackend, registerBackend, CpuBackend, WebGpuBackend } from './backends/backend.ts';
export { NoWebGpuError } from './backends/webgpu/device.ts';
export { WebGpuError, type ProfileEntry } from './backends/webgpu/backend.ts';
export { validateSpec, specProblems, sublayerNames, placementOf, SPEC_FORMAT, SPEC_VERSION } from './model/spec.ts';
export type { ModelSpec, LayerSpec, SublayerSpec, AttnSpec, FfnSpec, MoeSpec, NormSpec, NormPlacement, Activation } from './model/spec.ts';
export { Model, KVCache, declareWeights, brickCosts, type BrickCost, type Hook, type ForwardOptions, type ForwardResult, type SublayerGate, type ExitCheck } from './model/assemble.ts';
export { compilePattern } from './model/points.ts';
export { loadModelFromFiles, loadModelFromUrl, readSpec, type LoadedModel, type LoadOptions, type ModelSource } from './io/load-files.ts';
export { fetchModelFiles, memoryFiles, type ModelFiles, type FetchOptions } from './io/files.ts';
export { Tokenizer } from './io/tokenizer.ts';
export { SafetensorsReader } from './io/safetensors-read.ts';
export { generate, type GenerateOptions, type GenerateResult } from './runtime/generate.ts';
export { createPolicy, parsePolicy, formatPolicy, compactNames, measureInfluence, SkipMeter, POLICY_SYNTAX, type Policy, type PolicySession, type PolicySpec, type PassPlan, type Granularity, type SkippedFraction, type SkipUnit } from './runtime/policies/index.ts';
export { exactLayers, speculativeGenerate, type SpeculativeOptions, type SpeculativeResult } from './runtime/speculative.ts';
export { Rng, rowRng, sampleToken, drawToken, samplingDistribution, acceptOrResample, acceptDraft, type SamplingOptions } from './runtime/sampling.ts';
export { perplexity, encodeLong, type PerplexityOptions, type PerplexityResult } from './eval/perplexity.ts';
export { sweep, SWEEP_DEFAULTS, type SweepOptions, type SweepResult, type SweepRow } from './eval/sweep.ts';
export { svgChart, type Panel, type Series } from './eval/plot.ts';
export { randomModel, llamaSpec } from './model/init.ts';
export { zooSpec, NORM_SCHEMES, type ZooOptions, type NormScheme, type FfnVariant } from './model/presets.ts';
export { sliceMatFormer } from './surgery/matformer.ts';

// Training (the loop and checkpoints, which touch the disk, are in index.ts).
export { languageModelLoss, gradients, type Batch, type LossOptions, type LossTensors, type GradientResult } from './train/loss.ts';
export { AdamW, brickKindOf, BRICK_KINDS, type BrickKind, type AdamWOptions, type StepReport } from './train/optimizer.ts';
export { warmupCosine, type ScheduleOptions } from './train/schedule.ts';
export { splitTokens, trainBatch, valBatches, type TokenData } from './train/data.ts';
