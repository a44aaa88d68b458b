// The WebGPU backend: GPU buffers as storage (f32, i32, and f16/bf16 weights packed two per u32),
// a size-keyed buffer pool, a pipeline cache, cached bind groups, and one compute pass per stretch of
// work: ops are recorded into the open pass and submitted only when a value is read back (or an
// upload must not overtake recorded work). Kernels come from kernels.ts, one WGSL program per op.

import type { DType, HostArray } from '../../tensor/dtype.ts';
import { WRITTEN_INPUTS, type OpAttrs, type OpName } from '../../tensor/ops.ts';
import { inferShape } from '../../tensor/shapes.ts';
import { Tensor, type Backend, type BackendStats } from '../../tensor/tensor.ts';
import { BrickworkError, UnsupportedOpError } from '../../util/errors.ts';

/** The GPU rejected work (a kernel failed validation, or memory ran out); results would be garbage. */
export class WebGpuError extends BrickworkError {
  constructor(detail: string) {
    super('E_WEBGPU', `the WebGPU device reported an error:\n${detail}`, 'this is a bug in a Brickwork kernel or the GPU ran out of memory; run with --device cpu meanwhile and set BRICKWORK_DEBUG=2 to print the WGSL');
  }
}
import { BOUNDS_SITES, checkBounds } from './bounds.ts';
import { acquireDevice, type GpuContext } from './device.ts';
import { WGSL_KERNELS, type KernelEnv, type KernelInput, type KernelPlan, type WgslKernel } from './kernels.ts';

/** A tensor's GPU storage. */
export interface GpuHandle {
  buffer: GPUBuffer;
  bytes: number;
}

const ARENA_SLOT = 1024; // bytes of parameters per dispatch (a multiple of the 256-byte dynamic-offset alignment)
const ARENA_SLOTS = 2048;

/** Bytes a tensor of n elements occupies (16-bit dtypes are packed two per u32). */
export function storageBytes(n: number, dtype: DType): number {
  const raw = dtype === 'f16' || dtype === 'bf16' ? Math.ceil(n / 2) * 4 : n * 4;
  return Math.max(16, Math.ceil(raw / 16) * 16);
}

export interface WebGpuStats extends BackendStats {
  submits: number;
  readbacks: number;
  /** Bytes of GPU buffers currently allocated (live + pooled). */
  allocatedBytes: number;
  pipelines: number;
}

/** GPU time of one kind of dispatch, summed over a profile (see WebGpuBackend.startProfile). */
export interface ProfileEntry {
  /** The op, its kernel variant and its input shapes, e.g. `matmul tiled:f16:true:false 512x768 2048x768`. */
  label: string;
  count: number;
  /** Total GPU time in milliseconds. */
  ms: number;
  /**
   * Bytes of the tensors one such dispatch binds (inputs and output, whole). For a kernel that reads each
   * input once and writes its output (a GEMV, an elementwise op) this is its memory traffic, so
   * count · bytes / time is its achieved bandwidth; kernels that reread (a tiled matmul) or touch part
   * of a tensor (a KV cache) move more or less.
   */
  bytes: number;
}

/** A level of the bind-group cache: children by buffer id, and the group once every binding is chosen. */
interface BindTrie { next?: Map<number, BindTrie>; group?: GPUBindGroup }

/** Timestamp pairs a query set holds (WebGPU allows at most 4096 queries per set). */
const PROFILE_PAIRS = 2048;
/** An environment variable in Node; undefined in browsers. */
const envVar = (name: string): string | undefined => (globalThis as { process?: { env: Record<string, string | undefined> } }).process?.env[name];
/** Bounds checking: dispatches per round of violation counters (each has BOUNDS_SITES u32, 256 bytes). */
const CHECK_SLOTS = 1024;

/** A kernel indexed outside an array (found by WebGpuBackend's bounds checking). */
export class OutOfBoundsError extends BrickworkError {
  constructor(kernel: string, sites: string[]) {
    super('E_OUT_OF_BOUNDS', `WGSL kernel ${kernel} indexed outside its arrays: ${sites.join('; ')}`,
      'this is a bug in that kernel; without bounds checking the driver would have clamped these indices or read past the buffer');
  }
}

function shaderF16Missing(info: GpuContext['adapterInfo']): BrickworkError {
  return new BrickworkError('E_OPTION', `shader-f16 was asked for, but this adapter (${info.description || info.vendor || 'unknown adapter'}) does not offer it`,
    'leave shaderF16 (or BRICKWORK_SHADER_F16) unset: f16 weights then stay packed two per u32, with the same results');
}

/**
 * Output columns per GEMV workgroup unless set (WebGpuBackend.gemvColumns): on a fallback (CPU) adapter,
 * where workgroups take turns on a few cores, 8 (the bundled model decodes about 2.4× faster than with 1
 * on SwiftShader); elsewhere 1 until a GPU has measured the others (bench/webgpu.ts times each).
 */
const defaultGemvColumns = (fallback: boolean) => (fallback ? 8 : 1);

/** The numeric options of WebGpuOptions: the environment variable that also sets each, its values, and its default. */
const NUMERIC_OPTIONS = {
  attentionSplit: { env: 'BRICKWORK_ATTENTION_SPLIT', ok: (n: number) => Number.isInteger(n) && n >= 0,
    expected: 'a whole number of 256-key blocks >= 0 (0: never split decode attention)', dflt: '4' },
  gemvColumns: { env: 'BRICKWORK_GEMV_COLUMNS', ok: (n: number) => [1, 2, 4, 8].includes(n),
    expected: 'one of 1, 2, 4, 8 output columns per GEMV workgroup', dflt: '8 on a CPU adapter such as SwiftShader, else 1' },
  matmulTile: { env: 'BRICKWORK_MATMUL_TILE', ok: (n: number) => n === 64 || n === 128, expected: "one of 64, 128 (the f32 matmul's output tile)", dflt: '64' },
  matmulStages: { env: 'BRICKWORK_MATMUL_STAGES', ok: (n: number) => n === 1 || n === 2, expected: 'one of 1, 2 (shared-memory buffers of the 128-wide tile)', dflt: '1' },
};
type NumericOption = keyof typeof NUMERIC_OPTIONS;

/** Throws E_OPTION unless n is a valid value of the option; `what` names the setting and `shown` its value as given. */
function checkOption(name: NumericOption, n: number | undefined, what: string = name, shown = String(n)): void {
  const o = NUMERIC_OPTIONS[name];
  if (n !== undefined && !o.ok(n)) throw new BrickworkError('E_OPTION', `${what} is ${shown}; expected ${o.expected}`, `leave it unset for the default (${o.dflt})`);
}

/**
 * The option's value: as given, else from its environment variable (an empty or non-numeric value is an
 * error like any other outside its values), else undefined; checked either way.
 */
function optionValue(name: NumericOption, given: number | undefined): number | undefined {
  if (given !== undefined) { checkOption(name, given); return given; }
  const env = NUMERIC_OPTIONS[name].env, v = envVar(env);
  if (v === undefined) return undefined;
  const n = /^\s*\d+\s*$/.test(v) ? Number(v) : Number.NaN;
  checkOption(name, n, env, `'${v}'`);
  return n;
}

/** BRICKWORK_SHADER_F16 as a boolean ('0' off, '1' on), undefined where unset; anything else is a clear error. */
function shaderF16FromEnv(): boolean | undefined {
  const v = envVar('BRICKWORK_SHADER_F16');
  if (v === undefined) return undefined;
  if (v.trim() !== '0' && v.trim() !== '1') {
    throw new BrickworkError('E_OPTION', `BRICKWORK_SHADER_F16 is '${v}'; expected 0 (f16 weights as u32 pairs) or 1 (as WGSL f16)`, 'unset it to use shader-f16 wherever the adapter offers it');
  }
  return v.trim() === '1';
}

export interface WebGpuOptions {
  /**
   * Check every array index of every kernel (src/backends/webgpu/bounds.ts): a kernel that indexes
   * outside an array raises OutOfBoundsError at the next read or sync. Slower; for tests. Also set by
   * BRICKWORK_WEBGPU_CHECK_BOUNDS=1.
   */
  checkBounds?: boolean;
  /** The initial `attentionSplit` (default 4, or BRICKWORK_ATTENTION_SPLIT). */
  attentionSplit?: number;
  /** The initial `gemvColumns` (1, 2, 4 or 8; or BRICKWORK_GEMV_COLUMNS). */
  gemvColumns?: number;
  /** The initial `matmulTile` (64 or 128; or BRICKWORK_MATMUL_TILE) and `matmulStages` (1 or 2; or BRICKWORK_MATMUL_STAGES). */
  matmulTile?: 64 | 128;
  matmulStages?: 1 | 2;
  /**
   * Bind f16 weights as WGSL f16 (`useShaderF16`): default on where the adapter offers shader-f16;
   * false keeps them as u32 pairs; true where the adapter lacks it is an error. Also BRICKWORK_SHADER_F16=0|1.
   */
  shaderF16?: boolean;
}

export class WebGpuBackend implements Backend {
  readonly name = 'webgpu';
  readonly prefersFusion = true;
  readonly wantsAttentionStats = true;
  /**
   * Submit the recorded work after this many dispatches (0: only when a value is read back, the
   * default), so the GPU starts on the first part of a pass while the host records the rest.
   */
  submitEvery = 0;
  private sinceSubmit = 0;
  private readonly bindingLimit: number;
  private opTensors: number;
  /**
   * The most tensors one op may bind: the device's storage buffers per shader stage, less the bounds
   * checker's counters when it runs. It may be lowered (never raised past the device's limit), e.g. to 7
   * to compare decoding with q, k and v in three dispatches against one.
   */
  get maxOpTensors(): number { return this.opTensors; }
  set maxOpTensors(n: number) { this.opTensors = Math.min(Math.max(1, Math.floor(n)), this.bindingLimit); }
  /** What kernel plans see besides their inputs; `matmulTile` lives here. */
  private readonly env: KernelEnv;
  readonly stats: WebGpuStats = { dispatches: 0, perOp: {}, submits: 0, readbacks: 0, allocatedBytes: 0, pipelines: 0 };
  readonly device: GPUDevice;
  readonly info: GpuContext['adapterInfo'];
  readonly features: Set<string>;
  private readonly pool = new Map<number, GPUBuffer[]>();
  /** Compiled pipelines by op, then by kernel key and binding layout (two levels: no key concatenation per dispatch). */
  private readonly pipelines = new Map<string, Map<string, GPUComputePipeline[]>>();
  /** Bind group layouts by slot (see run: the input count, how many inputs are written, in place or not). */
  private readonly layouts = new Map<number, GPUBindGroupLayout>();
  /** Bind groups by layout, then by the ids of their buffers in binding order (a trie of small-integer keys). */
  private readonly bindGroups = new Map<number, BindTrie>();
  private bindGroupCount = 0;
  private readonly bufferIds = new WeakMap<GPUBuffer, number>();
  private nextBufferId = 1;
  private readonly arena: GPUBuffer;
  private readonly arenaHost = new ArrayBuffer(ARENA_SLOT * ARENA_SLOTS);
  private readonly arenaWords = new Uint32Array(this.arenaHost);
  private arenaUsed = 0;
  private encoder?: GPUCommandEncoder;
  private pass?: GPUComputePassEncoder;
  private readonly staging: GPUBuffer[] = [];
  private readonly dynOffset = new Uint32Array(1);
  private destroyed = false;
  /** Per-dispatch timing while a profile runs: labels of the dispatches recorded since the last submit. */
  private prof?: { set: GPUQuerySet; resolve: GPUBuffer; labels: string[]; reads: Promise<void>[]; totals: Map<string, { count: number; ns: number }>; bytes: Map<string, number> };
  /** Validation/out-of-memory errors the device reported; raised at the next read or sync. */
  private readonly gpuErrors: string[] = [];
  /** Bounds checking: the counters, their bind group, and per pending dispatch its label and access sites. */
  private readonly check?: { buf: GPUBuffer; layout: GPUBindGroupLayout; group: GPUBindGroup; pending: { label: string; sites: string[] }[]; reads: Promise<void>[]; found: OutOfBoundsError[] };
  private readonly sites = new WeakMap<GPUComputePipeline, string[]>();

  private constructor(ctx: GpuContext, opts: WebGpuOptions = {}) {
    this.device = ctx.device;
    this.device.addEventListener('uncapturederror', (ev) => {
      this.gpuErrors.push((ev as GPUUncapturedErrorEvent).error.message);
    });
    this.info = ctx.adapterInfo;
    this.features = ctx.features;
    const lim = this.device.limits;
    this.subgroupsAvailable = this.features.has('subgroups') && ctx.wgslFeatures.has('subgroup_id');
    this.shaderF16Available = this.features.has('shader-f16');
    this.env = {
      features: this.features, matmulTile: opts.matmulTile ?? 64, matmulStages: opts.matmulStages ?? 1, subgroups: this.subgroupsAvailable && envVar('BRICKWORK_SUBGROUPS') !== '0', attentionSplit: opts.attentionSplit ?? 4,
      gemvColumns: opts.gemvColumns ?? defaultGemvColumns(ctx.fallback), shaderF16: this.shaderF16Available && opts.shaderF16 !== false, maxWorkgroupStorage: lim.maxComputeWorkgroupStorageSize, maxInvocations: lim.maxComputeInvocationsPerWorkgroup,
    };
    this.arena = this.device.createBuffer({ size: ARENA_SLOT * ARENA_SLOTS, usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST });
    if (opts.checkBounds ?? envVar('BRICKWORK_WEBGPU_CHECK_BOUNDS') === '1') {
      const buf = this.device.createBuffer({ size: 4 * BOUNDS_SITES * CHECK_SLOTS, usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST });
      const layout = this.device.createBindGroupLayout({ entries: [{ binding: 0, visibility: GPUShaderStage.COMPUTE, buffer: { type: 'storage', hasDynamicOffset: true, minBindingSize: 4 * BOUNDS_SITES } }] });
      const group = this.device.createBindGroup({ layout, entries: [{ binding: 0, resource: { buffer: buf, offset: 0, size: 4 * BOUNDS_SITES } }] });
      this.check = { buf, layout, group, pending: [], reads: [], found: [] };
    }
    this.bindingLimit = this.opTensors = lim.maxStorageBuffersPerShaderStage - (this.check ? 1 : 0);
  }

  /** Whether every kernel's array indices are checked (WebGpuOptions.checkBounds). */
  get checksBounds(): boolean { return this.check !== undefined; }

  /**
   * Output tile of large f32 matmuls: 64, or 128 (vec4 loads, 8×8 outputs per thread; bench/webgpu.ts
   * measures both). The environment variable BRICKWORK_MATMUL_TILE=128 sets it in Node.
   */
  get matmulTile(): 64 | 128 { return this.env.matmulTile; }
  set matmulTile(t: 64 | 128) {
    checkOption('matmulTile', t);
    this.env.matmulTile = t;
  }
  /**
   * Shared-memory buffers of the 128-wide tile: 1, or 2 (one barrier per K step: a step is multiplied
   * while the next is stored; needs 32 KiB of workgroup memory, else it keeps 1). BRICKWORK_MATMUL_STAGES=2
   * sets it in Node; bench/webgpu.ts measures both.
   */
  get matmulStages(): 1 | 2 { return this.env.matmulStages; }
  set matmulStages(n: 1 | 2) {
    checkOption('matmulStages', n);
    this.env.matmulStages = n;
  }

  /**
   * Decoding attends in blocks of 256 keys, one workgroup per query row; from this many blocks on (4:
   * contexts over 768 tokens, the default) each block gets a workgroup of its own and a second dispatch
   * joins them, so a long context's blocks run side by side. 0 never splits. BRICKWORK_ATTENTION_SPLIT
   * sets it in Node.
   */
  get attentionSplit(): number { return this.env.attentionSplit; }
  set attentionSplit(blocks: number) {
    checkOption('attentionSplit', blocks);
    this.env.attentionSplit = blocks;
  }

  /**
   * Output columns per workgroup of the GEMV-style kernels (batch-1 matmuls against (N, K) weights and
   * the fused decode kernels): 1, 2, 4 or 8. With more, each thread loads and normalises the input row
   * once for all of them, and one reduction serves them all, in fewer, longer workgroups. Kernels lower
   * it where their shape does not allow it. BRICKWORK_GEMV_COLUMNS sets it in Node.
   */
  get gemvColumns(): number { return this.env.gemvColumns; }
  set gemvColumns(n: number) {
    checkOption('gemvColumns', n);
    this.env.gemvColumns = n;
  }

  /** Whether the device offers subgroup operations with WGSL's `subgroup_id` (what `useSubgroups` needs). */
  readonly subgroupsAvailable: boolean;
  /**
   * Whether reductions (norms, softmax, GEMV and fused decode kernels, decode attention) join their
   * threads with subgroup operations, or with a shared-memory tree. On where available; the
   * environment variable BRICKWORK_SUBGROUPS=0 turns it off in Node. Changing it recompiles kernels.
   */
  get useSubgroups(): boolean { return this.env.subgroups; }
  set useSubgroups(on: boolean) {
    if (on && !this.subgroupsAvailable) {
      throw new Error(`useSubgroups: this device (${this.info.description || this.info.vendor || 'unknown adapter'}) lacks subgroups with WGSL subgroup_id; leave it off`);
    }
    if (on !== this.env.subgroups) { this.env.subgroups = on; this.pipelines.clear(); }
  }

  /** Whether the adapter offers shader-f16 (what `useShaderF16` needs). */
  readonly shaderF16Available: boolean;
  /**
   * Whether f16 weights are bound as WGSL f16 arrays and converted with f32(), or as u32 pairs widened
   * with unpack2x16float: the same bytes and the same f32 values, so results do not change. On where the
   * adapter offers shader-f16 (every shader then opens with `enable f16;`). Changing it recompiles kernels.
   */
  get useShaderF16(): boolean { return this.env.shaderF16; }
  set useShaderF16(on: boolean) {
    if (on && !this.shaderF16Available) throw shaderF16Missing(this.info);
    if (on !== this.env.shaderF16) { this.env.shaderF16 = on; this.pipelines.clear(); }
  }

  static async create(opts: WebGpuOptions = {}): Promise<WebGpuBackend> {
    // Options are checked before a device exists (a device left behind by a throwing constructor keeps Node running).
    const f16 = opts.shaderF16 ?? shaderF16FromEnv();
    const numeric = {
      attentionSplit: optionValue('attentionSplit', opts.attentionSplit),
      gemvColumns: optionValue('gemvColumns', opts.gemvColumns),
      matmulTile: optionValue('matmulTile', opts.matmulTile) as 64 | 128 | undefined,
      matmulStages: optionValue('matmulStages', opts.matmulStages) as 1 | 2 | undefined,
    };
    const ctx = await acquireDevice();
    if (f16 && !ctx.features.has('shader-f16')) {
      ctx.device.destroy();
      throw shaderF16Missing(ctx.adapterInfo);
    }
    return new WebGpuBackend(ctx, { ...opts, ...numeric, shaderF16: f16 });
  }

  supports(op: OpName, dtype: DType): boolean {
    if (!(op in WGSL_KERNELS)) return false;
    if (dtype === 'f32' || dtype === 'i32') return true;
    // 16-bit weights stay packed on the GPU and are widened inside these kernels.
    return (dtype === 'f16' || dtype === 'bf16') && (op === 'matmul' || op === 'gather_rows');
  }

  private bufferId(b: GPUBuffer): number {
    let id = this.bufferIds.get(b);
    if (!id) this.bufferIds.set(b, (id = this.nextBufferId++));
    return id;
  }

  private alloc(bytes: number): GPUBuffer {
    const got = this.pool.get(bytes)?.pop();
    if (got) return got;
    this.stats.allocatedBytes += bytes;
    return this.device.createBuffer({ size: bytes, usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST });
  }

  private wrap(shape: readonly number[], dtype: DType, buffer: GPUBuffer, bytes: number): Tensor {
    return new Tensor(this, shape, dtype, { buffer, bytes } satisfies GpuHandle);
  }

  upload(data: HostArray, shape: readonly number[], dtype: DType): Tensor {
    const n = shape.reduce((p, d) => p * d, 1);
    if (data.length !== n) throw new Error(`upload: ${data.length} values for shape [${shape.join(', ')}]`);
    const bytes = storageBytes(n, dtype);
    // NOTE: queue writes run before any work still unsubmitted; a pooled buffer may be read by such
    // work, so recorded work is submitted first.
    this.flush();
    const buffer = this.alloc(bytes);
    const src = new Uint8Array(bytes);
    src.set(new Uint8Array(data.buffer, data.byteOffset, data.byteLength));
    this.device.queue.writeBuffer(buffer, 0, src);
    return this.wrap(shape, dtype, buffer, bytes);
  }

  zeros(shape: readonly number[], dtype: DType): Tensor {
    const n = shape.reduce((p, d) => p * d, 1);
    const bytes = storageBytes(n, dtype);
    const buffer = this.alloc(bytes);
    // clearBuffer is recorded on the encoder, so it stays ordered with the ops around it.
    this.endPass();
    this.encoder ??= this.device.createCommandEncoder();
    this.encoder.clearBuffer(buffer, 0, bytes);
    return this.wrap(shape, dtype, buffer, bytes);
  }

  release(t: Tensor): void {
    this.recycle(t.handle as GpuHandle);
  }

  /** Returns a buffer to the pool of its size. */
  private recycle(h: GpuHandle): void {
    let free = this.pool.get(h.bytes);
    if (!free) this.pool.set(h.bytes, (free = []));
    free.push(h.buffer);
  }

  /**
   * The bind group layout of a dispatch with nIn inputs, of which the first `writes` are read-write;
   * inPlace: input 0 is the result (no output binding). Cached by `slot`, which encodes the three.
   */
  private layout(slot: number, nIn: number, inPlace: boolean, writes: number): GPUBindGroupLayout {
    let l = this.layouts.get(slot);
    if (!l) {
      const entries: GPUBindGroupLayoutEntry[] = [{ binding: 0, visibility: GPUShaderStage.COMPUTE, buffer: { type: 'uniform', hasDynamicOffset: true, minBindingSize: ARENA_SLOT } }];
      for (let i = 0; i < nIn; i++) entries.push({ binding: i + 1, visibility: GPUShaderStage.COMPUTE, buffer: { type: i < writes ? 'storage' : 'read-only-storage' } });
      if (!inPlace) entries.push({ binding: nIn + 1, visibility: GPUShaderStage.COMPUTE, buffer: { type: 'storage' } });
      l = this.device.createBindGroupLayout({ entries });
      this.layouts.set(slot, l);
    }
    return l;
  }

  private pipeline(op: string, key: string, wgsl: () => string, layout: GPUBindGroupLayout, slot: number): GPUComputePipeline {
    let byKey = this.pipelines.get(op);
    if (!byKey) this.pipelines.set(op, (byKey = new Map()));
    let variants = byKey.get(key);
    if (!variants) byKey.set(key, (variants = []));
    let p = variants[slot];
    if (!p) {
      // `enable f16;` is a directive and must come first; it only allows f16, so every shader may carry it.
      const code = (this.env.shaderF16 ? 'enable f16;\n' : '') + wgsl();
      if (Number(envVar('BRICKWORK_DEBUG') ?? 0) >= 2) console.error(`[webgpu] compile ${key}\n${code}`);
      const checked = this.check ? checkBounds(code) : undefined;
      const module = this.device.createShaderModule({ code: checked?.code ?? code });
      const bindGroupLayouts = this.check ? [layout, this.check.layout] : [layout];
      p = this.device.createComputePipeline({ layout: this.device.createPipelineLayout({ bindGroupLayouts }), compute: { module, entryPoint: 'main' } });
      if (checked) this.sites.set(p, checked.sites);
      variants[slot] = p;
      this.stats.pipelines++;
    }
    return p;
  }

  private endPass(): void {
    if (this.pass) { this.pass.end(); this.pass = undefined; }
  }

  private raiseGpuErrors(): void {
    if (!this.gpuErrors.length) return;
    const msg = this.gpuErrors.splice(0).join('\n');
    throw new WebGpuError(msg);
  }

  /**
   * Start timing every dispatch on the GPU (needs the adapter's `timestamp-query` feature). Each dispatch
   * then runs in a compute pass of its own, so the sum is a little above an unprofiled run's GPU time;
   * the shares per kernel are what a profile is for. `stopProfile()` returns the totals.
   */
  startProfile(): void {
    if (!this.features.has('timestamp-query')) {
      throw new BrickworkError('E_NO_TIMESTAMPS', `this adapter (${this.info.description || this.info.vendor || 'unknown'}) does not offer the 'timestamp-query' feature, so dispatches cannot be timed`, 'profile on an adapter that lists timestamp-query (NVIDIA, AMD and Intel Vulkan drivers and SwiftShader do)');
    }
    if (this.prof) return;
    this.flush();
    this.prof = {
      set: this.device.createQuerySet({ type: 'timestamp', count: 2 * PROFILE_PAIRS }),
      resolve: this.device.createBuffer({ size: 16 * PROFILE_PAIRS, usage: GPUBufferUsage.QUERY_RESOLVE | GPUBufferUsage.COPY_SRC }),
      labels: [], reads: [], totals: new Map(), bytes: new Map(),
    };
  }

  /** Stop timing; the GPU time per kind of dispatch since `startProfile()`, largest first. */
  async stopProfile(): Promise<ProfileEntry[]> {
    const prof = this.prof;
    if (!prof) throw new BrickworkError('E_NO_PROFILE', 'stopProfile() was called with no profile running', 'call startProfile() first');
    await this.sync();
    await Promise.all(prof.reads);
    this.prof = undefined;
    prof.set.destroy();
    prof.resolve.destroy();
    return [...prof.totals].map(([label, t]) => ({ label, count: t.count, ms: t.ns / 1e6, bytes: prof.bytes.get(label) ?? 0 })).sort((a, b) => b.ms - a.ms);
  }

  /**
   * Resolve this submit's timestamps into a buffer; the returned function, called after the submit,
   * reads and sums them once the GPU is done.
   */
  private resolveProfile(encoder: GPUCommandEncoder): () => void {
    const prof = this.prof!;
    const labels = prof.labels.splice(0);
    const bytes = 16 * labels.length;
    encoder.resolveQuerySet(prof.set, 0, 2 * labels.length, prof.resolve, 0);
    const staging = this.device.createBuffer({ size: bytes, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
    encoder.copyBufferToBuffer(prof.resolve, 0, staging, 0, bytes);
    return () => prof.reads.push((async () => {
      await staging.mapAsync(GPUMapMode.READ);
      const ts = new BigUint64Array(staging.getMappedRange());
      for (let i = 0; i < labels.length; i++) {
        const ns = Number(ts[2 * i + 1] - ts[2 * i]);
        const t = prof.totals.get(labels[i]);
        if (t) { t.count++; t.ns += ns; } else prof.totals.set(labels[i], { count: 1, ns });
      }
      staging.unmap();
      staging.destroy();
    })());
  }

  /**
   * Bounds checking: copy this submit's violation counters out and zero them; the returned function,
   * called after the submit, inspects them once the GPU is done.
   */
  private resolveChecks(encoder: GPUCommandEncoder): () => void {
    const check = this.check!;
    const pending = check.pending.splice(0);
    const bytes = 4 * BOUNDS_SITES * pending.length;
    const staging = this.device.createBuffer({ size: bytes, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
    encoder.copyBufferToBuffer(check.buf, 0, staging, 0, bytes);
    encoder.clearBuffer(check.buf, 0, bytes);
    return () => check.reads.push((async () => {
      await staging.mapAsync(GPUMapMode.READ);
      const counts = new Uint32Array(staging.getMappedRange());
      pending.forEach((d, i) => {
        const bad: string[] = [];
        for (let s = 0; s < BOUNDS_SITES; s++) {
          const n = counts[i * BOUNDS_SITES + s];
          if (n) bad.push(`${s === BOUNDS_SITES - 1 && d.sites.length > BOUNDS_SITES ? `sites ${s}+` : d.sites[s] ?? `site ${s}`} (${n}×)`);
        }
        if (bad.length) check.found.push(new OutOfBoundsError(d.label, bad));
      });
      staging.unmap();
      staging.destroy();
    })());
  }

  /** Bounds checking: wait for the counters submitted so far and raise the first kernel that went out of bounds. */
  private async raiseBounds(): Promise<void> {
    const check = this.check;
    if (!check) return;
    await Promise.all(check.reads.splice(0));
    if (check.found.length) throw check.found.splice(0)[0];
  }

  /** Submit everything recorded so far (no wait). */
  flush(): void {
    this.endPass();
    if (!this.encoder) return;
    const readTimes = this.prof?.labels.length ? this.resolveProfile(this.encoder) : undefined;
    const readChecks = this.check?.pending.length ? this.resolveChecks(this.encoder) : undefined;
    if (this.arenaUsed) this.device.queue.writeBuffer(this.arena, 0, this.arenaHost, 0, this.arenaUsed);
    this.device.queue.submit([this.encoder.finish()]);
    readTimes?.();
    readChecks?.();
    this.encoder = undefined;
    this.arenaUsed = 0;
    this.sinceSubmit = 0;
    this.stats.submits++;
  }

  run<O extends OpName>(op: O, inputs: readonly Tensor[], attrs: OpAttrs[O]): Tensor {
    const kernel = WGSL_KERNELS[op] as WgslKernel<O> | undefined;
    if (!kernel) throw new UnsupportedOpError(op, inputs[0]?.dtype ?? 'f32', this.name);
    // NOTE: this runs for every dispatch of every token; it avoids per-call closures and strings where it can.
    const shapes: (readonly number[])[] = [];
    const ins: KernelInput[] = [];
    for (let i = 0; i < inputs.length; i++) {
      const t = inputs[i];
      if (t.backend !== this) throw new Error(`${op}: input ${i} lives on backend '${t.backend.name}', not '${this.name}'`);
      if (!kernel.dtypes(i).includes(t.dtype)) throw new UnsupportedOpError(op, t.dtype, this.name);
      shapes.push(t.shape);
      ins.push({ shape: t.shape, dtype: t.dtype });
    }
    const outShape = inferShape(op, shapes, attrs);
    const d = kernel.plan(ins, attrs, outShape, this.env);
    const outDtype = d.outDtype ?? 'f32';
    const inPlace = d.inPlace === true;
    const writes = inPlace ? 1 : (WRITTEN_INPUTS[op] ?? 0);
    const nBound = inputs.length + (inPlace ? 0 : 1) + (d.pre ? 1 : 0);
    if (nBound > this.maxOpTensors) {
      throw new BrickworkError('E_BINDINGS', `${op} binds ${nBound} tensors; this backend allows ${this.maxOpTensors} per op (the device has ${this.device.limits.maxStorageBuffersPerShaderStage} storage buffers per shader stage${this.check ? ', one taken by the bounds checker' : ''})`,
        'bricks fall back to less fused ops where backend.maxOpTensors is too small; call those instead');
    }
    let out: Tensor;
    if (inPlace) out = inputs[0];
    else {
      let n = 1;
      for (const x of outShape) n *= x;
      const bytes = storageBytes(n, outDtype);
      out = this.wrap(outShape, outDtype, this.alloc(bytes), bytes);
    }
    this.stats.perOp[op] = (this.stats.perOp[op] ?? 0) + 1;
    const wg = d.workgroups;
    if (wg[0] === 0 || wg[1] === 0 || wg[2] === 0) { this.stats.dispatches++; return out; } // empty tensor: nothing to do
    const bound: GpuHandle[] = [];
    for (const t of inputs) bound.push(t.handle as GpuHandle);
    const pre = d.pre;
    if (pre) {
      // A first pass into a scratch buffer; the plan itself then reads the scratch as one more input.
      const scratch: GpuHandle = { buffer: this.alloc(pre.bytes), bytes: pre.bytes };
      bound.push(scratch);
      this.record(op, pre.plan, bound, inputs.length, false, writes, shapes, 0);
      bound.push(out.handle as GpuHandle);
      this.record(op, d, bound, inputs.length + 1, false, writes, shapes, storageBytes(out.size, outDtype));
      // Later dispatches that reuse the buffer run after these two (the queue keeps their order).
      this.recycle(scratch);
    } else {
      if (!inPlace) bound.push(out.handle as GpuHandle);
      this.record(op, d, bound, inputs.length, inPlace, writes, shapes, inPlace ? 0 : storageBytes(out.size, outDtype));
    }
    return out;
  }

  /**
   * Records one dispatch of plan d: `bound` are the buffers of bindings 1.. in order, the first nIn of
   * them inputs (the first `writes` of those read-write) and, unless inPlace, the last the output.
   * outBytes: the output's size, for the profile's byte counts.
   */
  private record(op: string, d: KernelPlan, bound: GpuHandle[], nIn: number, inPlace: boolean, writes: number, shapes: (readonly number[])[], outBytes: number): void {
    this.stats.dispatches++;
    const wg = d.workgroups;
    const nBound = bound.length;
    // One small integer per layout: the input count, whether the result is input 0, how many inputs are written.
    const slot = (4 * nIn + writes) * 2 + (inPlace ? 1 : 0);
    const layout = this.layout(slot, nIn, inPlace, writes);
    const pipeline = this.pipeline(op, d.key, d.wgsl, layout, slot);
    if (this.arenaUsed + ARENA_SLOT > this.arenaHost.byteLength) this.flush();
    const offset = this.arenaUsed;
    this.arenaWords.set(d.params, offset >> 2);
    this.arenaUsed += ARENA_SLOT;

    // A buffer's binding always spans the whole buffer (pooled buffers are exactly a size class), so its
    // id alone identifies the binding.
    let node: BindTrie | undefined = this.bindGroups.get(slot);
    if (!node) this.bindGroups.set(slot, (node = { next: new Map() }));
    for (let i = 0; i < nBound; i++) {
      const id = this.bufferId(bound[i].buffer);
      let child: BindTrie | undefined = node.next!.get(id);
      if (!child) node.next!.set(id, (child = i === nBound - 1 ? {} : { next: new Map() }));
      node = child;
    }
    let bg = node.group;
    if (!bg) {
      const entries: GPUBindGroupEntry[] = [{ binding: 0, resource: { buffer: this.arena, offset: 0, size: ARENA_SLOT } }];
      for (let i = 0; i < nBound; i++) entries.push({ binding: i + 1, resource: { buffer: bound[i].buffer, offset: 0, size: bound[i].bytes } });
      bg = this.device.createBindGroup({ layout, entries });
      // Bind groups hold their buffers; a long run with ever-new buffers must not keep them all.
      if (++this.bindGroupCount > 20000) { this.bindGroups.clear(); this.bindGroupCount = 0; }
      node.group = bg;
    }
    this.encoder ??= this.device.createCommandEncoder();
    const prof = this.prof;
    const check = this.check;
    const label = prof || check ? `${op} ${d.key} ${shapes.map((x) => x.join('x')).join(' ')}` : '';
    if (prof) {
      // A pass of its own, with timestamps at its start and end.
      this.endPass();
      const i = prof.labels.length;
      prof.labels.push(label);
      if (!prof.bytes.has(label)) {
        let bytes = outBytes;
        for (let j = 0; j < nIn; j++) bytes += bound[j].bytes;
        prof.bytes.set(label, bytes);
      }
      this.pass = this.encoder.beginComputePass({ timestampWrites: { querySet: prof.set, beginningOfPassWriteIndex: 2 * i, endOfPassWriteIndex: 2 * i + 1 } });
    }
    this.pass ??= this.encoder.beginComputePass();
    this.pass.setPipeline(pipeline);
    this.dynOffset[0] = offset;
    this.pass.setBindGroup(0, bg, this.dynOffset, 0, 1);
    if (check) {
      this.dynOffset[0] = 4 * BOUNDS_SITES * check.pending.length;
      this.pass.setBindGroup(1, check.group, this.dynOffset, 0, 1);
      check.pending.push({ label, sites: this.sites.get(pipeline)! });
    }
    this.pass.dispatchWorkgroups(wg[0], wg[1] ?? 1, wg[2] ?? 1);
    if (check && check.pending.length >= CHECK_SLOTS) this.flush();
    if (prof) { this.endPass(); if (prof.labels.length >= PROFILE_PAIRS) this.flush(); }
    if (this.submitEvery > 0 && ++this.sinceSubmit >= this.submitEvery) this.flush();
  }

  async read(t: Tensor): Promise<HostArray> {
    const h = t.handle as GpuHandle;
    this.endPass();
    this.encoder ??= this.device.createCommandEncoder();
    const staging = this.stagingBuffer(h.bytes);
    this.encoder.copyBufferToBuffer(h.buffer, 0, staging, 0, h.bytes);
    this.flush();
    this.stats.readbacks++;
    await staging.mapAsync(GPUMapMode.READ, 0, h.bytes);
    this.raiseGpuErrors();
    const bytes = new Uint8Array(staging.getMappedRange(0, h.bytes)).slice();
    staging.unmap();
    this.staging.push(staging);
    if (this.staging.length > 8) this.staging.shift()!.destroy();
    await this.raiseBounds();
    const n = t.size;
    if (t.dtype === 'i32') return new Int32Array(bytes.buffer, 0, n);
    if (t.dtype === 'f16' || t.dtype === 'bf16') return new Uint16Array(bytes.buffer, 0, n);
    return new Float32Array(bytes.buffer, 0, n);
  }

  private stagingBuffer(bytes: number): GPUBuffer {
    const i = this.staging.findIndex((b) => b.size >= bytes);
    if (i >= 0) return this.staging.splice(i, 1)[0];
    return this.device.createBuffer({ size: Math.max(bytes, 256), usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
  }

  /** Wait until the GPU has finished all submitted work. */
  async sync(): Promise<void> {
    this.flush();
    await this.device.queue.onSubmittedWorkDone();
    this.raiseGpuErrors();
    await this.raiseBounds();
  }

  /** Free every GPU resource; the backend is unusable afterwards. A live device keeps Node running. */
  destroy(): void {
    if (this.destroyed) return;
    this.destroyed = true;
    this.device.destroy();
  }
}
