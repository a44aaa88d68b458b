// Typed errors for Brickwork. Every error carries a stable `code`, the facts
// (what was expected, what was found, where) and a `hint` telling the user what to do.
// The CLI prints `message` + hint and exits non-zero; it never shows a stack trace for these.

/** Base class of every error Brickwork raises on purpose. */
export class BrickworkError extends Error {
  readonly code: string;
  readonly hint: string | undefined;
  constructor(code: string, message: string, hint?: string) {
    super(hint ? `${message}\nhint: ${hint}` : message);
    this.name = new.target.name;
    this.code = code;
    this.hint = hint;
  }
}

/** A checkpoint, config or tokenizer file is missing, truncated or malformed. */
export class CheckpointError extends BrickworkError {
  readonly file: string;
  constructor(file: string, message: string, hint?: string) {
    super('E_CHECKPOINT', `${file}: ${message}`, hint);
    this.file = file;
  }
}

/** A tensor is missing or has the wrong shape/dtype. */
export class TensorMismatchError extends BrickworkError {
  constructor(readonly tensor: string, message: string, hint?: string) {
    super('E_TENSOR', `tensor '${tensor}': ${message}`, hint);
  }
}

/** A config.json names a model_type or option Brickwork does not support. */
export class UnsupportedModelError extends BrickworkError {
  constructor(message: string, hint?: string) {
    super('E_UNSUPPORTED_MODEL', message, hint);
  }
}

/** A ModelSpec failed validation; `problems` lists every problem with its path. */
export class SpecError extends BrickworkError {
  constructor(readonly problems: string[]) {
    super('E_SPEC', `invalid model spec (${problems.length} problem${problems.length === 1 ? '' : 's'}):\n  ${problems.join('\n  ')}`,
      'fix the fields listed above; see src/model/README.md for the spec format');
  }
}

/** A backend was asked to run an op/dtype it does not implement. Never silently falls back. */
export class UnsupportedOpError extends BrickworkError {
  constructor(readonly op: string, readonly dtype: string, readonly backend: string) {
    super('E_UNSUPPORTED_OP', `backend '${backend}' does not support op '${op}' for dtype ${dtype}`,
      'run on the cpu backend, or add a kernel for this op to the backend');
  }
}

/** Shapes of op inputs do not fit together. */
export class ShapeError extends BrickworkError {
  constructor(op: string, message: string) {
    super('E_SHAPE', `${op}: ${message}`, 'check the shapes of the tensors passed to this op');
  }
}

/** The prompt (plus requested new tokens) does not fit the model's context. */
export class ContextLengthError extends BrickworkError {
  constructor(readonly found: number, readonly limit: number, what = 'prompt') {
    super('E_CONTEXT', `${what} needs ${found} positions but the model's context is ${limit} tokens`,
      'shorten the prompt or lower --max-new-tokens; Brickwork never truncates silently');
  }
}

/** A command-line or API argument is invalid. */
export class UsageError extends BrickworkError {
  constructor(message: string, hint?: string) {
    super('E_USAGE', message, hint);
  }
}

/** A skip/exit policy spec is malformed or does not fit the model. */
export class PolicyError extends BrickworkError {
  constructor(readonly spec: string, message: string, hint?: string) {
    super('E_POLICY', `policy '${spec}': ${message}`, hint);
  }
}

/** A model computed NaN or infinite values where a token or a loss needed numbers. */
export class NonFiniteError extends BrickworkError {
  /** `weight`: the weight that holds the value, where one does. */
  constructor(message: string, readonly weight?: string) {
    super('E_NON_FINITE', message,
      'the weights may hold inf or NaN (a checkpoint narrowed to f16 beyond its range, or a diverged training run); check the checkpoint, or re-save it in f32 or bf16');
  }
}

/** Training hit a NaN or infinity: says at which step and in which brick it first appeared. */
export class TrainingError extends BrickworkError {
  constructor(readonly step: number, readonly brick: string, detail: string, hint?: string) {
    super('E_NAN', `training stopped at step ${step}: ${detail} (first in ${brick})`,
      hint ?? 'the last checkpoint saved before this step is intact; train on from its weights with a lower --lr or a --clip (--model CHECKPOINT --out NEW), or check the data');
  }
}
