// The CPU backend: host typed arrays as storage, a size-keyed pool so steady-state decoding does
// not allocate, and a kernel table. By default it uses the fast kernels from fast/ and keeps f32
// storage inside the WASM heap (so matmuls read weights in place, never copying them per call);
// `{ reference: true }` runs only the reference kernels (the definition of each op) on plain arrays.

import type { DType, HostArray } from '../../tensor/dtype.ts';
import type { OpAttrs, OpName } from '../../tensor/ops.ts';
import { IN_PLACE_OPS, OP_NAMES } from '../../tensor/ops.ts';
import { inferShape } from '../../tensor/shapes.ts';
import { Tensor, type Backend, type BackendStats } from '../../tensor/tensor.ts';
import { ShapeError, UnsupportedOpError } from '../../util/errors.ts';
import { CPU_KERNELS, type CpuKernel, type CpuKernelTable, type HostTensor } from './kernels.ts';
import { FAST_KERNELS } from './fast/kernels.ts';
import { allocF32, freeF32, isResident } from './fast/matmul.ts';

/** Ops whose output is integer indices. */
const INT_OUTPUT: Partial<Record<OpName, true>> = { topk: true, sample: true, accept_draft: true };
/** Ops that take f32 or i32 inputs, all of one dtype, and return that dtype. */
const ANY_DTYPE: Partial<Record<OpName, true>> = { concat: true };
/** Ops whose integer inputs are indices (allowed alongside f32 data). */
const INDEX_INPUTS: Partial<Record<OpName, number[]>> = {
  gather_rows: [1], index_add_rows: [2], accept_draft: [2], gather: [1], scatter_add: [1], cross_entropy: [1], cross_entropy_grad: [1],
};

export interface CpuBackendOptions {
  /** Use only the reference kernels (slow; the definition every fast path is tested against). */
  reference?: boolean;
}

export class CpuBackend implements Backend {
  readonly name: string;
  readonly stats: BackendStats = { dispatches: 0, perOp: {} };
  private readonly kernels: CpuKernelTable;
  // NOTE: pooled arrays are not zeroed; every kernel overwrites its whole output.
  private readonly pool = new Map<string, (Float32Array | Int32Array)[]>();
  private static readonly POOL_DEPTH = 16;
  private readonly resident: boolean;
  // NOTE: WASM-heap storage is not garbage collected: a tensor dropped without dispose() gives its
  // block back through this registry when the tensor object itself is collected.
  private readonly finalizer = new FinalizationRegistry<Float32Array>((buf) => freeF32(buf));

  constructor(opts: CpuBackendOptions = {}) {
    this.name = opts.reference ? 'cpu-reference' : 'cpu';
    this.kernels = opts.reference ? CPU_KERNELS : { ...CPU_KERNELS, ...FAST_KERNELS };
    this.resident = !opts.reference;
  }

  private wrap(shape: readonly number[], dtype: DType, buf: Float32Array | Int32Array): Tensor {
    const t = new Tensor(this, shape, dtype, buf);
    if (buf instanceof Float32Array && isResident(buf)) this.finalizer.register(t, buf, t);
    return t;
  }

  supports(op: OpName, dtype: DType): boolean {
    return OP_NAMES.includes(op) && (dtype === 'f32' || dtype === 'i32');
  }

  private alloc(n: number, dtype: 'f32' | 'i32'): Float32Array | Int32Array {
    const free = this.pool.get(`${dtype}:${n}`);
    const got = free?.pop();
    if (got) return got;
    if (dtype === 'i32') return new Int32Array(n);
    return this.resident ? allocF32(n) : new Float32Array(n);
  }

  upload(data: HostArray, shape: readonly number[], dtype: DType): Tensor {
    if (dtype === 'f16' || dtype === 'bf16') throw new UnsupportedOpError('upload', dtype, this.name);
    const n = shape.reduce((p, d) => p * d, 1);
    if (data.length !== n) throw new Error(`upload: ${data.length} values for shape [${shape.join(', ')}]`);
    const buf = this.alloc(n, dtype as 'f32' | 'i32');
    buf.set(data as ArrayLike<number>);
    return this.wrap(shape, dtype, buf);
  }

  zeros(shape: readonly number[], dtype: DType): Tensor {
    if (dtype !== 'f32' && dtype !== 'i32') throw new UnsupportedOpError('zeros', dtype, this.name);
    const buf = this.alloc(shape.reduce((p, d) => p * d, 1), dtype);
    buf.fill(0);
    return this.wrap(shape, dtype, buf);
  }

  /** Synchronous read (CPU only): the tensor's storage itself, not a copy. Do not mutate. */
  view(t: Tensor): Float32Array | Int32Array {
    if (t.isDisposed) throw new Error('read of a disposed tensor');
    return t.handle as Float32Array | Int32Array;
  }

  async read(t: Tensor): Promise<HostArray> {
    return this.view(t).slice();
  }

  run<O extends OpName>(op: O, inputs: readonly Tensor[], attrs: OpAttrs[O]): Tensor {
    const idx: number[] = INDEX_INPUTS[op] ?? [];
    const any = ANY_DTYPE[op] === true && (inputs[0]?.dtype === 'i32' || inputs[0]?.dtype === 'f32');
    if (any && inputs.some((t) => t.dtype !== inputs[0].dtype))
      throw new ShapeError(op, `inputs are ${inputs.map((t) => t.dtype).join(' and ')}; expected one dtype`);
    inputs.forEach((t, i) => {
      if (t.backend !== this) throw new Error(`${op}: input ${i} lives on backend '${t.backend.name}', not '${this.name}'`);
      const want = any ? inputs[0].dtype : idx.includes(i) ? 'i32' : 'f32';
      if (t.dtype !== want) throw new UnsupportedOpError(op, t.dtype, this.name);
    });
    const outShape = inferShape(op, inputs.map((t) => t.shape), attrs);
    const xs: HostTensor[] = inputs.map((t) => ({ data: this.view(t), shape: t.shape }));
    this.stats.dispatches++;
    this.stats.perOp[op] = (this.stats.perOp[op] ?? 0) + 1;
    const kernel = this.kernels[op] as CpuKernel<O>;
    if (IN_PLACE_OPS.has(op)) {
      kernel(xs[0].data, xs, attrs, outShape);
      return inputs[0];
    }
    const dtype = INT_OUTPUT[op] || (any && inputs[0].dtype === 'i32') ? 'i32' : 'f32';
    const out = this.alloc(outShape.reduce((p, d) => p * d, 1), dtype);
    kernel(out, xs, attrs, outShape);
    return this.wrap(outShape, dtype, out);
  }

  release(t: Tensor): void {
    const buf = t.handle as Float32Array | Int32Array;
    this.finalizer.unregister(t);
    const key = `${t.dtype}:${buf.length}`;
    let free = this.pool.get(key);
    if (!free) this.pool.set(key, (free = []));
    if (free.length < CpuBackend.POOL_DEPTH) free.push(buf);
    else if (buf instanceof Float32Array) freeF32(buf);
  }
}
