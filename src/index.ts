// Public API of Brickwork. User-facing layers (cli/, server/, web/) import only from here.

export { BrickworkError, CheckpointError, ContextLengthError, SpecError, TensorMismatchError, UnsupportedModelError, UnsupportedOpError, UsageError, ShapeError } from './util/errors.ts';
export type { DType } from './tensor/dtype.ts';
export { Tensor, type Backend } from './tensor/tensor.ts';
export * as ops from './tensor/api.ts';
export { OP_NAMES, type OpName, type OpAttrs } from './tensor/ops.ts';
export { getBackend, registerBackend, CpuBackend, WebGpuBackend } from './backends/backend.ts';
export { NoWebGpuError } from './backends/webgpu/device.ts';
export { WebGpuError } from './backends/webgpu/backend.ts';
export { validateSpec, specProblems, sublayerNames, SPEC_FORMAT, SPEC_VERSION } from './model/spec.ts';
export type { ModelSpec, LayerSpec, SublayerSpec, AttnSpec, FfnSpec, MoeSpec, NormSpec, NormPlacement, Activation } from './model/spec.ts';
export { Model, KVCache, declareWeights, brickCosts, type BrickCost, type Hook, type ForwardOptions, type ForwardResult, type SublayerGate } from './model/assemble.ts';
export { compilePattern } from './model/points.ts';
export { loadModel, readModelSource, type LoadedModel, type ModelSource } from './io/load.ts';
export { saveNative, type SaveOptions } from './io/native.ts';
export { Tokenizer } from './io/tokenizer.ts';
export { openTensors, writeSafetensors, SafetensorsFile } from './io/safetensors.ts';
export { generate, type GenerateOptions, type GenerateResult } from './runtime/generate.ts';
export { Rng, sampleToken, samplingDistribution, type SamplingOptions } from './runtime/sampling.ts';
export { perplexity, encodeLong, type PerplexityOptions, type PerplexityResult } from './eval/perplexity.ts';
export { randomModel, llamaSpec } from './model/init.ts';
