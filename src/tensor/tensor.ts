// Tensor: a shape, a dtype and a handle to storage owned by a backend. The backend interface is
// declared here (not in backends/) because tensor/ sits at the top of the import graph.
// Tensors are immutable values except for the in-place ops (`IN_PLACE_OPS`: kv_write and the optimizer's).

import type { DType, HostArray } from './dtype.ts';
import type { OpAttrs, OpName } from './ops.ts';
import { numel } from './shapes.ts';

/** Counters a backend keeps so tests and reports can count work without timing it. */
export interface BackendStats {
  dispatches: number;
  perOp: Partial<Record<OpName, number>>;
}

/** The narrow contract every backend implements: allocate, write, read, run op, free. */
export interface Backend {
  readonly name: string;
  /** Whether `run(op)` works for inputs of this dtype. Unsupported ops throw UnsupportedOpError. */
  supports(op: OpName, dtype: DType): boolean;
  /** Copy host data into a new tensor. f16/bf16 data are 16-bit patterns. */
  upload(data: HostArray, shape: readonly number[], dtype: DType): Tensor;
  /** A new zero-filled tensor. */
  zeros(shape: readonly number[], dtype: DType): Tensor;
  /** Read a tensor back to the host. */
  read(t: Tensor): Promise<HostArray>;
  /** Run one primitive op. Output is a new tensor, except kv_write which returns its (updated) cache. */
  run<O extends OpName>(op: O, inputs: readonly Tensor[], attrs: OpAttrs[O]): Tensor;
  /** Return a tensor's storage to the backend (it may be reused). */
  release(t: Tensor): void;
  readonly stats: BackendStats;
  /**
   * Whether small-batch passes should use fused ops (`fused_linear`): true where each dispatch has a
   * fixed cost that dominates decoding (WebGPU). Models read it; it changes speed, not results.
   */
  readonly prefersFusion?: boolean;
  /**
   * Whether the attention gradient should be given each row's softmax statistics (`attention_stats`,
   * computed once for q, k and v) rather than recompute them per gradient: true where the gradient is
   * tiled over key blocks (WebGPU). It changes speed, not results.
   */
  readonly wantsAttentionStats?: boolean;
  /**
   * The most tensors (inputs and output) one op may bind, where the backend has such a limit (a WebGPU
   * device's storage buffers per shader stage). Bricks choose a less fused form of an op that would need more.
   */
  readonly maxOpTensors?: number;
}

/** A tensor on some backend. Create with `backend.upload`/`zeros` or as an op result. */
export class Tensor {
  readonly size: number;
  private disposed = false;
  /** Holders (an autograd tape) that need the storage; dispose() waits until the last one lets go. */
  private pins = 0;
  private disposeWhenUnpinned = false;
  constructor(
    readonly backend: Backend,
    readonly shape: readonly number[],
    readonly dtype: DType,
    readonly handle: unknown,
    /** Set for views (reshape): the tensor whose storage this one shares. */
    readonly viewOf?: Tensor,
  ) {
    this.size = numel(shape);
  }

  /** Same storage, new shape (same number of elements). */
  reshape(shape: readonly number[]): Tensor {
    const n = numel(shape);
    if (n !== this.size) throw new Error(`reshape: cannot view ${this.size} elements as [${shape.join(', ')}]`);
    return new Tensor(this.backend, shape, this.dtype, this.handle, this.viewOf ?? this);
  }

  /** Give the storage back to the backend. Safe to call twice; on a view it disposes the viewed tensor. */
  dispose(): void {
    if (this.viewOf) return this.viewOf.dispose();
    if (this.disposed) return;
    if (this.pins > 0) { this.disposeWhenUnpinned = true; return; }
    this.disposed = true;
    this.backend.release(this);
  }

  /** Keep the storage alive until `unpin`, even if someone disposes the tensor meanwhile (autograd). */
  pin(): void {
    if (this.viewOf) return this.viewOf.pin();
    this.pins++;
  }

  /** Let go of a pin; a dispose() that came in while pinned happens now. */
  unpin(): void {
    if (this.viewOf) return this.viewOf.unpin();
    if (--this.pins === 0 && this.disposeWhenUnpinned) this.dispose();
  }

  get isDisposed(): boolean {
    return this.viewOf ? this.viewOf.isDisposed : this.disposed;
  }

  /** Read back as f32 numbers (i32 tensors are converted). */
  async toF32(): Promise<Float32Array> {
    const d = await this.backend.read(this);
    return d instanceof Float32Array ? d : Float32Array.from(d as Int32Array);
  }
}
