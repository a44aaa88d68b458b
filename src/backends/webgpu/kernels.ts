// WGSL kernels: one entry per primitive op (a `Record<OpName, …>` the compiler keeps complete). Each
// entry plans a dispatch: the shader variant (key + source, compiled once and cached), the workgroup
// grid and the parameter words. Bindings: 0 = parameters (uniform, 256 u32 words read via u()/f()),
// 1..n = inputs (read-only), n+1 = output — or input 0 read-write for in-place ops (kv_write, adam_*);
// fused_qkv writes inputs 0 and 1 (the KV caches) besides its output.
// 16-bit weights (f16/bf16) are stored two per u32 and widened in the shader; on adapters with
// shader-f16 (KernelEnv.shaderF16) the same f16 bytes are bound as WGSL f16 and converted instead.

import type { DType } from '../../tensor/dtype.ts';
import { fusedLinearSlots, fusedQkvSlots, type OpAttrs, type OpName } from '../../tensor/ops.ts';
import { ShapeError } from '../../util/errors.ts';

export interface KernelInput {
  shape: readonly number[];
  dtype: DType;
}

export interface KernelPlan {
  /** Identifies the shader variant (the op name is prefixed by the backend). */
  key: string;
  wgsl: () => string;
  workgroups: number[];
  params: ArrayLike<number>;
  outDtype?: DType;
  /** Input 0 is updated in place and is the result. */
  inPlace?: boolean;
  /**
   * A first pass that writes a scratch buffer of `bytes`: it binds the op's inputs with the scratch as
   * its output; this plan then binds the inputs, the scratch (one more read-only input) and the output.
   */
  pre?: { plan: KernelPlan; bytes: number };
}

/** What a plan may depend on besides its inputs: the device's features and the backend's kernel choices. */
export interface KernelEnv {
  features: Set<string>;
  /** Output tile of the f32 matmul: 64 (the default) or 128 (bigTileMatmul, where the operands allow vec4 loads). */
  matmulTile: 64 | 128;
  /**
   * Shared-memory buffers of the 128-wide tile: 1 (store a K step, barrier, multiply, barrier) or 2
   * (multiply one step while the next is stored into the other buffer: one barrier per step). 2 needs
   * twice the workgroup memory (32 KiB); where the device has less the tile keeps one buffer.
   */
  matmulStages: 1 | 2;
  /**
   * Whether reductions use subgroup operations (the device has `subgroups` and WGSL's `subgroup_id`):
   * each subgroup sums in registers and one barrier joins them, where a shared-memory tree takes
   * log2(threads) barriers.
   */
  subgroups: boolean;
  /**
   * Decode attention splits a row's keys over workgroups (one per block of 256, then a join) from this
   * many blocks on; 0: never.
   */
  attentionSplit: number;
  /**
   * f16 tensors are bound as WGSL f16 arrays (the adapter's shader-f16; the backend then opens every
   * shader with `enable f16;`) instead of u32 pairs unpacked with unpack2x16float. The bytes and the
   * f32 values the kernels compute with are the same either way.
   */
  shaderF16: boolean;
  /**
   * Output columns (jobs) per workgroup of the GEMV-style kernels (`gemvT`, the fused decode kernels):
   * 1, 2, 4 or 8. With more than one, each thread loads (and normalises) x once for all of them and the
   * workgroup reduces their sums together; plans lower it where the shape does not allow it.
   */
  gemvColumns: number;
  /** The device's limits on workgroup memory (bytes) and invocations per workgroup. */
  maxWorkgroupStorage: number;
  maxInvocations: number;
}

export interface WgslKernel<O extends OpName> {
  /** Dtypes accepted for input i. */
  dtypes(i: number): DType[];
  plan(ins: KernelInput[], attrs: OpAttrs[O], outShape: readonly number[], env: KernelEnv): KernelPlan;
}

const MAX_WORDS = 256;
const MAX_WG = 65535;

/** Parameter words are u32; a float goes in as its f32 bit pattern (`f`). */
const fbuf = new Float32Array(1);
const ubuf = new Uint32Array(fbuf.buffer);
const f = (v: number): number => { fbuf[0] = v; return ubuf[0]; };
const scratchWords = new Uint32Array(MAX_WORDS);
function words(...xs: (number | readonly number[])[]): Uint32Array {
  let n = 0;
  for (const x of xs) {
    if (typeof x === 'number') { if (n < MAX_WORDS) scratchWords[n] = x >>> 0; n++; continue; }
    for (let i = 0; i < x.length; i++) { if (n < MAX_WORDS) scratchWords[n] = x[i] >>> 0; n++; }
  }
  if (n > MAX_WORDS) throw new ShapeError('webgpu', `${n} parameter words exceed the ${MAX_WORDS} a dispatch can carry (too many batch rows?)`);
  return scratchWords.slice(0, n);
}

const numel = (s: readonly number[]) => s.reduce((p, d) => p * d, 1);
const MAX_RANK = 8;
/** Row-major strides of a shape. */
const stridesOf = (s: readonly number[]) => s.map((_, i) => numel(s.slice(i + 1)));
/** xs followed by `fill` up to MAX_RANK entries (fixed parameter slots). */
const padTo = (xs: readonly number[], fill: number) => [...xs, ...new Array(MAX_RANK - xs.length).fill(fill)];
const last = (s: readonly number[]) => s[s.length - 1];
/**
 * How a tensor's elements are bound in a kernel: as its dtype (f16 and bf16 as u32 pairs), or 'f16n':
 * f16 bound as WGSL f16 (KernelEnv.shaderF16).
 */
type Held = DType | 'f16n';
const held = (d: DType, env: KernelEnv): Held => (d === 'f16' && env.shaderF16 ? 'f16n' : d);
const is16 = (d: Held) => d === 'f16' || d === 'bf16' || d === 'f16n';
/** The element type of a 16-bit array read 8 halves at a time (a 16-byte load either way). */
const vec16 = (d: Held) => (d === 'f16n' ? 'mat2x4<f16>' : 'vec4<u32>');

/** A 1-D range of n items over workgroups of `size`, folded into 2-D when it exceeds the grid limit. */
function grid(n: number, size: number): { workgroups: number[]; nx: number } {
  const groups = Math.ceil(n / size);
  const x = Math.min(groups, MAX_WG);
  return { workgroups: [x, Math.ceil(groups / x)], nx: x };
}

/** The parameter words (binding 0) and their accessors u(i) / f(i), which every kernel opens with. */
const PARAMS_WGSL = `struct Params { w: array<vec4<u32>, 64> };
@group(0) @binding(0) var<uniform> p: Params;
fn u(i: u32) -> u32 { return p.w[i / 4u][i % 4u]; }
fn f(i: u32) -> f32 { return bitcast<f32>(u(i)); }`;

/** Bindings and parameter accessors shared by every kernel. `ins` are the WGSL element types. */
function header(ins: string[], out: string | undefined, names = ['a', 'b', 'c', 'd']): string {
  const lines = [PARAMS_WGSL];
  ins.forEach((t, i) => lines.push(`@group(0) @binding(${i + 1}) var<storage, ${out === undefined && i === 0 ? 'read_write' : 'read'}> ${names[i]}: array<${t}>;`));
  if (out !== undefined) lines.push(`@group(0) @binding(${ins.length + 1}) var<storage, read_write> o: array<${out}>;`);
  return lines.join('\n') + '\n';
}

/** WGSL that reads element i of a (possibly 16-bit packed) array named `arr` as f32. */
function loader(fn: string, arr: string, dtype: Held): string {
  if (dtype === 'f16n') return `fn ${fn}(i: u32) -> f32 { return f32(${arr}[i]); }\n`;
  if (dtype === 'f16') return `fn ${fn}(i: u32) -> f32 { let v = unpack2x16float(${arr}[i >> 1u]); return select(v.x, v.y, (i & 1u) == 1u); }\n`;
  if (dtype === 'bf16') return `fn ${fn}(i: u32) -> f32 { let w = ${arr}[i >> 1u]; return bitcast<f32>(select(w << 16u, w & 0xffff0000u, (i & 1u) == 1u)); }\n`;
  return `fn ${fn}(i: u32) -> f32 { return ${arr}[i]; }\n`;
}
const storageType = (d: Held) => (d === 'f16n' ? 'f16' : is16(d) ? 'u32' : d === 'i32' ? 'i32' : 'f32');

const ERF_WGSL = `
fn erf_(x: f32) -> f32 {
  let z = abs(x);
  let t = 1.0 / (1.0 + 0.5 * z);
  let r = t * exp(-z * z - 1.26551223 + t * (1.00002368 + t * (0.37409196 + t * (0.09678418 +
    t * (-0.18628806 + t * (0.27886807 + t * (-1.13520398 + t * (1.48851587 + t * (-0.82215223 + t * 0.17087277)))))))));
  return select(r - 1.0, 1.0 - r, x >= 0.0);
}
`;

/** The elementwise activations as WGSL expressions of `x` (gelu_erf needs ERF_WGSL). */
const ACT_WGSL: Record<'silu' | 'relu' | 'gelu_erf' | 'gelu_tanh', string> = {
  silu: 'x / (1.0 + exp(-x))',
  relu: 'max(x, 0.0)',
  gelu_erf: '0.5 * x * (1.0 + erf_(x * 0.70710678118654752))',
  gelu_tanh: '0.5 * x * (1.0 + tanh(clamp(0.7978845608028654 * (x + 0.044715 * x * x * x), -15.0, 15.0)))',
};

const IDX = 'let i = gid.x + gid.y * u(1u) * 256u;';

// NOTE: WGSL's sin/cos are only accurate to 2^-11 inside [-pi, pi]; rotary angles reach hundreds of
// radians. This reduces by pi/2 in three parts (Cody-Waite) and evaluates minimax polynomials, which is
// accurate to about 1e-7 for |x| < 8192 — as close to torch's f32 cos/sin as the golden tests need.
const SINCOS_WGSL = `
fn sincos_(x: f32) -> vec2<f32> {
  let q = round(x * 0.63661977236758134);
  let r = ((x - q * 1.5703125) - q * 4.837512969970703125e-4) - q * 7.54978995489188216e-8;
  let z = r * r;
  let s = r + r * z * (-1.6666654611e-1 + z * (8.3321608736e-3 + z * -1.9515295891e-4));
  let c = 1.0 - 0.5 * z + z * z * (4.166664568298827e-2 + z * (-1.388731625493765e-3 + z * 2.443315711809948e-5));
  let k = i32(q) & 3;
  if (k == 0) { return vec2<f32>(s, c); }
  if (k == 1) { return vec2<f32>(c, -s); }
  if (k == 2) { return vec2<f32>(-s, -c); }
  return vec2<f32>(-c, s);
}
`;

type AttrFreeKernel = { dtypes(i: number): DType[]; plan(ins: KernelInput[], attrs: Record<string, never>, outShape: readonly number[], env: KernelEnv): KernelPlan };

/** One thread per element: o[i] = expr(x = a[i]); `c` is a constant the expression may read as f(2u). */
function elementwisePlan(name: string, ins: KernelInput[], expr: string, extra = '', c = 0): KernelPlan {
  const n = numel(ins[0].shape);
  const g = grid(n, 256);
  return {
    key: name, workgroups: g.workgroups, params: words(n, g.nx, f(c)),
    wgsl: () => `${header(['f32'], 'f32')}${extra}
@compute @workgroup_size(256) fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  ${IDX}
  if (i >= u(0u)) { return; }
  let x = a[i];
  o[i] = ${expr};
}`,
  };
}

function unary(name: string, expr: string, extra = ''): AttrFreeKernel {
  return { dtypes: () => ['f32'], plan: (ins) => elementwisePlan(name, ins, expr, extra) };
}

function binary(name: string, expr: string): AttrFreeKernel {
  return {
    dtypes: () => ['f32'],
    plan(ins, _a, outShape) {
      const n = numel(outShape);
      const g = grid(n, 256);
      const [A, B] = ins.map((x) => x.shape);
      const na = numel(A), nb = numel(B);
      // Fast paths: equal sizes, or one side repeating along the other's trailing dims.
      const trailing = (small: readonly number[], big: readonly number[]) => {
        let s = [...small];
        while (s.length > 1 && s[0] === 1) s = s.slice(1);
        return s.length <= big.length && s.every((d, j) => d === big[big.length - s.length + j]);
      };
      let mode: string, params: Uint32Array;
      if (na === n && nb === n) { mode = 'same'; params = words(n, g.nx); }
      else if (na === n && trailing(B, outShape)) { mode = 'modb'; params = words(n, g.nx, nb); }
      else if (nb === n && trailing(A, outShape)) { mode = 'moda'; params = words(n, g.nx, na); }
      else {
        const R = outShape.length;
        if (R > 6) throw new ShapeError(name, `broadcasting over ${R} dims (at most 6 on WebGPU)`);
        const strides = (s: readonly number[]) => {
          const st = new Array(R).fill(0);
          let acc = 1;
          for (let i = s.length - 1; i >= 0; i--) { st[R - s.length + i] = s[i] === 1 ? 0 : acc; acc *= s[i]; }
          return st;
        };
        const pad = (x: number[]) => [...new Array(6 - R).fill(0), ...x];
        const padShape = [...new Array(6 - R).fill(1), ...outShape];
        mode = 'general';
        params = words(n, g.nx, padShape, pad(strides(A)), pad(strides(B)));
      }
      const ia = mode === 'moda' ? 'i % u(2u)' : mode === 'general' ? 'ia' : 'i';
      const ib = mode === 'modb' ? 'i % u(2u)' : mode === 'general' ? 'ib' : 'i';
      const general = mode !== 'general' ? '' : `
  var rem = i; var ia = 0u; var ib = 0u;
  for (var d = 5; d >= 0; d--) {
    let dim = u(2u + u32(d));
    let c = rem % dim; rem = rem / dim;
    ia += c * u(8u + u32(d)); ib += c * u(14u + u32(d));
  }`;
      return {
        key: `${name}:${mode}`, workgroups: g.workgroups, params,
        wgsl: () => `${header(['f32', 'f32'], 'f32')}
@compute @workgroup_size(256) fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  ${IDX}
  if (i >= u(0u)) { return; }${general}
  let x = a[${ia}]; let y = b[${ib}];
  o[i] = ${expr};
}`,
      };
    },
  };
}

/** One workgroup of 256 threads per row of the last axis; `body` sees `row`, `C`, `lid`, and reduce_sum/reduce_max(lid, v). */
function rowKernel(key: string, ins: string[], rows: number, C: number, extraParams: number[], body: string, env: KernelEnv, pre = ''): KernelPlan {
  const g = grid(rows * 256, 256);
  const sg = sgParts(env.subgroups);
  return {
    key, workgroups: g.workgroups, params: words(rows, g.nx, C, ...extraParams),
    wgsl: () => `${sg.enable}${header(ins, 'f32')}${pre}
${sg.vars}${workgroupReduce(256, env.subgroups, 'reduce_any')}
fn reduce_sum(lid: u32, v: f32) -> f32 { return reduce_any(lid, v, false); }
fn reduce_max(lid: u32, v: f32) -> f32 { return reduce_any(lid, v, true); }
@compute @workgroup_size(256) fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lv: vec3<u32>${sg.args}) {
  ${sg.init}
  let row = wid.x + wid.y * u(1u);
  if (row >= u(0u)) { return; }
  let lid = lv.x;
  let C = u(2u);
  let base = row * C;
${body}
}`,
  };
}

const NEG_INF = '-3.4e38'; // below any finite score; the f32 maximum itself is not a valid WGSL literal

/**
 * Subgroup builtins for a kernel's `main` (KernelEnv.subgroups): `enable` opens the module, `vars`
 * declares private copies that helper functions read (sg_lane, sg_size, sg_id, sg_count), `args` goes
 * into main's parameters and `init` first into its body. All four are empty without subgroups.
 */
function sgParts(sub: boolean): { enable: string; vars: string; args: string; init: string } {
  if (!sub) return { enable: '', vars: '', args: '', init: '' };
  return {
    enable: 'enable subgroups;\nrequires subgroup_id;\n',
    vars: 'var<private> sg_lane: u32; var<private> sg_size: u32; var<private> sg_id: u32; var<private> sg_count: u32;\n',
    args: ', @builtin(subgroup_invocation_id) sgl_: u32, @builtin(subgroup_size) sgs_: u32, @builtin(subgroup_id) sgi_: u32, @builtin(num_subgroups) sgc_: u32',
    init: 'sg_lane = sgl_; sg_size = sgs_; sg_id = sgi_; sg_count = sgc_;',
  };
}

/**
 * WGSL for `<name>(lid, v, isMax) -> f32`: the sum (or max) of v over a workgroup of n threads, given to
 * every thread; call it from uniform control flow. With subgroups each subgroup reduces in registers and
 * one barrier joins the subgroups' results (sgParts must be in the kernel); without, a tree in `red`.
 */
function workgroupReduce(n: number, sub: boolean, name = `reduce${n}`): string {
  if (sub) {
    return `var<workgroup> red: array<f32, ${n}>;
fn ${name}(lid: u32, v: f32, isMax: bool) -> f32 {
  let s = select(subgroupAdd(v), subgroupMax(v), isMax);
  if (sg_lane == 0u) { red[sg_id] = s; }
  workgroupBarrier();
  var t = select(0.0, ${NEG_INF}, isMax);
  for (var i = sg_lane; i < sg_count; i += sg_size) { t = select(t + red[i], max(t, red[i]), isMax); }
  let r = select(subgroupAdd(t), subgroupMax(t), isMax);
  workgroupBarrier(); return r;
}`;
  }
  return `var<workgroup> red: array<f32, ${n}>;
fn ${name}(lid: u32, v: f32, isMax: bool) -> f32 {
  red[lid] = v; workgroupBarrier();
  for (var st = ${n / 2}u; st > 0u; st = st >> 1u) {
    if (lid < st) { red[lid] = select(red[lid] + red[lid + st], max(red[lid], red[lid + st]), isMax); }
    workgroupBarrier();
  }
  let r = red[0]; workgroupBarrier(); return r;
}`;
}

/**
 * WGSL for per-slot sums over a 64-thread workgroup, where only a few threads need the totals:
 * `put(lid, slot, v)` adds this thread's v to slot (every thread, uniform control flow), then
 * `reduce_parts(lid, n)` once for slots 0..n-1 (it holds the barrier), then `total(slot)` in any thread.
 * Reusing the slots after reading totals needs a workgroupBarrier first.
 */
function partSums(slots: number, sub: boolean): string {
  if (sub) {
    return `var<workgroup> part: array<f32, ${64 * slots}>;
fn put(lid: u32, slot: u32, v: f32) { let s = subgroupAdd(v); if (sg_lane == 0u) { part[slot * 64u + sg_id] = s; } }
fn reduce_parts(lid: u32, n: u32) { workgroupBarrier(); }
fn total(slot: u32) -> f32 { var t = 0.0; for (var i = 0u; i < sg_count; i++) { t += part[slot * 64u + i]; } return t; }`;
  }
  return `var<workgroup> part: array<f32, ${64 * slots}>;
fn put(lid: u32, slot: u32, v: f32) { part[slot * 64u + lid] = v; }
fn reduce_parts(lid: u32, n: u32) {
  workgroupBarrier();
  for (var h = 32u; h > 0u; h = h >> 1u) {
    if (lid < h) { for (var m = 0u; m < n; m++) { part[m * 64u + lid] += part[m * 64u + lid + h]; } }
    workgroupBarrier();
  }
}
fn total(slot: u32) -> f32 { return part[slot * 64u]; }`;
}

/** Opens `main` of a row attention kernel: one workgroup of `threads` per query row (b, t, h), the layout
 * of q, with the attention parameters, its kv head and its number of visible keys (`sg`: subgroup
 * builtins; `D`: the head dims compiled in, else read from the parameters; `split`: one workgroup per
 * job = (row, block), with parameter 6 the blocks per row). */
const attnRowMain = (threads = 64, sg = sgParts(false), D?: number, split = false) => `@compute @workgroup_size(${threads}) fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lv: vec3<u32>${sg.args}) {
  ${sg.init}
  ${split ? `let job = wid.x + wid.y * u(1u);
  if (job >= u(0u)) { return; }
  let row = job / u(6u); let blk = job % u(6u);` : `let row = wid.x + wid.y * u(1u);
  if (row >= u(0u)) { return; }`}
  let lid = lv.x;
  let T = u(2u); let H = u(3u); let K = u(4u); let S = u(5u); ${D === undefined ? 'let D = u(6u);' : `const D = ${D}u;`} let scale = f(7u);
  let h = row % H; let t = (row / H) % T; let bb = row / (H * T);
  let kh = h / (H / K);
  let visible = u(8u + bb) + t + 1u;`;

export const WGSL_KERNELS: { [O in OpName]: WgslKernel<O> } = {
  matmul: {
    dtypes: (i) => (i === 0 ? ['f32'] : ['f32', 'f16', 'bf16']),
    plan(ins, { transB, transA = false }, outShape, env) {
      const [A, B] = ins;
      const M = outShape[outShape.length - 2], K = A.shape[A.shape.length - (transA ? 2 : 1)], N = last(outShape);
      const batches = numel(outShape) / (M * N);
      const bBatches = numel(B.shape) / (K * N);
      const bt = held(B.dtype, env);
      // NOTE: with shared weights (bBatches = 1) batch rows fold into M, so decode of a batch is one GEMV.
      // A transposed a (..., K, M) has no such fold: its rows of one batch are not contiguous with the next's.
      const fold = bBatches === 1 && !transA;
      const Mf = fold ? batches * M : M;
      const nb = fold ? 1 : batches;
      if (Mf <= 8 && transB && !transA) return gemvT(Mf, N, K, nb, bBatches, bt, env);
      const vec4Rows = (transA ? Mf % 4 === 0 : K % 4 === 0) && (transB ? K % 4 === 0 : N % 4 === 0);
      // 16-bit weights take the big tile as (N, K) rows of 8 packed halves per load (prefill, weights stored transposed).
      const big = bt === 'f32' ? vec4Rows : transB && K % 8 === 0 && (transA ? Mf % 4 === 0 : true);
      if (env.matmulTile === 128 && big) return bigTileMatmul(Mf, N, K, nb, bBatches, transB, transA, bt, env.matmulStages === 2 && env.maxWorkgroupStorage >= 32768 ? 2 : 1);
      return tiledMatmul(Mf, N, K, nb, bBatches, transB, transA, bt);
    },
  },
  add: binary('add', 'x + y'),
  sub: binary('sub', 'x - y'),
  mul: binary('mul', 'x * y'),
  div: binary('div', 'x / y'),
  scale: { dtypes: () => ['f32'], plan: (ins, { s }) => elementwisePlan('scale', ins, 'x * f(2u)', '', s) },
  silu: unary('silu', ACT_WGSL.silu),
  relu: unary('relu', ACT_WGSL.relu),
  gelu_erf: unary('gelu_erf', ACT_WGSL.gelu_erf, ERF_WGSL),
  gelu_tanh: unary('gelu_tanh', ACT_WGSL.gelu_tanh),
  softmax: {
    dtypes: () => ['f32'],
    plan(ins, _a, _o, env) {
      const C = last(ins[0].shape);
      return rowKernel('softmax', ['f32'], numel(ins[0].shape) / C, C, [], `
  var m = ${NEG_INF};
  for (var c = lid; c < C; c += 256u) { m = max(m, a[base + c]); }
  m = reduce_max(lid, m);
  var z = 0.0;
  for (var c = lid; c < C; c += 256u) { z += exp(a[base + c] - m); }
  z = reduce_sum(lid, z);
  for (var c = lid; c < C; c += 256u) { o[base + c] = exp(a[base + c] - m) / z; }`, env);
    },
  },
  sum: {
    dtypes: () => ['f32'],
    plan(ins, _a, _o, env) {
      const C = last(ins[0].shape);
      return rowKernel('sum', ['f32'], numel(ins[0].shape) / C, C, [], `
  var s = 0.0;
  for (var c = lid; c < C; c += 256u) { s += a[base + c]; }
  s = reduce_sum(lid, s);
  if (lid == 0u) { o[row] = s; }`, env);
    },
  },
  max: {
    dtypes: () => ['f32'],
    plan(ins, _a, _o, env) {
      const C = last(ins[0].shape);
      return rowKernel('max', ['f32'], numel(ins[0].shape) / C, C, [], `
  var m = ${NEG_INF};
  for (var c = lid; c < C; c += 256u) { m = max(m, a[base + c]); }
  m = reduce_max(lid, m);
  if (lid == 0u) { o[row] = m; }`, env);
    },
  },
  layernorm: {
    dtypes: () => ['f32'],
    plan(ins, { eps }, _o, env) {
      const C = last(ins[0].shape);
      const bias = ins.length === 3;
      return rowKernel(`layernorm:${bias}`, bias ? ['f32', 'f32', 'f32'] : ['f32', 'f32'], numel(ins[0].shape) / C, C, [f(eps)], `
  var s = 0.0;
  for (var j = lid; j < C; j += 256u) { s += a[base + j]; }
  let mean = reduce_sum(lid, s) / f32(C);
  var v = 0.0;
  for (var j = lid; j < C; j += 256u) { let d = a[base + j] - mean; v += d * d; }
  let inv = inverseSqrt(reduce_sum(lid, v) / f32(C) + f(3u));
  for (var j = lid; j < C; j += 256u) { o[base + j] = (a[base + j] - mean) * inv * b[j]${bias ? ' + c[j]' : ''}; }`, env);
    },
  },
  rmsnorm: {
    dtypes: () => ['f32'],
    plan(ins, { eps }, _o, env) {
      const C = last(ins[0].shape);
      return rowKernel('rmsnorm', ['f32', 'f32'], numel(ins[0].shape) / C, C, [f(eps)], `
  var s = 0.0;
  for (var c = lid; c < C; c += 256u) { let x = a[base + c]; s += x * x; }
  let inv = inverseSqrt(reduce_sum(lid, s) / f32(C) + f(3u));
  for (var c = lid; c < C; c += 256u) { o[base + c] = b[c] * (a[base + c] * inv); }`, env);
    },
  },
  rope: {
    dtypes: () => ['f32'],
    plan(ins, { pos0, invFreq }) {
      const [B, T, H, D] = ins[0].shape;
      const R = invFreq.length;
      const n = B * T * H * D;
      const g = grid(n, 256);
      // params: n, nx, T, H, D, R, B, pos0[B] at 8.., invFreq[R] after
      return {
        key: 'rope', workgroups: g.workgroups, params: words(n, g.nx, T, H, D, R, B, 0, pos0, invFreq.map(f)),
        wgsl: () => `${header(['f32'], 'f32')}${SINCOS_WGSL}
@compute @workgroup_size(256) fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  ${IDX}
  if (i >= u(0u)) { return; }
  let T = u(2u); let H = u(3u); let D = u(4u); let R = u(5u); let B = u(6u);
  let d = i % D;
  let row = i / D; // (b, t, h)
  let t = (row / H) % T;
  let b = row / (H * T);
  let x = a[i];
  if (d >= 2u * R) { o[i] = x; return; }
  let j = select(d, d - R, d >= R);
  let pos = f32(u(8u + b) + t);
  let ang = f(8u + B + j) * pos;
  let sc = sincos_(ang);
  let cs = sc.y; let sn = sc.x;
  let base = i - d;
  if (d < R) { o[i] = x * cs - a[base + d + R] * sn; } else { o[i] = x * cs + a[base + d - R] * sn; }
}`,
      };
    },
  },
  gather_rows: {
    dtypes: (i) => (i === 0 ? ['f32', 'f16', 'bf16'] : ['i32']),
    plan(ins, _a, outShape, env) {
      const [N, C] = ins[0].shape;
      const n = numel(outShape);
      const g = grid(n, 256);
      const dt = held(ins[0].dtype, env);
      return {
        key: `gather_rows:${dt}`, workgroups: g.workgroups, params: words(n, g.nx, C, N),
        wgsl: () => `${header([storageType(dt), 'i32'], 'f32')}${loader('ld', 'a', dt)}
@compute @workgroup_size(256) fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  ${IDX}
  if (i >= u(0u)) { return; }
  let C = u(2u);
  let r = u32(clamp(b[i / C], 0, i32(u(3u)) - 1));
  o[i] = ld(r * C + i % C);
}`,
      };
    },
  },
  index_add_rows: {
    dtypes: (i) => (i === 2 ? ['i32'] : ['f32']),
    plan(ins) {
      const [N, C] = ins[0].shape;
      const M = ins[1].shape[0];
      // A thread owns one column of a chunk of destination rows: it copies them, then walks the M source
      // indices in order and adds the rows that land in its chunk, so repeated indices add up in index
      // order without atomics. Chunks spread the work (an embedding gradient has 50k rows but few columns).
      const colGroups = Math.ceil(C / 64);
      const chunks = Math.max(1, Math.min(N, MAX_WG, Math.ceil(65536 / (colGroups * 64))));
      const rows = Math.ceil(N / chunks);
      return {
        key: 'index_add_rows', workgroups: [colGroups, Math.ceil(N / rows)], params: words(C, rows, N, M),
        wgsl: () => `${header(['f32', 'f32', 'i32'], 'f32', ['a', 'b', 'c'])}
@compute @workgroup_size(64) fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lv: vec3<u32>) {
  let C = u(0u); let R = u(1u); let N = u(2u);
  let col = wid.x * 64u + lv.x;
  let r0 = wid.y * R; let r1 = min(r0 + R, N);
  if (col >= C) { return; }
  for (var r = r0; r < r1; r++) { o[r * C + col] = a[r * C + col]; }
  for (var i = 0u; i < u(3u); i++) {
    let r = u32(c[i]);
    if (r >= r0 && r < r1) { o[r * C + col] += b[i * C + col]; }
  }
}`,
      };
    },
  },
  topk: {
    dtypes: () => ['f32'],
    plan(ins, { k }, _o, env) {
      const E = last(ins[0].shape);
      const rows = numel(ins[0].shape) / E;
      if (k === 1) return argmaxPlan(rows, E, env.subgroups);
      const g = grid(rows, 64);
      // The j-th pick is the largest element after the (j-1)-th in the order (value desc, index asc).
      return {
        key: 'topk', outDtype: 'i32', workgroups: g.workgroups, params: words(rows, g.nx, E, k),
        wgsl: () => `${header(['f32'], 'i32')}
@compute @workgroup_size(64) fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  let r = gid.x + gid.y * u(1u) * 64u;
  if (r >= u(0u)) { return; }
  let E = u(2u);
  var pv = 3.4e38; var pi = -1;
  for (var j = 0u; j < u(3u); j++) {
    var bv = ${NEG_INF}; var bi = -1;
    for (var e = 0u; e < E; e++) {
      let v = a[r * E + e];
      let after = v < pv || (v == pv && i32(e) > pi);
      if (after && (bi < 0 || v > bv)) { bv = v; bi = i32(e); }
    }
    o[r * u(3u) + j] = bi; pv = bv; pi = bi;
  }
}`,
      };
    },
  },
  sample: {
    dtypes: () => ['f32'],
    plan: (ins, attrs, _o, env) => samplePlan(ins[0].shape[0], ins[0].shape[1], attrs, env.subgroups),
  },
  accept_draft: {
    dtypes: (i) => (i === 2 ? ['i32'] : ['f32']),
    plan: (ins, attrs, _o, env) => acceptDraftPlan(ins[0].shape[0], ins[0].shape[1], attrs, env.subgroups),
  },
  gather: {
    dtypes: (i) => (i === 1 ? ['i32'] : ['f32']),
    plan(ins, _a, outShape) {
      const E = last(ins[0].shape), k = last(ins[1].shape);
      const n = numel(outShape);
      const g = grid(n, 256);
      return {
        key: 'gather', workgroups: g.workgroups, params: words(n, g.nx, E, k),
        wgsl: () => `${header(['f32', 'i32'], 'f32')}
@compute @workgroup_size(256) fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  ${IDX}
  if (i >= u(0u)) { return; }
  let r = i / u(3u);
  o[i] = a[r * u(2u) + u32(b[i])];
}`,
      };
    },
  },
  kv_write: {
    dtypes: () => ['f32'],
    plan(ins, { pos0 }) {
      const [B, K, S, D] = ins[0].shape;
      const T = ins[1].shape[1];
      const n = B * T * K * D;
      const g = grid(n, 256);
      return {
        key: 'kv_write', inPlace: true, workgroups: g.workgroups, params: words(n, g.nx, T, K, S, D, 0, 0, pos0),
        wgsl: () => `${header(['f32', 'f32'], undefined)}
@compute @workgroup_size(256) fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  ${IDX}
  if (i >= u(0u)) { return; }
  let T = u(2u); let K = u(3u); let S = u(4u); let D = u(5u);
  let d = i % D; let h = (i / D) % K; let t = (i / (D * K)) % T; let bb = i / (D * K * T);
  a[((bb * K + h) * S + u(8u + bb) + t) * D + d] = b[i];
}`,
      };
    },
  },
  attention: {
    dtypes: () => ['f32'],
    plan(ins, { pos0, scale }, _out, env) {
      const [B, T, H, D] = ins[0].shape;
      const [, K, S] = ins[1].shape;
      const BT = T >= 16 ? tileEdge('out', D, env) : undefined;
      if (BT) return tiledAttention('out', BT, B, T, H, K, S, D, scale, pos0);
      if (D > 256) throw new ShapeError('attention', `head dim ${D} > 256 is not supported on WebGPU`);
      const blocks = Math.ceil((Math.max(...pos0) + T) / 256);
      const split = env.attentionSplit > 0 && blocks >= env.attentionSplit;
      return rowAttention(B * T * H, T, H, K, S, D, scale, pos0, env.subgroups, split ? blocks : 1);
    },
  },
  attention_probs: {
    dtypes: () => ['f32'],
    plan(ins, { pos0, scale }) {
      const [B, T, H, D] = ins[0].shape;
      const [, K, S] = ins[1].shape;
      const rows = B * H * T;
      const g = grid(rows, 64);
      return {
        key: 'attention_probs', workgroups: g.workgroups, params: words(rows, g.nx, T, H, K, S, D, f(scale), pos0),
        wgsl: () => `${header(['f32', 'f32'], 'f32')}
@compute @workgroup_size(64) fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  let row = gid.x + gid.y * u(1u) * 64u; // (b, h, t)
  if (row >= u(0u)) { return; }
  let T = u(2u); let H = u(3u); let K = u(4u); let S = u(5u); let D = u(6u); let scale = f(7u);
  let t = row % T; let h = (row / T) % H; let bb = row / (T * H);
  let kh = h / (H / K);
  let visible = u(8u + bb) + t + 1u;
  let qo = ((bb * T + t) * H + h) * D;
  let kvBase = (bb * K + kh) * S * D;
  var m = ${NEG_INF};
  for (var s = 0u; s < visible; s++) {
    var dot = 0.0;
    for (var d = 0u; d < D; d++) { dot += a[qo + d] * b[kvBase + s * D + d]; }
    m = max(m, dot * scale);
  }
  var z = 0.0;
  for (var s = 0u; s < visible; s++) {
    var dot = 0.0;
    for (var d = 0u; d < D; d++) { dot += a[qo + d] * b[kvBase + s * D + d]; }
    z += exp(dot * scale - m);
  }
  for (var s = 0u; s < S; s++) {
    var pr = 0.0;
    if (s < visible) {
      var dot = 0.0;
      for (var d = 0u; d < D; d++) { dot += a[qo + d] * b[kvBase + s * D + d]; }
      pr = exp(dot * scale - m) / z;
    }
    o[row * S + s] = pr;
  }
}`,
      };
    },
  },
  // ---- Ops that autograd and training need. ----
  permute: {
    dtypes: () => ['f32'],
    plan(ins, { perm }, outShape) {
      const R = outShape.length;
      if (R > MAX_RANK) throw new ShapeError('permute', `${R} axes (at most ${MAX_RANK} on WebGPU)`);
      const inSt = stridesOf(ins[0].shape);
      const n = numel(outShape);
      const g = grid(n, 256);
      // params: n, nx, R, _, out dims at 4.., the input stride of each out axis at 4 + MAX_RANK..
      return {
        key: 'permute', workgroups: g.workgroups, params: words(n, g.nx, R, 0, padTo(outShape, 1), padTo(perm.map((p) => inSt[p]), 0)),
        wgsl: () => `${header(['f32'], 'f32')}
@compute @workgroup_size(256) fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  ${IDX}
  if (i >= u(0u)) { return; }
  var rem = i; var src = 0u;
  for (var d = i32(u(2u)) - 1; d >= 0; d--) {
    let dim = u(4u + u32(d));
    src += (rem % dim) * u(${4 + MAX_RANK}u + u32(d)); rem = rem / dim;
  }
  o[i] = a[src];
}`,
      };
    },
  },
  sum_to: {
    dtypes: () => ['f32'],
    plan(ins, { shape }) {
      const X = ins[0].shape;
      const R = X.length;
      const xs = stridesOf(X);
      const target = [...new Array(R - shape.length).fill(1), ...shape];
      // Kept axes index the output; reduced axes (target 1, input > 1) are walked by each thread.
      // Adjacent reduced axes that are contiguous in x merge into one, so a sum over leading axes is one loop.
      const keep: { dim: number; st: number }[] = [], red: { dim: number; st: number }[] = [];
      for (let d = 0; d < R; d++) {
        if (X[d] === 1) continue;
        if (target[d] !== 1) { keep.push({ dim: X[d], st: xs[d] }); continue; }
        const prev = red[red.length - 1];
        if (prev && prev.st === X[d] * xs[d]) { prev.dim *= X[d]; prev.st = xs[d]; }
        else red.push({ dim: X[d], st: xs[d] });
      }
      if (keep.length > MAX_RANK || red.length > MAX_RANK) throw new ShapeError('sum_to', `${R} axes of [${X.join(', ')}] (at most ${MAX_RANK} kept and ${MAX_RANK} summed axes on WebGPU)`);
      const n = numel(shape);
      const total = numel(red.map((r) => r.dim));
      // NOTE: few outputs over long sums (a bias gradient, a squared norm to []) would leave the GPU idle
      // with one thread per output, so those get one 256-thread workgroup per output and a tree reduction.
      const wide = total >= 256 && n <= 16384;
      const g = wide ? grid(n * 256, 256) : grid(n, 256);
      // params: n, nx, kept, summed, count, _, _, _, kept dims/strides at 8.., summed dims/strides after
      const K0 = 8, R0 = 8 + 2 * MAX_RANK;
      const walk = (j: string) => `var r = ${j}; var off = base;
    for (var d = nr - 1; d >= 0; d--) {
      let dim = u(${R0}u + u32(d));
      off += (r % dim) * u(${R0 + MAX_RANK}u + u32(d)); r = r / dim;
    }
    s += a[off];`;
      return {
        key: `sum_to:${wide}`, workgroups: g.workgroups,
        params: words(n, g.nx, keep.length, red.length, total, 0, 0, 0, padTo(keep.map((k) => k.dim), 1), padTo(keep.map((k) => k.st), 0),
          padTo(red.map((r) => r.dim), 1), padTo(red.map((r) => r.st), 0)),
        wgsl: () => `${header(['f32'], 'f32')}
${wide ? 'var<workgroup> red: array<f32, 256>;' : ''}
@compute @workgroup_size(256) fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lv: vec3<u32>) {
  ${wide ? 'let i = wid.x + wid.y * u(1u); let lid = lv.x;' : IDX}
  if (i >= u(0u)) { return; }
  var rem = i; var base = 0u;
  for (var d = i32(u(2u)) - 1; d >= 0; d--) {
    let dim = u(${K0}u + u32(d));
    base += (rem % dim) * u(${K0 + MAX_RANK}u + u32(d)); rem = rem / dim;
  }
  let nr = i32(u(3u));
  var s = 0.0;
  for (var j = ${wide ? 'lid' : '0u'}; j < u(4u); j += ${wide ? '256u' : '1u'}) {
    ${walk('j')}
  }
  ${wide ? `red[lid] = s; workgroupBarrier();
  for (var st = 128u; st > 0u; st = st >> 1u) { if (lid < st) { red[lid] += red[lid + st]; } workgroupBarrier(); }
  if (lid == 0u) { o[i] = red[0]; }` : 'o[i] = s;'}
}`,
      };
    },
  },
  slice: {
    dtypes: () => ['f32'],
    plan(ins, { axis, start, end }, outShape) {
      const X = ins[0].shape;
      const inner = numel(X.slice(axis + 1)), n = numel(outShape);
      const g = grid(n, 256);
      return {
        key: 'slice', workgroups: g.workgroups, params: words(n, g.nx, inner, end - start, X[axis], start),
        wgsl: () => `${header(['f32'], 'f32')}
@compute @workgroup_size(256) fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  ${IDX}
  if (i >= u(0u)) { return; }
  let inner = u(2u); let m = u(3u);
  let k = i % inner; let j = (i / inner) % m; let outer = i / (inner * m);
  o[i] = a[(outer * u(4u) + u(5u) + j) * inner + k];
}`,
      };
    },
  },
  concat: {
    // Copies 32-bit words, so f32 and i32 share one kernel.
    dtypes: () => ['f32', 'i32'],
    plan(ins, { axis }, outShape) {
      if (ins[0].dtype !== ins[1].dtype) throw new ShapeError('concat', `inputs are ${ins[0].dtype} and ${ins[1].dtype}; expected one dtype`);
      const inner = numel(outShape.slice(axis + 1)), n = numel(outShape);
      const g = grid(n, 256);
      return {
        key: 'concat', outDtype: ins[0].dtype, workgroups: g.workgroups, params: words(n, g.nx, inner, ins[0].shape[axis], ins[1].shape[axis]),
        wgsl: () => `${header(['u32', 'u32'], 'u32')}
@compute @workgroup_size(256) fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  ${IDX}
  if (i >= u(0u)) { return; }
  let inner = u(2u); let na = u(3u); let nb = u(4u);
  let k = i % inner; let j = (i / inner) % (na + nb); let outer = i / (inner * (na + nb));
  if (j < na) { o[i] = a[(outer * na + j) * inner + k]; } else { o[i] = b[(outer * nb + j - na) * inner + k]; }
}`,
      };
    },
  },
  pad: {
    dtypes: () => ['f32'],
    plan(ins, { axis, before }, outShape) {
      const X = ins[0].shape;
      const inner = numel(X.slice(axis + 1)), n = numel(outShape);
      const g = grid(n, 256);
      return {
        key: 'pad', workgroups: g.workgroups, params: words(n, g.nx, inner, outShape[axis], X[axis], before),
        wgsl: () => `${header(['f32'], 'f32')}
@compute @workgroup_size(256) fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  ${IDX}
  if (i >= u(0u)) { return; }
  let inner = u(2u); let m = u(3u); let len = u(4u); let before = u(5u);
  let k = i % inner; let j = (i / inner) % m; let outer = i / (inner * m);
  if (j < before || j >= before + len) { o[i] = 0.0; return; }
  o[i] = a[(outer * len + j - before) * inner + k];
}`,
      };
    },
  },
  act_grad: {
    dtypes: () => ['f32'],
    plan(ins, { fn }) {
      const n = numel(ins[0].shape);
      const g = grid(n, 256);
      const deriv: Record<typeof fn, string> = {
        silu: 'let s = 1.0 / (1.0 + exp(-x)); return s * (1.0 + x * (1.0 - s));',
        relu: 'return select(0.0, 1.0, x > 0.0);',
        gelu_erf: 'return 0.5 * (1.0 + erf_(x * 0.70710678118654752)) + x * 0.3989422804014327 * exp(-0.5 * x * x);',
        // NOTE: tanh is clamped as in the forward kernel (some drivers overflow exp inside tanh).
        gelu_tanh: `let th = tanh(clamp(0.7978845608028654 * (x + 0.044715 * x * x * x), -15.0, 15.0));
  return 0.5 * (1.0 + th) + 0.5 * x * (1.0 - th * th) * 0.7978845608028654 * (1.0 + 3.0 * 0.044715 * x * x);`,
      };
      return {
        key: `act_grad:${fn}`, workgroups: g.workgroups, params: words(n, g.nx),
        wgsl: () => `${header(['f32', 'f32'], 'f32')}${fn === 'gelu_erf' ? ERF_WGSL : ''}
fn deriv(x: f32) -> f32 {
  ${deriv[fn]}
}
@compute @workgroup_size(256) fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  ${IDX}
  if (i >= u(0u)) { return; }
  o[i] = b[i] * deriv(a[i]);
}`,
      };
    },
  },
  norm_grad: {
    dtypes: () => ['f32'],
    plan(ins, { kind, eps }, _o, env) {
      const C = last(ins[0].shape);
      const ln = kind === 'layernorm';
      // With x̂ = (x − mean)·rstd and ĝ = g·w: dx = rstd·(ĝ − mean(ĝ) − x̂·mean(ĝ·x̂)); rmsnorm has no mean terms.
      return rowKernel(`norm_grad:${kind}`, ['f32', 'f32', 'f32'], numel(ins[0].shape) / C, C, [f(eps)], `
  var mean = 0.0;
  ${ln ? `var s = 0.0;
  for (var j = lid; j < C; j += 256u) { s += a[base + j]; }
  mean = reduce_sum(lid, s) / f32(C);` : ''}
  var v = 0.0;
  for (var j = lid; j < C; j += 256u) { let d = a[base + j] - mean; v += d * d; }
  let rstd = inverseSqrt(reduce_sum(lid, v) / f32(C) + f(3u));
  var mg = 0.0; var mgx = 0.0;
  for (var j = lid; j < C; j += 256u) { let gh = c[base + j] * b[j]; mg += gh; mgx += gh * (a[base + j] - mean) * rstd; }
  ${ln ? 'mg = reduce_sum(lid, mg) / f32(C);' : 'mg = 0.0;'}
  mgx = reduce_sum(lid, mgx) / f32(C);
  for (var j = lid; j < C; j += 256u) {
    let gh = c[base + j] * b[j]; let xh = (a[base + j] - mean) * rstd;
    o[base + j] = rstd * (gh - mg - xh * mgx);
  }`, env);
    },
  },
  attention_grad: {
    dtypes: () => ['f32'],
    plan(ins, { pos0, scale, wrt }, _out, env) {
      const [B, T, H, D] = ins[0].shape;
      const [, K, S] = ins[1].shape;
      // With the rows' statistics (attention_stats) the gradient is tiled; without, or where the tiles do
      // not fit the device, one workgroup per query row (q) or per (b, kv head) (k, v) recomputes them.
      const mode = `d${wrt}` as const;
      const BT = ins.length === 5 ? tileEdge(mode, D, env) : undefined;
      if (BT) return tiledAttention(mode, BT, B, T, H, K, S, D, scale, pos0);
      if (D > 256) throw new ShapeError('attention_grad', `head dim ${D} > 256 is not supported on WebGPU`);
      return wrt === 'q' ? attentionGradQ(B, T, H, K, S, D, scale, pos0, ins.length) : attentionGradKV(B, T, H, K, S, D, scale, pos0, wrt, ins.length);
    },
  },
  attention_stats: {
    dtypes: () => ['f32'],
    plan(ins, { pos0, scale }, _out, env) {
      const [B, T, H, D] = ins[0].shape;
      const [, K, S] = ins[1].shape;
      const BT = tileEdge('stats', D, env);
      if (BT) return tiledAttention('stats', BT, B, T, H, K, S, D, scale, pos0);
      if (D > 256) throw new ShapeError('attention_stats', `head dim ${D} > 256 is not supported on WebGPU`);
      return attentionStatsRows(B, T, H, K, S, D, scale, pos0);
    },
  },
  kv_read: {
    dtypes: () => ['f32'],
    plan(ins, { pos0, T }) {
      const [B, K, S, D] = ins[0].shape;
      const n = B * T * K * D;
      const g = grid(n, 256);
      return {
        key: 'kv_read', workgroups: g.workgroups, params: words(n, g.nx, T, K, S, D, 0, 0, pos0),
        wgsl: () => `${header(['f32'], 'f32')}
@compute @workgroup_size(256) fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  ${IDX}
  if (i >= u(0u)) { return; }
  let T = u(2u); let K = u(3u); let S = u(4u); let D = u(5u);
  let d = i % D; let h = (i / D) % K; let t = (i / (D * K)) % T; let bb = i / (D * K * T);
  o[i] = a[((bb * K + h) * S + u(8u + bb) + t) * D + d];
}`,
      };
    },
  },
  scatter_add: {
    dtypes: (i) => (i === 1 ? ['i32'] : ['f32']),
    plan(ins, { size }, outShape) {
      const k = last(ins[1].shape);
      const n = numel(outShape);
      const g = grid(n, 256);
      // One thread per output element scans its row's k indices (k is small: the top-k of a router).
      return {
        key: 'scatter_add', workgroups: g.workgroups, params: words(n, g.nx, size, k),
        wgsl: () => `${header(['f32', 'i32'], 'f32')}
@compute @workgroup_size(256) fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  ${IDX}
  if (i >= u(0u)) { return; }
  let size = u(2u); let k = u(3u);
  let e = i32(i % size); let r = i / size;
  var s = 0.0;
  for (var j = 0u; j < k; j++) { if (b[r * k + j] == e) { s += a[r * k + j]; } }
  o[i] = s;
}`,
      };
    },
  },
  cross_entropy: {
    dtypes: (i) => (i === 1 ? ['i32'] : ['f32']),
    plan(ins, _a, _o, env) {
      const [N, V] = ins[0].shape;
      return rowKernel('cross_entropy', ['f32', 'i32'], N, V, [], `
  let y = b[row];
  var m = ${NEG_INF};
  for (var j = lid; j < C; j += 256u) { m = max(m, a[base + j]); }
  m = reduce_max(lid, m);
  var z = 0.0;
  for (var j = lid; j < C; j += 256u) { z += exp(a[base + j] - m); }
  z = reduce_sum(lid, z);
  if (lid == 0u) { o[row] = select(m + log(z) - a[base + u32(max(y, 0))], 0.0, y < 0); }`, env);
    },
  },
  cross_entropy_grad: {
    dtypes: (i) => (i === 1 ? ['i32'] : ['f32']),
    plan(ins, _a, _o, env) {
      const [N, V] = ins[0].shape;
      return rowKernel('cross_entropy_grad', ['f32', 'i32', 'f32'], N, V, [], `
  let y = b[row];
  let gr = select(c[row], 0.0, y < 0);
  var m = ${NEG_INF};
  for (var j = lid; j < C; j += 256u) { m = max(m, a[base + j]); }
  m = reduce_max(lid, m);
  var z = 0.0;
  for (var j = lid; j < C; j += 256u) { z += exp(a[base + j] - m); }
  z = reduce_sum(lid, z);
  for (var j = lid; j < C; j += 256u) { o[base + j] = (exp(a[base + j] - m) / z - select(0.0, 1.0, i32(j) == y)) * gr; }`, env);
    },
  },
  adam_moments: {
    dtypes: () => ['f32'],
    plan(ins, { beta1, beta2, gradScale }) {
      const n = numel(ins[1].shape);
      const g = grid(n, 256);
      return {
        key: 'adam_moments', inPlace: true, workgroups: g.workgroups, params: words(n, g.nx, f(beta1), f(1 - beta1), f(beta2), f(1 - beta2), f(gradScale)),
        wgsl: () => `${header(['f32', 'f32'], undefined)}
@compute @workgroup_size(256) fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  ${IDX}
  let n = u(0u);
  if (i >= n) { return; }
  let gi = b[i] * f(6u);
  a[i] = f(2u) * a[i] + f(3u) * gi;
  a[n + i] = f(4u) * a[n + i] + f(5u) * gi * gi;
}`,
      };
    },
  },
  adam_apply: {
    dtypes: () => ['f32'],
    plan(ins, { lr, eps, weightDecay, bc1, bc2 }) {
      const n = numel(ins[0].shape);
      const g = grid(n, 256);
      return {
        key: 'adam_apply', inPlace: true, workgroups: g.workgroups,
        params: words(n, g.nx, f(1 - lr * weightDecay), f(lr / bc1), f(Math.sqrt(bc2)), f(eps)),
        wgsl: () => `${header(['f32', 'f32'], undefined)}
@compute @workgroup_size(256) fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  ${IDX}
  let n = u(0u);
  if (i >= n) { return; }
  let decayed = a[i] * f(2u);
  a[i] = decayed - f(3u) * b[i] / (sqrt(b[n + i]) / f(4u) + f(5u));
}`,
      };
    },
  },
  fused_linear: {
    dtypes: (i) => (i >= 1 && i <= 4 ? ['f32', 'f16', 'bf16'] : ['f32']), // w, and wUp at 2..4; plan checks which
    plan: (ins, a, _o, env) => fusedLinearPlan(ins, { kind: 'linear', a }, env),
  },
  fused_kv_write: {
    dtypes: (i) => (i >= 2 && i <= 5 ? ['f32', 'f16', 'bf16'] : ['f32']), // w, and wUp at 3..5; plan checks which
    plan: (ins, { linear, pos0 }, _o, env) => fusedLinearPlan(ins, { kind: 'kv', a: linear, pos0 }, env),
  },
  fused_qkv: {
    dtypes: (i) => (i >= 3 && i <= 5 ? ['f32', 'f16', 'bf16'] : ['f32']), // wq, wk, wv; plan checks they agree
    plan: (ins, a, _o, env) => fusedLinearPlan(ins, { kind: 'qkv', a }, env),
  },
};

/** WGSL that widens the 8 halves of `src` (a vec16 of bt) into two vec4<f32>, `lo` and `hi`. */
function widen8(bt: Held, src: string, lo: string, hi: string): string {
  if (bt === 'f16n') return `let ${lo} = vec4<f32>(${src}[0]); let ${hi} = vec4<f32>(${src}[1]);`;
  if (bt === 'f16') return `let ${lo}a = unpack2x16float(${src}.x); let ${lo}b = unpack2x16float(${src}.y); let ${hi}a = unpack2x16float(${src}.z); let ${hi}b = unpack2x16float(${src}.w);
      let ${lo} = vec4<f32>(${lo}a, ${lo}b); let ${hi} = vec4<f32>(${hi}a, ${hi}b);`;
  const pair = (c: string) => `bitcast<f32>(${src}.${c} << 16u), bitcast<f32>(${src}.${c} & 0xffff0000u)`;
  return `let ${lo} = vec4<f32>(${pair('x')}, ${pair('y')}); let ${hi} = vec4<f32>(${pair('z')}, ${pair('w')});`;
}

/**
 * WGSL loop of a 64-thread workgroup over indices v = lid, lid + 64, … below `count` (a compile-time
 * number): where count is a multiple of 64 every thread takes the same constant number of steps, which
 * lets the compiler unroll the loop and issue its loads together.
 */
function strided64(count: number, v: string, body: string): string {
  return count % 64 === 0
    ? `for (var i_${v} = 0u; i_${v} < ${count / 64}u; i_${v}++) { let ${v} = lid + 64u * i_${v};\n${body}\n    }`
    : `for (var ${v} = lid; ${v} < ${count}u; ${v} += 64u) {\n${body}\n    }`;
}

/** Most per-slot sums a GEMV-style workgroup reduces at once (partSums: 64 floats of workgroup memory each). */
const MAX_SLOTS = 40;

/**
 * Jobs per workgroup of a GEMV-style kernel: `want` (KernelEnv.gemvColumns, a power of two), halved
 * until the jobs' sums (`slots` each, plus `extra`) fit MAX_SLOTS and it divides every job count whose
 * bits are or-ed into `whole` (0: no such counts; a power of two divides each count iff it divides the or).
 */
function gemvColumns(want: number, slots: number, extra: number, whole: number): number {
  let c = want;
  while (c > 1 && (c * slots + extra > MAX_SLOTS || (whole & (c - 1)) !== 0)) c /= 2;
  return c;
}

/**
 * Matrix-vector product for M <= 8 rows against weights stored (N, K) (transB): a workgroup of 64
 * threads computes C output columns (KernelEnv.gemvColumns), reading each of their weight rows once
 * with vec4 loads (8 halves per load when packed) and each row of a once for all C. M and C are
 * compile-time constants so the accumulators stay in registers.
 */
function gemvT(M: number, N: number, K: number, batches: number, bBatches: number, bt: Held, env: KernelEnv): KernelPlan {
  const sub = env.subgroups;
  const vec = is16(bt) ? K % 8 === 0 : K % 4 === 0;
  const WG = 64;
  const C = gemvColumns(env.gemvColumns, M, 0, 0);
  const NW = Math.ceil(N / C);
  const g = grid(NW * batches * WG, WG);
  const sg = sgParts(sub);
  // The walk over K (built with the shader source, not per dispatch): job c reads weight row bo{c}
  // (past the last column the last one again, whose sums are not stored).
  const inner = () => {
    const cs = Array.from({ length: C }, (_, c) => c);
    return !vec
      ? strided64(K, 'k', `${cs.map((c) => `let w${c} = ldb(bo${c} + k);`).join(' ')}
      for (var m = 0u; m < ${M}u; m++) { let x = a[ao + m * K + k]; ${cs.map((c) => `acc[${c * M}u + m] += x * w${c};`).join(' ')} }`)
      : is16(bt)
        ? strided64(K / 8, 'k8', `      ${cs.map((c) => `let w${c} = b[bo${c} / 8u + k8]; ${widen8(bt, `w${c}`, `w${c}_0`, `w${c}_1`)}`).join('\n      ')}
      for (var m = 0u; m < ${M}u; m++) {
        let ab = (ao + m * K) / 4u + 2u * k8; let x0 = av[ab]; let x1 = av[ab + 1u];
        ${cs.map((c) => `acc[${c * M}u + m] += dot(x0, w${c}_0) + dot(x1, w${c}_1);`).join(' ')}
      }`)
        : strided64(K / 4, 'k4', `      ${cs.map((c) => `let w${c} = b[bo${c} / 4u + k4];`).join(' ')}
      for (var m = 0u; m < ${M}u; m++) { let x = av[(ao + m * K) / 4u + k4]; ${cs.map((c) => `acc[${c * M}u + m] += dot(x, w${c});`).join(' ')} }`);
  };
  return {
    key: `gemvT:${bt}:${vec}:${M}:${C}:${K}`, workgroups: g.workgroups, params: words(NW * batches, g.nx, M, N, K, bBatches),
    wgsl: () => `${sg.enable}${PARAMS_WGSL}
@group(0) @binding(1) var<storage, read> ${vec ? 'av: array<vec4<f32>>' : 'a: array<f32>'};
@group(0) @binding(2) var<storage, read> b: array<${vec ? (is16(bt) ? vec16(bt) : 'vec4<f32>') : storageType(bt)}>;
@group(0) @binding(3) var<storage, read_write> o: array<f32>;
${vec ? '' : loader('ldb', 'b', bt)}
${sg.vars}${partSums(M * C, sub)}
@compute @workgroup_size(${WG}) fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lv: vec3<u32>${sg.args}) {
  ${sg.init}
  let job = wid.x + wid.y * u(1u);
  if (job >= u(0u)) { return; }
  let lid = lv.x;
  let N = u(3u); const K = ${K}u;
  let NW = (N + ${C - 1}u) / ${C}u;
  let n0 = (job % NW) * ${C}u; let batch = job / NW;
  let ao = batch * ${M}u * K;
  ${Array.from({ length: C }, (_, c) => `let bo${c} = ((batch % u(5u)) * N + min(n0 + ${c}u, N - 1u)) * K;`).join(' ')}
  var acc: array<f32, ${M * C}>;
  ${inner()}
  for (var s = 0u; s < ${M * C}u; s++) { put(lid, s, acc[s]); }
  reduce_parts(lid, ${M * C}u);
  // Thread lid writes row lid % M of column n0 + lid / M (slot lid).
  let n = n0 + lid / ${M}u;
  if (lid < ${M * C}u && n < N) { o[(batch * ${M}u + lid % ${M}u) * N + n] = total(lid); }
}`,
  };
}

/**
 * Attention for a few query rows (decoding, T < 16): one 256-thread workgroup per query row (b, t, h)
 * walks the row's visible keys in blocks of 256. Each thread scores one key of the block (its key row in
 * vec4 loads where D % 4 == 0); the block's max and sum of exponentials update an online softmax. For
 * the weighted sum of values the workgroup splits into G groups of L lanes (L the head dims rounded up to
 * a power of two, at most 64): lane e of group g adds up dims e, e + L, … over the block's keys g, g + G,
 * …, eight keys per step with their loads issued together (indices past the block's last key are
 * clamped to it and weighted 0). The groups' partial sums are joined once, at the end. D is compiled in.
 *
 * With `parts` > 1 (long contexts, where a row's blocks would run one after another in one workgroup)
 * the blocks are split over workgroups: a first pass gives each (row, block) its own workgroup, which
 * writes the block's max, sum of exponentials and unnormalised output to a scratch buffer; the plan
 * itself then joins each row's blocks, rescaled to the row's max.
 */
function rowAttention(rows: number, T: number, H: number, K: number, S: number, D: number, scale: number, pos0: number[], sub: boolean, parts = 1): KernelPlan {
  const vec = D % 4 === 0;
  let L = 1;
  while (L < Math.min(D, 64)) L *= 2;
  const G = 256 / L, DQ = Math.ceil(D / L);
  const split = parts > 1;
  const g = grid(rows * parts * 256, 256);
  const sg = sgParts(sub);
  const score = vec
    ? `let k4 = (kvBase + s * D) / 4u; for (var d = 0u; d < ${D / 4}u; d++) { x += dot(qs[d], kv4[k4 + d]); }`
    : 'let ko = kvBase + s * D; for (var d = 0u; d < D; d++) { x += qs[d] * b[ko + d]; }';
  // One key of the unrolled step: its weight (0 past the block's last key) times its value row's dims.
  const lanes = (u: number) => {
    const dims = Array.from({ length: DQ }, (_, q) => {
      const add = `acc${q} += w${u} * c[vo${u} + e + ${q * L}u];`;
      return (q + 1) * L <= D ? add : `if (e + ${q * L}u < D) { ${add} }`;
    });
    return `let j${u} = j + ${u * G}u; let w${u} = select(0.0, ps[min(j${u}, last)], j${u} <= last); let vo${u} = kvBase + (s0 + min(j${u}, last)) * D;\n        ${dims.join(' ')}`;
  };
  const accs = Array.from({ length: DQ }, (_, q) => `acc${q}`);
  // The groups' sums of dim d: the output (divided by l), or with parts this block's row of the scratch
  // (m and l first, then D unnormalised sums).
  const joined = (q: number) => `var y = 0.0; for (var i = 0u; i < ${G}u; i++) { y += part[${q * 256}u + i * ${L}u + lid]; }`;
  const store = split ? `o[job * ${D + 2}u + 2u + d] = y;` : 'o[qo + d] = y / l;';
  const blocks = split
    ? `for (var s0 = blk * 256u; s0 < min(visible, blk * 256u + 256u); s0 += 256u)`
    : 'for (var s0 = 0u; s0 < visible; s0 += 256u)';
  const plan: KernelPlan = {
    key: `attention:${split ? 'part:' : ''}${vec ? 'vec4' : 'f32'}:${D}`, workgroups: g.workgroups, params: words(rows * parts, g.nx, T, H, K, S, parts, f(scale), pos0),
    wgsl: () => `${sg.enable}${header(['f32', vec ? 'vec4<f32>' : 'f32', 'f32'], 'f32', ['a', vec ? 'kv4' : 'b', 'c'])}
var<workgroup> qs: array<${vec ? `vec4<f32>, ${D / 4}` : `f32, ${D}`}>;
var<workgroup> ps: array<f32, 256>;
var<workgroup> part: array<f32, ${256 * DQ}>;
${sg.vars}${workgroupReduce(256, sub)}
${attnRowMain(256, sg, D, split)}
  let qo = row * D;
  if (lid < D) { qs[lid${vec ? ' / 4u][lid % 4u' : ''}] = a[qo + lid]; }
  workgroupBarrier();
  let kvBase = (bb * K + kh) * S * D;
  let gr = lid / ${L}u; let e = lid % ${L}u;
  var m = ${NEG_INF}; var l = 0.0;
  ${accs.map((a) => `var ${a} = 0.0;`).join(' ')}
  ${blocks} {
    let s = s0 + lid;
    var sc = ${NEG_INF};
    if (s < visible) {
      var x = 0.0;
      ${score}
      sc = x * scale;
    }
    let mNew = max(m, reduce256(lid, sc, true));
    let pe = select(0.0, exp(sc - mNew), s < visible);
    ps[lid] = pe;
    let corr = exp(m - mNew);
    l = l * corr + reduce256(lid, pe, false); // its barrier also publishes ps
    m = mNew;
    ${accs.map((a) => `${a} *= corr;`).join(' ')}
    let last = min(visible - s0, 256u) - 1u;
    for (var j = gr; j <= last; j += ${8 * G}u) {
      ${Array.from({ length: 8 }, (_, u) => lanes(u)).join('\n      ')}
    }
    workgroupBarrier();
  }
  ${accs.map((a, q) => `part[${q * 256}u + lid] = ${a};`).join(' ')}
  workgroupBarrier();
  ${split ? `if (lid == 0u) { o[job * ${D + 2}u] = m; o[job * ${D + 2}u + 1u] = l; }` : ''}
  if (lid < ${L}u) {
    ${accs.map((_, q) => `{ let d = lid + ${q * L}u; if (d < D) { ${joined(q)} ${store} } }`).join('\n    ')}
  }
}`,
  };
  if (!split) return plan;
  // The join: one 64-thread workgroup per row rescales its blocks' sums to the row's max.
  const jg = grid(rows * 64, 64);
  const W = D + 2;
  return {
    key: `attention:join:${D}`, workgroups: jg.workgroups, params: words(rows, jg.nx, parts),
    pre: { plan, bytes: 4 * rows * parts * W },
    wgsl: () => `${PARAMS_WGSL}
@group(0) @binding(4) var<storage, read> sp: array<f32>;
@group(0) @binding(5) var<storage, read_write> o: array<f32>;
@compute @workgroup_size(64) fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lv: vec3<u32>) {
  let row = wid.x + wid.y * u(1u);
  if (row >= u(0u)) { return; }
  let lid = lv.x; let P = u(2u);
  let base = row * P * ${W}u;
  var mx = ${NEG_INF};
  for (var p = 0u; p < P; p++) { mx = max(mx, sp[base + p * ${W}u]); }
  var l = 0.0;
  for (var p = 0u; p < P; p++) { l += exp(sp[base + p * ${W}u] - mx) * sp[base + p * ${W}u + 1u]; }
  for (var d = lid; d < ${D}u; d += 64u) {
    var y = 0.0;
    for (var p = 0u; p < P; p++) { y += exp(sp[base + p * ${W}u] - mx) * sp[base + p * ${W}u + 2u + d]; }
    o[row * ${D}u + d] = y / l;
  }
}`,
  };
}

/** What a fused GEMV dispatch computes: one linear, one linear into a KV cache, or q, k and v at once. */
type FusedMode =
  | { kind: 'linear'; a: OpAttrs['fused_linear'] }
  | { kind: 'kv'; a: OpAttrs['fused_linear']; pos0: number[] }
  | { kind: 'qkv'; a: OpAttrs['fused_qkv'] };

/** One projection of a fused dispatch: its weight and bias bindings, its rope, and where its rows go. */
interface FusedSeg {
  w: string;
  wu?: string;
  bias?: string;
  biasu?: string;
  rope: boolean;
  /** Its number of jobs, as a WGSL expression. */
  J: string;
  /** The array its rows go to, and whether that is a KV cache (rows at positions) or row-major (M, N). */
  dst: string;
  cache: boolean;
}

/**
 * `fused_linear`, `fused_kv_write` and `fused_qkv` as one GEMV-style dispatch: one 64-thread workgroup
 * per job and chunk of up to 8 rows. A job is one output column; with rope, a rotary pair of columns
 * (d, d + R) of one head (or one pass-through column d >= 2R); with glu, the gate and up rows of one
 * column. `fused_qkv` lays the jobs of q, k and v end to end, each workgroup taking one. The workgroup
 * walks K once, scaling x by the norm weights as it loads it (LayerNorm reduces its rows' mean and
 * variance first; RMSNorm sums x² in the same walk and scales the sums at the end), then applies bias,
 * activation / GLU, rope and the residual to the reduced sums. Weight loads are as in `gemvT` (vec4,
 * eight halves per load when packed).
 */
function fusedLinearPlan(all: KernelInput[], mode: FusedMode, env: KernelEnv): KernelPlan {
  const sub = env.subgroups;
  const { kind } = mode;
  const lin = kind === 'qkv' ? undefined : mode.a;
  const norm = mode.a.norm;
  const rope = mode.a.rope;
  const pos0 = kind === 'linear' ? (mode.a.rope?.pos0 ?? []) : kind === 'kv' ? mode.pos0 : mode.a.pos0;
  const ls = lin && fusedLinearSlots(lin);
  const base = kind === 'linear' ? 0 : kind === 'kv' ? 1 : 2; // index of x
  // NOTE: plans run for every dispatch of every token; the bindings and projections are worked out in wgsl(), once per variant.
  const wt = all[base + 1].dtype, bt = held(wt, env);
  const upAt = ls?.wUp === undefined ? -1 : ls.wUp + base;
  for (let i = 0; i < all.length; i++) {
    const weight = kind === 'qkv' ? i >= 3 && i <= 5 : i === base + 1 || i === upAt;
    if (weight ? all[i].dtype !== wt : all[i].dtype !== 'f32')
      throw new ShapeError(kind === 'qkv' ? 'fused_qkv' : 'fused_linear', `input ${i} is ${all[i].dtype}; expected ${weight ? `${wt} like the first weight` : 'f32'}`);
  }
  const x = all[base].shape;
  const K = last(x), M = numel(x) / K;
  const MC = Math.min(M, 8), chunks = Math.ceil(M / MC);
  const E = is16(bt) ? 8 : 4; // elements per weight load in the vector path
  const vec = K % E === 0;
  const cacheShape = kind === 'linear' ? undefined : all[0].shape;
  const D = rope?.headDim ?? (cacheShape ? last(cacheShape) : 1), R = rope?.invFreq.length ?? 0;
  const [, KH, S] = cacheShape ?? [0, 0, 0];
  const jobsOf = (N: number, rotated: boolean) => (rotated ? (N / D) * (D - R) : N);
  const N0 = all[base + 1].shape[0];
  const J0 = jobsOf(N0, !!rope), Jk = kind === 'qkv' ? jobsOf(KH * D, !!rope) : 0, Jv = kind === 'qkv' ? KH * D : 0;
  const J = J0 + Jk + Jv;
  // Two sums per job and row: a rotary pair, or GLU's gate and up rows. Σx² (RMSNorm) takes MC more slots.
  const two = !!rope || !!lin?.glu, slots = MC * (two ? 2 : 1);
  // q, k and v each in whole workgroups: every job of a workgroup takes the same branch.
  const C = gemvColumns(env.gemvColumns, slots, MC, kind === 'qkv' ? J0 | Jk | Jv : 0);
  const JW = Math.ceil(J / C);
  const g = grid(JW * chunks * 64, 64);
  const positioned = rope || kind !== 'linear'; // x is (B, T, K): rows have positions
  const B = positioned ? x[0] : 1, T = positioned ? x[1] : 1;
  const params = words(JW * chunks, g.nx, M, N0, K, J, T, f(norm?.eps ?? 0), f(norm?.scale ?? 1), R, D, B, S, KH,
    pos0, (rope?.invFreq ?? []).map(f));
  const key = `${kind}:${bt}:${vec}:${MC}:${C}:${K}:${norm ? norm.kind + norm.bias : '-'}:${mode.a.bias}:${lin?.act ?? '-'}:${!!lin?.glu}:${!!rope}:${!!lin?.residual}`;

  const wgsl = () => {
    // Bindings: [name, input index, weight?]. Caches are written in place (fused_kv_write's is bound as
    // `o`; fused_qkv's as kc and vc); every other input is read-only.
    const qs = kind === 'qkv' ? fusedQkvSlots(mode.a) : undefined;
    const slot = (i: number | undefined) => (i === undefined ? undefined : i + base);
    const bind: [name: string, input: number | undefined, weight: boolean][] = qs
      ? [['inp', qs.x, false], ['wq', qs.wq, true], ['wk', qs.wk, true], ['wv', qs.wv, true], ['nw', qs.normW, false], ['nb', qs.normB, false],
        ['bq', qs.bq, false], ['bk', qs.bk, false], ['bv', qs.bv, false]]
      : [['inp', base, false], ['w', base + 1, true], ['nw', slot(ls!.normW), false], ['nb', slot(ls!.normB), false], ['wu', slot(ls!.wUp), true],
        ['bias', slot(ls!.bias), false], ['biasu', slot(ls!.biasUp), false], ['res', slot(ls!.residual), false]];
    const present = bind.filter(([, i]) => i !== undefined) as [string, number, boolean][];
    const Jexpr = (N: string, rotated: boolean) => (rotated ? `(${N} / D) * (D - R)` : N);
    const segs: FusedSeg[] = kind === 'qkv'
      ? [
        { w: 'wq', bias: mode.a.bias ? 'bq' : undefined, rope: !!rope, J: Jexpr('Nq', !!rope), dst: 'o', cache: false },
        { w: 'wk', bias: mode.a.bias ? 'bk' : undefined, rope: !!rope, J: Jexpr('Nkv', !!rope), dst: 'kc', cache: true },
        { w: 'wv', bias: mode.a.bias ? 'bv' : undefined, rope: false, J: 'Nkv', dst: 'vc', cache: true },
      ]
      : [{ w: 'w', wu: lin!.glu ? 'wu' : undefined, bias: lin!.bias ? 'bias' : undefined, biasu: lin!.bias && lin!.glu ? 'biasu' : undefined,
        rope: !!rope, J: 'u(5u)', dst: 'o', cache: kind === 'kv' }];
    const xType = vec ? 'vec4<f32>' : 'f32';
    const rms = norm?.kind === 'rmsnorm';
    const twoOf = (s: FusedSeg) => s.rope || s.wu !== undefined; // two accumulators per row: the rotary partner column, or the up row
    const wType = vec ? (is16(bt) ? vec16(bt) : 'vec4<f32>') : storageType(bt);
    const decls = present.map(([name, i, weight]) =>
      `@group(0) @binding(${i + 1}) var<storage, read> ${name}: array<${weight ? wType : name === 'inp' || name === 'nw' || name === 'nb' ? xType : 'f32'}>;`);
    if (kind === 'qkv') decls.unshift('@group(0) @binding(1) var<storage, read_write> kc: array<f32>;', '@group(0) @binding(2) var<storage, read_write> vc: array<f32>;');
    const oBinding = kind === 'kv' ? 1 : all.length + 1;
    // Where output (row r, column c) of a cache goes: the cache row of (b, t) and head c / D.
    const oi = kind === 'linear' ? '' : 'fn oi(r: u32, c: u32) -> u32 { let T = u(6u); let D = u(10u); let b = r / T; return ((b * u(13u) + c / D) * u(12u) + u(14u + b) + r % T) * D + c % D; }';
    // The normalised input: v is raw x (f32 or vec4), i indexes the norm weights alike. RMSNorm's 1/rms is
    // a per-row factor, so it is taken out of the dot product: Σx² accumulates in the main loop and the
    // sums are scaled at the end. LayerNorm reduces the mean and variance first (two passes, as the
    // reference does), over x in the same units as the main loop.
    const nrm = !norm ? 'v' : rms ? '(nw[i] * v) * s' : `(((v - mu) * inv) * nw[i]${norm.bias ? ' + nb[i]' : ''}) * s`;
    const sum = (v: string) => (vec ? `dot(${v}, vec4<f32>(1.0))` : v);
    const sq = (v: string) => (vec ? `dot(${v}, ${v})` : `${v} * ${v}`);
    const units = vec ? 'K / 4u' : 'K';
    const statsPass = (acc: string, expr: (v: string) => string) => `
  { var t: array<f32, ${MC}>;
    for (var st = lid; st < ${units}; st += 64u) {
      for (var m = 0u; m < ${MC}u; m++) { let v = inp[min(m0 + m, M - 1u) * (${units}) + st]; t[m] += ${expr('v')}; }
    }
    for (var m = 0u; m < ${MC}u; m++) { put(lid, m, t[m]); }
    reduce_parts(lid, ${MC}u);
    for (var m = 0u; m < ${MC}u; m++) { ${acc}; }
    workgroupBarrier(); }`;
    const stats = !norm || rms ? '' : statsPass('mus[m] = total(m) / f32(K)', sum)
      + statsPass('ivs[m] = inverseSqrt(total(m) / f32(K) + eps)', (v) => sq(`(${v} - mus[m])`));
    // Loads: weight row `row` at step `st` → wN0 (and wN1 for packed halves); x of row r normalised.
    const wLoad = (arr: string, row: string, out: string) => !vec ? `let ${out}0 = ld_${arr}(${row} * K + st);`
      : is16(bt) ? `let ${out}p = ${arr}[${row} * (K / 8u) + st]; ${widen8(bt, `${out}p`, `${out}0`, `${out}1`)}`
        : `let ${out}0 = ${arr}[${row} * (K / 4u) + st];`;
    // x of row r at step st (raw v0, v1; normalised x0, x1), and its squares for RMSNorm.
    const xAt = (n: number, j: string, i: string) => `let v${n} = inp[${j}]; let x${n} = xn(v${n}, ${i}, mu, inv);${rms ? ` ss[m] += ${sq(`v${n}`)};` : ''}`;
    const xLoad = !vec ? xAt(0, 'r * K + st', 'st')
      : is16(bt) ? xAt(0, 'r * (K / 4u) + 2u * st', '2u * st') + ' ' + xAt(1, 'r * (K / 4u) + 2u * st + 1u', '2u * st + 1u')
        : xAt(0, 'r * (K / 4u) + st', 'st');
    const mac = (w: string) => !vec ? `x0 * ${w}0` : is16(bt) ? `dot(x0, ${w}0) + dot(x1, ${w}1)` : `dot(x0, ${w}0)`;
    const at = (s: FusedSeg, c: string) => (s.cache ? `oi(r, ${c})` : `r * N + ${c}`);
    // Per-projection code under a branch on seg (uniform across the workgroup: one job per workgroup);
    // the reduction and its barriers stay outside the branches.
    const pick = (code: (s: FusedSeg) => string) => (segs.length === 1 ? code(segs[0])
      : segs.map((s, i) => `${i ? ' else ' : ''}${i < segs.length - 1 ? `if (seg == ${i}u) ` : ''}{\n${code(s)}\n    }`).join(''));
    // Slots of 64 partial sums (partSums): first sums (job c, row m at c·MC + m), second sums (after C·MC of them), then Σx² per row.
    const ssAt = C * slots;
    const cs = Array.from({ length: C }, (_, c) => c);
    // The walk over K for one projection: each job's weight row(s) against the normalised x, which is
    // loaded once per step for all C jobs of the workgroup.
    const walk = (s: FusedSeg) => `    ${strided64(vec ? K / E : K, 'st', `      ${cs.map((c) => wLoad(s.w, `colA${c}`, `wa${c}_`)).join(' ')}
      ${cs.map((c) => (s.rope ? wLoad(s.w, `colB${c}`, `wb${c}_`) : s.wu ? wLoad(s.wu, `colA${c}`, `wb${c}_`) : '')).join(' ')}
      for (var m = 0u; m < ${MC}u; m++) {
        let r = min(m0 + m, M - 1u); let mu = mus[m]; let inv = ivs[m];
        ${xLoad}
        ${cs.map((c) => `acc0[${c * MC}u + m] += ${mac(`wa${c}_`)};${twoOf(s) ? ` acc1[${c * MC}u + m] += ${mac(`wb${c}_`)};` : ''}`).join('\n        ')}
      }`)}`;
    const addBias = (s: FusedSeg) => (s.bias ? `      ya += ${s.bias}[colA]; yb += ${s.biasu ? `${s.biasu}[colA]` : s.rope ? `${s.bias}[colB]` : '0.0'};` : '');
    const store = (s: FusedSeg) => `      ${s.dst}[${at(s, 'colA')}] = ya;${s.rope ? ` if (paired) { ${s.dst}[${at(s, 'colB')}] = yb; }` : ''}`;
    // The workgroup's jobs are jl, jl + 1, … jl + C - 1 of projection seg (which has Jl jobs; past its
    // end a job repeats the last one's loads and stores nothing). Where each one's column(s) are: cols().
    const rot = segs.length === 1 ? String(segs[0].rope) : rope ? 'seg < 2u' : 'false';
    const job = (segs.length === 1 ? `let seg = 0u; let jl = jn; let N = u(3u); let Jl = J;`
      : `let Nq = u(3u); let Nkv = u(13u) * D; let Jq = ${segs[0].J}; let Jk = ${segs[1].J};
  let seg = select(select(0u, 1u, jn >= Jq), 2u, jn >= Jq + Jk);
  let jl = jn - select(0u, select(Jq, Jq + Jk, seg == 2u), seg > 0u); let N = select(Nq, Nkv, seg > 0u);
  let Jl = select(select(Jq, Jk, seg == 1u), Nkv, seg == 2u);`)
      + cs.map((c) => `\n  let cc${c} = cols(min(jl + ${c}u, Jl - 1u), ${rot}); let colA${c} = cc${c}.x; let colB${c} = cc${c}.y;`).join('');
    const dispatch = `${job}
  var acc0: array<f32, ${MC * C}>; var acc1: array<f32, ${MC * C}>; var ss: array<f32, ${MC}>;
  ${pick(walk)}
  for (var m = 0u; m < ${MC}u; m++) {
    ${cs.map((c) => `put(lid, ${c * MC}u + m, acc0[${c * MC}u + m]);${two ? ` put(lid, ${C * MC + c * MC}u + m, acc1[${c * MC}u + m]);` : ''}`).join(' ')}${rms ? ` put(lid, ${ssAt}u + m, ss[m]);` : ''}
  }
  reduce_parts(lid, ${ssAt + (rms ? MC : 0)}u);
  // Thread lid finishes job lid / MC for row lid % MC: its sums are in slot lid (and C·MC + lid).
  if (lid >= ${MC * C}u) { return; }
  let mr = lid % ${MC}u; let jc = jl + lid / ${MC}u;
  if (m0 + mr >= M || jc >= Jl) { return; }
  let r = m0 + mr;
  let cc = cols(jc, ${rot}); let colA = cc.x; let colB = cc.y; let paired = cc.z == 1u; let j = cc.w;
  var ya = total(lid);
  var yb = ${two ? `total(${MC * C}u + lid)` : '0.0'};
  ${rms ? `let rinv = inverseSqrt(total(${ssAt}u + mr) / f32(K) + eps); ya *= rinv; yb *= rinv;` : ''}
  ${segs.some((x) => x.bias) ? pick(addBias) : ''}
  ${lin?.act ? `{ let x = ya; ya = ${ACT_WGSL[lin.act]}; }` : ''}
  ${lin?.glu ? 'ya = ya * yb;' : ''}
  ${rope ? `if (paired) {
    let B = u(11u);
    let pos = f32(u(14u + r / u(6u)) + r % u(6u));
    let sc = sincos_(f(14u + B + j) * pos);
    let ra = ya * sc.y - yb * sc.x; let rb = yb * sc.y + ya * sc.x;
    ya = ra; yb = rb;
  }` : ''}
  ${lin?.residual ? `ya = res[r * N + colA] + ya;${rope ? ' if (paired) { yb = res[r * N + colB] + yb; }' : ''}` : ''}
  ${pick(store)}`;
    const weights = present.filter(([, , weight]) => weight).map(([name]) => name);
    const sg = sgParts(sub);
    return `${sg.enable}${PARAMS_WGSL}
${decls.join('\n')}
@group(0) @binding(${oBinding}) var<storage, read_write> o: array<f32>;
${oi}
${vec ? '' : weights.map((w) => loader(`ld_${w}`, w, bt)).join('')}
${lin?.act === 'gelu_erf' ? ERF_WGSL : ''}${rope ? SINCOS_WGSL : ''}
${sg.vars}${partSums(ssAt + (rms ? MC : 0), sub)}
fn xn(v: ${xType}, i: u32, mu: f32, inv: f32) -> ${xType} { let s = f(8u); return ${nrm}; }
// Job jl's output column(s): with rope (rot) a rotary pair (colA, colB = colA + R) of head jl / (D - R), or one
// pass-through column (paired 0); without, column jl. Returns (colA, colB, paired, j: the pair's index in the head).
fn cols(jl: u32, rot: bool) -> vec4<u32> {
  let R = u(9u); let D = u(10u);
  let hd = jl / select(D, D - R, rot); let j = jl % select(D, D - R, rot); let paired = rot && j < R;
  let colA = select(jl, hd * D + select(j + R, j, paired), rot);
  return vec4<u32>(colA, select(colA, colA + R, paired), u32(paired), j);
}
@compute @workgroup_size(64) fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lv: vec3<u32>${sg.args}) {
  ${sg.init}
  let job = wid.x + wid.y * u(1u);
  if (job >= u(0u)) { return; }
  let lid = lv.x;
  let M = u(2u); const K = ${K}u; let J = u(5u); let eps = f(7u); let R = u(9u); let D = u(10u);
  let JW = (J + ${C - 1}u) / ${C}u; let jn = (job % JW) * ${C}u; let m0 = (job / JW) * ${MC}u;
  var mus: array<f32, ${MC}>; var ivs: array<f32, ${MC}>;${stats}
  ${dispatch}
}`;
  };
  return { key, workgroups: g.workgroups, params, wgsl, inPlace: kind === 'kv' };
}

/**
 * topk with k = 1 (greedy decoding on the device): one 256-thread workgroup per row; each thread keeps
 * the first largest of its strided share, then the larger value wins, or on a tie the lower index, as
 * the one-thread-per-row topk does: a shared-memory tree, or with subgroups each subgroup's max and the
 * lowest index holding it, which thread 0 then joins.
 */
function argmaxPlan(rows: number, E: number, sub: boolean): KernelPlan {
  const g = grid(rows * 256, 256);
  const sg = sgParts(sub);
  const join = sub
    ? `let m = subgroupMax(bv);
  let mi = subgroupMin(select(0xffffffffu, bi, bi != 0xffffffffu && bv == m));
  if (sg_lane == 0u) { vs[sg_id] = m; ix[sg_id] = mi; }
  workgroupBarrier();
  if (lid == 0u) {
    var v = vs[0]; var i = ix[0];
    for (var j = 1u; j < sg_count; j++) {
      let oi = ix[j];
      if (better(vs[j], oi, v, i)) { v = vs[j]; i = oi; }
    }
    o[r] = i32(i);
  }`
    : `vs[lid] = bv; ix[lid] = bi;
  workgroupBarrier();
  for (var s = 128u; s > 0u; s = s >> 1u) {
    if (lid < s) {
      let ov = vs[lid + s]; let oi = ix[lid + s];
      if (better(ov, oi, vs[lid], ix[lid])) { vs[lid] = ov; ix[lid] = oi; }
    }
    workgroupBarrier();
  }
  if (lid == 0u) { o[r] = i32(ix[0]); }`;
  return {
    key: 'argmax', outDtype: 'i32', workgroups: g.workgroups, params: words(rows, g.nx, E),
    wgsl: () => `${sg.enable}${header(['f32'], 'i32')}
var<workgroup> vs: array<f32, 256>;
var<workgroup> ix: array<u32, 256>;
// Whether candidate (ov, oi) beats (v, i): a larger value, or the same value at a lower index (0xffffffff: none).
fn better(ov: f32, oi: u32, v: f32, i: u32) -> bool { return oi != 0xffffffffu && (i == 0xffffffffu || ov > v || (ov == v && oi < i)); }
${sg.vars}
@compute @workgroup_size(256) fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lv: vec3<u32>${sg.args}) {
  ${sg.init}
  let r = wid.x + wid.y * u(1u);
  if (r >= u(0u)) { return; }
  let lid = lv.x; let E = u(2u);
  var bv = ${NEG_INF}; var bi = 0xffffffffu;
  for (var e = lid; e < E; e += 256u) { let v = a[r * E + e]; if (bi == 0xffffffffu || v > bv) { bv = v; bi = e; } }
  ${join}
}`,
  };
}

/**
 * WGSL for the cuts of one row of logits held in `arr` (at `base`, length V), whose largest finite value
 * is `m`: declares `cut`, (key, id) of top-k in .xy and of top-p in .zw, everything kept where a cut is
 * off (k = 0 or V, topP = 1). Tokens are ordered by a u32 key that rises with the logit (NaN lowest, −0
 * with +0), ties by lower id first; top-k and top-p each keep a prefix of that order, so each comes down
 * to a cut: kept = key above the cut's key, or equal to it at an id up to the cut's id. The cut's key is
 * found bit by bit from the top (32 passes over the row, each a count (top-k) or a probability mass
 * (top-p) of the keys at or above a candidate, reduced over the workgroup), and its id the same way among
 * the tokens tied at that key, only when the cut splits them. Needs samplingWgsl's functions and
 * variables, and `lid`, `V`, `k`, `topP`, `temp` in scope; call from uniform control flow.
 */
function rowCuts(arr: string, m: string): string {
  // One pass over the row's tokens (strided over the threads): `body` sees x, q (its key) and i.
  const each = (body: string) => `for (var i = lid; i < V; i += 256u) { let x = ${arr}[base + i]; let q = key(x); ${body} }`;
  const weight = `mass(x, q, ${m}, temp)`;
  // The cut's id among the tokens tied at key `kc`: the largest x whose tied tokens below it weigh less
  // than `need`; when every tied token is kept (keyCut's `whole`), V - 1 without searching.
  const tieCut = (w: string, need: string) => `var x = V - 1u;
    if (!whole) {
      x = 0u;
      for (var bit = firstLeadingBit(V - 1u) + 1u; bit > 0u; bit--) {
        let cand = x | (1u << (bit - 1u));
        var s = 0.0;
        ${each(`if (i < cand && q == kc && kept(q, i, cut)) { s += ${w}; }`)}
        if (reduce(lid, s, false) < ${need}) { x = cand; }
      }
    }`;
  // The cut's key: the largest key whose tokens at or above it (and kept so far) weigh at least `need`;
  // then `rest`, what the tokens tied at it must add, and `whole`, whether all of them are kept: at most
  // `most` tied tokens (a uniform value, so the tie search may branch on it).
  const keyCut = (w: string, need: string, most: string) => `var kc = 0u;
    for (var bit = 32u; bit > 0u; bit--) {
      let cand = kc | (1u << (bit - 1u));
      var s = 0.0;
      ${each(`if (q >= cand && kept(q, i, cut)) { s += ${w}; }`)}
      if (reduce(lid, s, false) >= ${need}) { kc = cand; }
    }
    var above = 0.0; var ties = 0.0;
    ${each(`if (kept(q, i, cut)) { if (q > kc) { above += ${w}; } else if (q == kc) { ties += 1.0; } }`)}
    let rest = ${need} - reduce(lid, above, false);
    let tied = reduce(lid, ties, false);
    if (lid == 0u) { flag = select(0u, 1u, tied <= ${most}); }
    let whole = workgroupUniformLoad(&flag) == 1u;`;
  return `var cut = vec4<u32>(0u, V - 1u, 0u, V - 1u);
  if (k > 0u && k < V) {
    ${keyCut('1.0', 'f32(k)', 'rest')}
    ${tieCut('1.0', 'rest')}
    cut.x = kc; cut.y = x;
  }
  if (topP < 1.0) {
    var z = 0.0;
    ${each(`if (kept(q, i, cut)) { z += ${weight}; }`)}
    let goal = topP * reduce(lid, z, false);
    ${keyCut(weight, 'goal', '1.0')}
    ${tieCut(weight, 'rest')}
    cut.z = kc; cut.w = x;
  }`;
}

/** WGSL: the largest finite value of the row in `arr` at `base`, into `let name` (uniform control flow). */
const rowMax = (arr: string, name: string) => `var ${name}_ = ${NEG_INF};
  for (var i = lid; i < V; i += 256u) { let x = ${arr}[base + i]; if (key(x) > 0x007fffffu) { ${name}_ = max(${name}_, x); } }
  let ${name} = reduce(lid, ${name}_, true);`;

/** WGSL shared by the sampling kernels: the order key, a token's mass, the cut test, workgroup scratch. */
const samplingWgsl = (sub: boolean) => `${workgroupReduce(256, sub, 'reduce')}
var<workgroup> chunk: array<f32, 256>;
var<workgroup> pickT: u32;
var<workgroup> pickPre: f32;
var<workgroup> flag: u32;
// The order key: rises with the value; NaN below everything, -0 equal to +0.
fn key(x: f32) -> u32 {
  var b = bitcast<u32>(x);
  if ((b & 0x7fffffffu) > 0x7f800000u) { return 0u; }
  if (b == 0x80000000u) { b = 0u; }
  return select(b | 0x80000000u, ~b, (b & 0x80000000u) != 0u);
}
// A token's unnormalised probability; 0 for -inf and NaN (keys up to that of -inf).
fn mass(x: f32, q: u32, m: f32, temp: f32) -> f32 { return select(0.0, exp((x - m) / temp), q > 0x007fffffu); }
// Whether token (key q, id i) is inside both cuts: (key, id) of top-k in c.xy, of top-p in c.zw.
fn kept(q: u32, i: u32, c: vec4<u32>) -> bool { return (q > c.x || (q == c.x && i <= c.y)) && (q > c.z || (q == c.z && i <= c.w)); }
// A kept token's unnormalised probability, 0 for the others.
fn keptMass(x: f32, i: u32, m: f32, temp: f32, c: vec4<u32>) -> f32 { let q = key(x); return select(0.0, mass(x, q, m, temp), kept(q, i, c)); }`;

/**
 * WGSL: the draw by `at` (a value in [0, total)) among the weights `w` (an expression of what `load`
 * declares for token i) in vocabulary order: thread 0 finds the chunk where `at` falls, and that chunk's
 * thread walks it and runs `write(id)`; when rounding leaves `at` above the total, thread 0 writes
 * `lastAll`, the last token with weight. The chunks' sums must already be in `chunk` (drawSums, with the
 * same `load` and `w`). Uniform control flow.
 */
const drawWalk = (load: string, w: string, at: string, lastAll: string, write: (id: string) => string) => `if (lid == 0u) {
    var pre = 0.0; var t = 256u;
    for (var j = 0u; j < 256u; j++) { let c = chunk[j]; if (c > 0.0 && ${at} < pre + c) { t = j; break; } pre += c; }
    pickT = t; pickPre = pre;
    if (t == 256u) { ${write(`u32(${lastAll})`)} }
  }
  workgroupBarrier();
  if (lid == pickT) {
    let local = ${at} - pickPre;
    var cum = 0.0; var last = lo;
    for (var i = lo; i < hi; i++) {
      ${load} let wi = ${w};
      if (wi > 0.0) { cum += wi; last = i; if (local < cum) { break; } }
    }
    ${write('last')}
  }`;

/** WGSL: each thread's contiguous chunk [lo, hi) of the row, its sum of weights `w` into `chunk` and `total`, the largest id with weight into `lastAll`. */
const drawSums = (load: string, w: string) => `let per = (V + 255u) / 256u;
  let lo = min(V, lid * per); let hi = min(V, lo + per);
  var s = 0.0; var lastId = -1.0;
  for (var i = lo; i < hi; i++) { ${load} let wi = ${w}; if (wi > 0.0) { s += wi; lastId = f32(i); } }
  chunk[lid] = s;
  let total = reduce(lid, s, false);
  let lastAll = reduce(lid, lastId, true);`;

/**
 * `sample`: one 256-thread workgroup per row draws a token as tensor/sampling.ts defines it, without
 * sorting: the cuts of top-k and top-p (rowCuts), then a draw by u · Z over the kept tokens in vocabulary
 * order (drawSums, drawWalk). Probabilities are exp((x − max) / T), in f32.
 */
function samplePlan(rows: number, V: number, attrs: OpAttrs['sample'], sub: boolean): KernelPlan {
  const load = 'let x = a[base + i];';
  const w = 'keptMass(x, i, m, temp, cut)';
  return samplingKernel('sample', ['f32', 'f32'], rows, V, attrs, sub, `${rowMax('a', 'm')}
  ${rowCuts('a', 'm')}
  ${drawSums(load, w)}
  let at = b[row] * total;
  ${drawWalk(load, w, 'at', 'lastAll', (id) => `o[row] = i32(${id});`)}`);
}

/**
 * `accept_draft`: one 256-thread workgroup per row. The target's (a) and the draft's (b) distributions
 * are each found as `sample` finds one (largest value, cuts, total kept mass); every thread then tests the
 * drafted token d: accepted when q(d) > 0 and ua · q(d) < p(d). The residual draw runs either way (no
 * branch around the workgroup reductions): weights max(0, p − q), or p where they sum to 0, drawn by
 * ur · total in vocabulary order; its token is written only where d was rejected.
 */
function acceptDraftPlan(rows: number, V: number, attrs: OpAttrs['accept_draft'], sub: boolean): KernelPlan {
  const load = 'let pi = keptMass(a[base + i], i, mp, temp, cutP) / zp; let qi = keptMass(b[base + i], i, mq, temp, cutQ) / zq;';
  const w = 'select(max(0.0, pi - qi), pi, fromP)';
  return samplingKernel('accept_draft', ['f32', 'f32', 'i32', 'f32'], rows, V, attrs, sub, `${rowMax('a', 'mp')}
  ${rowMax('b', 'mq')}
  var cutP: vec4<u32>; var cutQ: vec4<u32>;
  { ${rowCuts('a', 'mp')} cutP = cut; }
  { ${rowCuts('b', 'mq')} cutQ = cut; }
  var sp = 0.0; var sq = 0.0;
  for (var i = lid; i < V; i += 256u) { sp += keptMass(a[base + i], i, mp, temp, cutP); sq += keptMass(b[base + i], i, mq, temp, cutQ); }
  let zp = reduce(lid, sp, false); let zq = reduce(lid, sq, false);
  let dv = c[row]; let di = u32(clamp(dv, 0, i32(V) - 1));
  let pd = keptMass(a[base + di], di, mp, temp, cutP) / zp; let qd = keptMass(b[base + di], di, mq, temp, cutQ) / zq;
  let accepted = dv >= 0 && dv < i32(V) && qd > 0.0 && d[2u * row] * qd < pd;
  if (lid == 0u) { o[2u * row] = select(0, 1, accepted); if (accepted) { o[2u * row + 1u] = dv; } }
  // The residual's total first (whether it is empty decides the weights), then the draw.
  var sr = 0.0;
  for (var i = lid; i < V; i += 256u) { ${load} sr += max(0.0, pi - qi); }
  let fromP = !(reduce(lid, sr, false) > 0.0);
  ${drawSums(load, w)}
  let at = d[2u * row + 1u] * total;
  ${drawWalk(load, w, 'at', 'lastAll', (id) => `if (!accepted) { o[2u * row + 1u] = i32(${id}); }`)}`);
}

/** A sampling kernel (one 256-thread workgroup per row of V logits): `body` runs with row, lid, base, V and the attributes in scope. */
function samplingKernel(key: string, ins: string[], rows: number, V: number, { temperature, topK, topP }: OpAttrs['sample'], sub: boolean, body: string): KernelPlan {
  const g = grid(rows * 256, 256);
  const sg = sgParts(sub);
  return {
    key, outDtype: 'i32', workgroups: g.workgroups, params: words(rows, g.nx, V, topK, f(topP), f(temperature)),
    wgsl: () => `${sg.enable}${header(ins, 'i32')}
${sg.vars}${samplingWgsl(sub)}
@compute @workgroup_size(256) fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lv: vec3<u32>${sg.args}) {
  ${sg.init}
  let row = wid.x + wid.y * u(1u);
  if (row >= u(0u)) { return; }
  let lid = lv.x; let V = u(2u); let k = u(3u); let topP = f(4u); let temp = f(5u);
  let base = row * V;
  ${body}
}`,
  };
}

/** WGSL opening of a tiled matmul (16×16 threads, `tile` × `tile` outputs): batch offsets, tile origin, thread ids. */
const tileStart = (tile: number) => `@compute @workgroup_size(16, 16) fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lv: vec3<u32>) {
  let M = u(0u); let N = u(1u); let K = u(2u);
  let batch = wid.z;
  let ao = batch * M * K;
  let bo = (batch % u(3u)) * N * K;
  let oo = batch * M * N;
  let row0 = wid.y * ${tile}u; let col0 = wid.x * ${tile}u;
  let tx = lv.x; let ty = lv.y; let tid = ty * 16u + tx;`;

/**
 * Large-tile matmul: 128×128 output tiles per 256-thread workgroup, 8×8 outputs per thread (two 4×4
 * quadrants 64 apart, so neighbouring threads read neighbouring vec4s of the shared tiles), K in steps
 * of 16, operands loaded as vec4. Needs the loaded rows contiguous in multiples of 4: K % 4 for a
 * row-major a and a (N, K) b, M % 4 for a transposed a, N % 4 for a (K, N) b. A 16-bit b must be (N, K)
 * with K % 8: each thread loads 8 packed halves of one row (a vec4<u32>) and widens them into the tile.
 * `stages`: KernelEnv.matmulStages.
 */
function bigTileMatmul(M: number, N: number, K: number, batches: number, bBatches: number, transB: boolean, transA: boolean, bt: Held, stages: 1 | 2): KernelPlan {
  if (batches > MAX_WG) throw new ShapeError('matmul', `${batches} batches exceed the ${MAX_WG} workgroups a grid dimension allows on WebGPU`);
  // Tile loads: 16 (k) × 128 (rows) values per operand = 512 vec4, two per thread. Along K (row-major a,
  // b with transB) a vec4 holds 4 consecutive k of one row; across rows (transposed a, b without transB)
  // it holds 4 consecutive rows of one k. Each load is split in two: `fetch` reads the next K step from
  // memory into registers (issued before the current step's products, so its latency hides behind
  // them), `store` writes those registers into the shared tile at the start of the next step.
  const fetch = (arr: string, reg: string, alongK: boolean, first: string, off: string, count: string) => alongK
    ? `for (var j = 0u; j < 2u; j++) {
      let e = tid + 256u * j; let gr = ${first} + e / 4u; let gk = kf + (e % 4u) * 4u;
      ${reg}[j] = vec4<f32>(0.0);
      if (gr < ${count} && gk < K) { ${reg}[j] = ${arr}[(${off} + gr * K + gk) / 4u]; }
    }`
    : `for (var j = 0u; j < 2u; j++) {
      let e = tid + 256u * j; let gk = kf + e / 32u; let gr = ${first} + (e % 32u) * 4u;
      ${reg}[j] = vec4<f32>(0.0);
      if (gk < K && gr < ${count}) { ${reg}[j] = ${arr}[(${off} + gk * ${count} + gr) / 4u]; }
    }`;
  // `at` is the first vec4 of the buffer stored into (with two buffers, 0 or 512).
  const store = (reg: string, tile: string, alongK: boolean) => alongK
    ? `for (var j = 0u; j < 2u; j++) {
      let e = tid + 256u * j; let r = e / 4u; let kq = (e % 4u) * 4u; let v = ${reg}[j];
      ${tile}[at + kq * 32u + r / 4u][r % 4u] = v.x; ${tile}[at + (kq + 1u) * 32u + r / 4u][r % 4u] = v.y;
      ${tile}[at + (kq + 2u) * 32u + r / 4u][r % 4u] = v.z; ${tile}[at + (kq + 3u) * 32u + r / 4u][r % 4u] = v.w;
    }`
    : `for (var j = 0u; j < 2u; j++) {
      ${tile}[at + tid + 256u * j] = ${reg}[j]; // element e = 4 rows of k e / 32: tile index (e / 32) * 32 + e % 32 = e
    }`;
  // 16-bit rows along K: 16 k × 128 rows = 256 loads of 8 halves, one per thread.
  const fetch16 = () => `{
      let gr = col0 + tid / 2u; let gk = kf + (tid % 2u) * 8u;
      pw = ${vec16(bt)}();
      if (gr < N && gk < K) { pw = b[(bo + gr * K + gk) / 8u]; }
    }`;
  const store16 = () => `{
      let r = tid / 2u; let kq = (tid % 2u) * 8u;
      ${widen8(bt, 'pw', 'lo', 'hi')}
      for (var q = 0u; q < 4u; q++) { Bs[at + (kq + q) * 32u + r / 4u][r % 4u] = lo[q]; Bs[at + (kq + 4u + q) * 32u + r / 4u][r % 4u] = hi[q]; }
    }`;
  const wide = is16(bt);
  // The K loop's source (built with the shader source, not per dispatch).
  const loop = () => {
    const fetchAll = `${fetch('a', 'pa', !transA, 'row0', 'ao', 'M')}
        ${wide ? fetch16() : fetch('b', 'pb', transB, 'col0', 'bo', 'N')}`;
    const storeAll = `${store('pa', 'As', !transA)}
        ${wide ? store16() : store('pb', 'Bs', transB)}`;
    // The products of one K step (from the buffer at `cur`). Writing out its 16 k instead of looping made
    // it slower on SwiftShader (256³: 13.5 → 16 ms); a GPU's compiler unrolls such a loop itself.
    const products = `for (var kk = 0u; kk < 16u; kk++) {
        let a0 = As[cur + kk * 32u + ty]; let a1 = As[cur + kk * 32u + 16u + ty];
        let b0 = Bs[cur + kk * 32u + tx]; let b1 = Bs[cur + kk * 32u + 16u + tx];
        ${ACC128.products}
      }`;
    // One buffer: store, barrier, multiply (the next step's loads in flight), barrier. Two: multiply from
    // one buffer while the other takes the next step; the barrier after both orders the next step's reads
    // after its stores, and this step's reads before the stores into the same buffer two steps on.
    return stages === 1 ? `
    var kf = 0u;
    ${fetchAll}
    let cur = 0u; let at = 0u;
    for (var k0 = 0u; k0 < K; k0 += 16u) {
      ${storeAll}
      workgroupBarrier();
      kf = k0 + 16u;
      if (kf < K) {
        ${fetchAll}
      }
      ${products}
      workgroupBarrier();
    }` : `
    var kf = 0u;
    ${fetchAll}
    { let at = 0u; ${storeAll} }
    workgroupBarrier();
    var cur = 0u;
    for (var k0 = 0u; k0 < K; k0 += 16u) {
      kf = k0 + 16u;
      let more = kf < K;
      if (more) {
        ${fetchAll}
      }
      ${products}
      if (more) { let at = 512u - cur; ${storeAll} }
      workgroupBarrier();
      cur = 512u - cur;
    }`;
  };
  return {
    key: `tile128:${bt}:${transB}:${transA}:${stages}`, workgroups: [Math.ceil(N / 128), Math.ceil(M / 128), batches], params: words(M, N, K, bBatches),
    wgsl: () => `${PARAMS_WGSL}
@group(0) @binding(1) var<storage, read> a: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> b: array<${wide ? vec16(bt) : 'vec4<f32>'}>;
@group(0) @binding(3) var<storage, read_write> o: array<f32>;
var<workgroup> As: array<vec4<f32>, ${512 * stages}>;
var<workgroup> Bs: array<vec4<f32>, ${512 * stages}>;
${tileStart(128)}
  ${ACC128.decl}
  var pa: array<vec4<f32>, 2>;
  ${wide ? `var pw: ${vec16(bt)};` : 'var pb: array<vec4<f32>, 2>;'}${loop()}
  ${ACC128.stores}
}`,
  };
}

// The tile kernels' accumulators are named vec4 variables and their inner products and stores are written
// out here, not looped over in WGSL: a private array indexed in a loop that the driver's compiler does not
// unroll lives in (slow) local memory instead of registers.
const XYZW = ['x', 'y', 'z', 'w'];
/** Stores of one accumulator row `v` (4 columns from c) of output row r, each column bounds-checked. */
const store4 = (r: string, c: string, v: string) =>
  `if (${r} < M) { ${XYZW.map((q, j) => `if (${c} + ${j}u < N) { o[oo + ${r} * N + ${c} + ${j}u] = ${v}.${q}; }`).join(' ')} }`;
/** Stores of every accumulator: rows[i] and cols[h] are offsets from row0 and col0; acc(i, h) names its vec4. */
const tileStores = (rows: string[], cols: string[], acc: (i: number, h: number) => string) =>
  rows.flatMap((r, i) => cols.map((c, h) => `{ let r = row0 + ${r}; let c = col0 + ${c}; ${store4('r', 'c', acc(i, h))} }`)).join('\n  ');
/** 64-wide tile: thread (ty, tx) owns rows ty·4 + i (acc_i, a vec4 over columns tx·4 … tx·4 + 3). */
const ACC64 = {
  decl: [0, 1, 2, 3].map((i) => `var acc${i} = vec4<f32>(0.0);`).join(' '),
  products: XYZW.map((q, i) => `acc${i} += av.${q} * bv;`).join(' '),
  stores: tileStores([0, 1, 2, 3].map((i) => `ty * 4u + ${i}u`), ['tx * 4u'], (i) => `acc${i}`),
};
/** 128-wide tile: rows ty·4 + i and 64 + ty·4 + i (a0, a1), columns tx·4 and 64 + tx·4 (b0, b1): acc[half·8 + i·2 + h]. */
const ACC128 = {
  decl: Array.from({ length: 16 }, (_, i) => `var acc${i} = vec4<f32>(0.0);`).join(' '),
  products: XYZW.map((q, i) => `acc${i * 2} += a0.${q} * b0; acc${i * 2 + 1} += a0.${q} * b1; acc${8 + i * 2} += a1.${q} * b0; acc${8 + i * 2 + 1} += a1.${q} * b1;`).join('\n      '),
  stores: tileStores(Array.from({ length: 8 }, (_, i) => (i < 4 ? `ty * 4u + ${i}u` : `64u + ty * 4u + ${i - 4}u`)), ['tx * 4u', '64u + tx * 4u'], (i, h) => `acc${i * 2 + h}`),
};

/** Tiled matmul: 64×64 output tiles per 256-thread workgroup, 4×4 outputs per thread, K in steps of 16. */
function tiledMatmul(M: number, N: number, K: number, batches: number, bBatches: number, transB: boolean, transA: boolean, bt: Held): KernelPlan {
  const tilesN = Math.ceil(N / 64), tilesM = Math.ceil(M / 64);
  if (batches > MAX_WG) throw new ShapeError('matmul', `${batches} batches exceed the ${MAX_WG} workgroups a grid dimension allows on WebGPU`);
  return {
    key: `tiled:${bt}:${transB}:${transA}`, workgroups: [tilesN, tilesM, batches], params: words(M, N, K, bBatches),
    wgsl: () => `${header(['f32', storageType(bt)], 'f32')}${loader('ldb', 'b', bt)}
var<workgroup> As: array<array<f32, 64>, 16>;
var<workgroup> Bs: array<array<f32, 64>, 16>;
${tileStart(64)}
  ${ACC64.decl}
  for (var k0 = 0u; k0 < K; k0 += 16u) {
    for (var e = tid; e < 1024u; e += 256u) {
      let kk = e % 16u; let r = e / 16u;
      let gr = row0 + r; let gc = col0 + r; let gk = k0 + kk;
      ${transA
        ? 'let ka = e / 64u; let ra = e % 64u; let gra = row0 + ra; let gka = k0 + ka; var va = 0.0; if (gra < M && gka < K) { va = a[ao + gka * M + gra]; } As[ka][ra] = va;'
        : 'var va = 0.0; if (gr < M && gk < K) { va = a[ao + gr * K + gk]; } As[kk][r] = va;'}
      ${transB
        ? 'var vb = 0.0; if (gc < N && gk < K) { vb = ldb(bo + gc * K + gk); } Bs[kk][r] = vb;'
        : 'let kb = e / 64u; let cb = e % 64u; let gkb = k0 + kb; let gcb = col0 + cb; var vb = 0.0; if (gcb < N && gkb < K) { vb = ldb(bo + gkb * N + gcb); } Bs[kb][cb] = vb;'}
    }
    workgroupBarrier();
    for (var kk = 0u; kk < 16u; kk++) {
      let av = vec4<f32>(As[kk][ty * 4u], As[kk][ty * 4u + 1u], As[kk][ty * 4u + 2u], As[kk][ty * 4u + 3u]);
      let bv = vec4<f32>(Bs[kk][tx * 4u], Bs[kk][tx * 4u + 1u], Bs[kk][tx * 4u + 2u], Bs[kk][tx * 4u + 3u]);
      ${ACC64.products}
    }
    workgroupBarrier();
  }
  ${ACC64.stores}
}`,
  };
}


/** Shared pieces of the attention gradients: q·k (scaled) and g·v of key s, with q and g staged in workgroup memory. */
const ATTN_GRAD_COMMON = `
var<workgroup> qs: array<f32, 256>;
var<workgroup> gs: array<f32, 256>;
fn score(ko: u32, D: u32, scale: f32) -> f32 { var x = 0.0; for (var j = 0u; j < D; j++) { x += qs[j] * b[ko + j]; } return x * scale; }
fn gdotv(ko: u32, D: u32) -> f32 { var x = 0.0; for (var j = 0u; j < D; j++) { x += gs[j] * c[ko + j]; } return x; }
`;

/**
 * attention_stats where the tiled kernel does not fit: one 64-thread workgroup per query row (b, t, h)
 * takes the max and the sum of its scores over the visible keys, and Σ g·y.
 */
function attentionStatsRows(B: number, T: number, H: number, K: number, S: number, D: number, scale: number, pos0: number[]): KernelPlan {
  const rows = B * T * H;
  const g = grid(rows * 64, 64);
  return {
    key: 'attention_stats:rows', workgroups: g.workgroups, params: words(rows, g.nx, T, H, K, S, D, f(scale), pos0),
    wgsl: () => `${header(['f32', 'f32', 'f32', 'f32'], 'f32', ['a', 'b', 'y', 'gg'])}
var<workgroup> qs: array<f32, 256>;
fn score(ko: u32, D: u32, scale: f32) -> f32 { var x = 0.0; for (var j = 0u; j < D; j++) { x += qs[j] * b[ko + j]; } return x * scale; }
${workgroupReduce(64, false)}
${attnRowMain()}
  let qo = row * D;
  for (var x = lid; x < D; x += 64u) { qs[x] = a[qo + x]; }
  workgroupBarrier();
  let kvBase = (bb * K + kh) * S * D;
  var m = ${NEG_INF};
  for (var s = lid; s < visible; s += 64u) { m = max(m, score(kvBase + s * D, D, scale)); }
  m = reduce64(lid, m, true);
  var z = 0.0;
  for (var s = lid; s < visible; s += 64u) { z += exp(score(kvBase + s * D, D, scale) - m); }
  z = reduce64(lid, z, false);
  var gy = 0.0;
  for (var x = lid; x < D; x += 64u) { gy += gg[qo + x] * y[qo + x]; }
  gy = reduce64(lid, gy, false);
  if (lid == 0u) { o[2u * row] = m + log(z); o[2u * row + 1u] = gy; }
}`,
  };
}

/**
 * d loss / d q: one 64-thread workgroup per query row (b, t, h). Two passes over the visible keys give the
 * softmax max, its sum and Σ p·(g·v); a third forms dScore = p (g·v − Σ p·(g·v)) · scale for 64 keys at a
 * time and each thread accumulates up to 4 output dims (d = lid + 64 j) from those keys' rows.
 */
function attentionGradQ(B: number, T: number, H: number, K: number, S: number, D: number, scale: number, pos0: number[], nIn: number): KernelPlan {
  const rows = B * T * H;
  const g = grid(rows * 64, 64);
  return {
    key: 'attention_grad:q', workgroups: g.workgroups, params: words(rows, g.nx, T, H, K, S, D, f(scale), pos0),
    wgsl: () => `${header(new Array(nIn).fill('f32'), 'f32', ['a', 'b', 'c', 'd', 'st'])}${ATTN_GRAD_COMMON}
var<workgroup> ps: array<f32, 64>;
${workgroupReduce(64, false)}
${attnRowMain()}
  let qo = row * D;
  for (var x = lid; x < D; x += 64u) { qs[x] = a[qo + x]; gs[x] = d[qo + x]; }
  workgroupBarrier();
  let kvBase = (bb * K + kh) * S * D;
  var m = ${NEG_INF};
  for (var s = lid; s < visible; s += 64u) { m = max(m, score(kvBase + s * D, D, scale)); }
  m = reduce64(lid, m, true);
  var z = 0.0; var w = 0.0;
  for (var s = lid; s < visible; s += 64u) { let ko = kvBase + s * D; let e = exp(score(ko, D, scale) - m); z += e; w += e * gdotv(ko, D); }
  z = reduce64(lid, z, false);
  let dot = reduce64(lid, w, false) / z;
  var acc = vec4<f32>(0.0);
  for (var s0 = 0u; s0 < visible; s0 += 64u) {
    let s = s0 + lid;
    var ds = 0.0;
    if (s < visible) { let ko = kvBase + s * D; ds = exp(score(ko, D, scale) - m) / z * (gdotv(ko, D) - dot) * scale; }
    ps[lid] = ds; workgroupBarrier();
    let n = min(64u, visible - s0);
    for (var j = 0u; j < n; j++) {
      let ko = kvBase + (s0 + j) * D;
      let pj = ps[j];
      for (var q = 0u; q < 4u; q++) { let x = lid + 64u * q; if (x < D) { acc[q] += pj * b[ko + x]; } }
    }
    workgroupBarrier();
  }
  for (var q = 0u; q < 4u; q++) { let x = lid + 64u * q; if (x < D) { o[qo + x] = acc[q]; } }
}`,
  };
}

/**
 * d loss / d k or v: one 256-thread workgroup per (b, kv head) owns that head's whole (S, D) output, so no
 * two workgroups write one element. It walks the query rows (t, then the H/K query heads sharing the kv
 * head) in the CPU reference's order; per row, the threads split the visible keys for the softmax
 * statistics, then each thread adds p·g (dv) or dScore·q (dk) into the key rows it owns (s = lid + 256 j).
 * Keys no query sees stay zero.
 */
function attentionGradKV(B: number, T: number, H: number, K: number, S: number, D: number, scale: number, pos0: number[], wrt: 'k' | 'v', nIn: number): KernelPlan {
  const jobs = B * K;
  const g = grid(jobs * 256, 256);
  const isK = wrt === 'k';
  return {
    key: `attention_grad:${wrt}`, workgroups: g.workgroups, params: words(jobs, g.nx, T, H, K, S, D, f(scale), pos0),
    wgsl: () => `${header(new Array(nIn).fill('f32'), 'f32', ['a', 'b', 'c', 'd', 'st'])}${ATTN_GRAD_COMMON}
${workgroupReduce(256, false)}
@compute @workgroup_size(256) fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lv: vec3<u32>) {
  let job = wid.x + wid.y * u(1u); // (b, kv head)
  if (job >= u(0u)) { return; }
  let lid = lv.x;
  let T = u(2u); let H = u(3u); let K = u(4u); let S = u(5u); let D = u(6u); let scale = f(7u);
  let kh = job % K; let bb = job / K;
  let G = H / K;
  let kvBase = job * S * D;
  for (var s = lid; s < S; s += 256u) { for (var x = 0u; x < D; x++) { o[kvBase + s * D + x] = 0.0; } }
  for (var t = 0u; t < T; t++) {
    let visible = u(8u + bb) + t + 1u;
    for (var hh = 0u; hh < G; hh++) {
      let qo = ((bb * T + t) * H + kh * G + hh) * D;
      workgroupBarrier();
      for (var x = lid; x < D; x += 256u) { qs[x] = a[qo + x]; gs[x] = d[qo + x]; }
      workgroupBarrier();
      var m = ${NEG_INF};
      for (var s = lid; s < visible; s += 256u) { m = max(m, score(kvBase + s * D, D, scale)); }
      m = reduce256(lid, m, true);
      var z = 0.0;${isK ? ' var w = 0.0;' : ''}
      for (var s = lid; s < visible; s += 256u) {
        let ko = kvBase + s * D;
        let e = exp(score(ko, D, scale) - m); z += e;${isK ? ' w += e * gdotv(ko, D);' : ''}
      }
      z = reduce256(lid, z, false);
      ${isK ? 'let dot = reduce256(lid, w, false) / z;' : ''}
      for (var s = lid; s < visible; s += 256u) {
        let ko = kvBase + s * D;
        let p = exp(score(ko, D, scale) - m) / z;
        ${isK
          ? 'let ds = p * (gdotv(ko, D) - dot) * scale;\n        for (var x = 0u; x < D; x++) { o[ko + x] += ds * qs[x]; }'
          : 'for (var x = 0u; x < D; x++) { o[ko + x] += p * gs[x]; }'}
      }
    }
  }
}`,
  };
}

// ---- Tiled attention (prefill, training): blocks of BT queries × BT keys per step, staged in workgroup
// memory, so each key and value row is read once per block of queries instead of once per query. ----

type TiledMode = 'out' | 'stats' | 'dq' | 'dk' | 'dv';

/** Floats of workgroup memory a tiled attention kernel needs: its row tiles, the score tile and row stats. */
function tiledFloats(mode: TiledMode, BT: number, D: number): number {
  const tiles = { out: 3, stats: 2, dq: 4, dk: 4, dv: 3 }[mode];
  return tiles * BT * D + BT * BT + 3 * BT;
}

/** The tile edge (16 or 8 rows, BT² threads) that fits this device, or undefined (use the row kernels). */
function tileEdge(mode: TiledMode, D: number, env: KernelEnv): number | undefined {
  for (const BT of [16, 8]) {
    if (BT * BT <= env.maxInvocations && 4 * tiledFloats(mode, BT, D) <= env.maxWorkgroupStorage) return BT;
  }
  return undefined;
}

/**
 * One tiled attention kernel. Query-block modes (out: the attention output; stats: per row the
 * log-sum-exp of the scores and Σ g·y; dq) run one workgroup per (b, h, BT query rows) and walk the
 * visible keys BT at a time with an online softmax (out, stats) or the stored statistics (dq). Key-block
 * modes (dk, dv) run one workgroup per (b, kv head, BT keys), own those keys' gradient rows outright (no
 * two workgroups write one element) and walk the query rows of every query head sharing the kv head that
 * see those keys: p = exp(score − lse), dv += p·g, dk += p (g·v − Σg·y)·scale·q. Thread (i, j) = lid
 * scores query i against key j; for the accumulation, row i of the tile owns dims j, j + BT, ….
 */
function tiledAttention(mode: TiledMode, BT: number, B: number, T: number, H: number, K: number, S: number, D: number, scale: number, pos0: number[]): KernelPlan {
  const NT = BT * BT, NC = Math.ceil(D / BT);
  const byKeys = mode === 'dk' || mode === 'dv';
  const blocks = byKeys ? Math.ceil(S / BT) : Math.ceil(T / BT);
  const jobs = B * (byKeys ? K : H) * blocks;
  const g = grid(jobs * NT, NT);
  const ins = { out: 3, stats: 4, dq: 5, dk: 5, dv: 5 }[mode];
  const tiles = byKeys ? ['Qs', 'Gs', 'Ks', ...(mode === 'dk' ? ['Vs'] : [])]
    : ['Qs', 'Ks', ...(mode === 'stats' ? [] : ['Vs']), ...(mode === 'dq' ? ['Gs'] : [])];
  // Row r of a (B, T, H, D) tensor for query t of head h; rows of a tile are loaded cooperatively.
  const loadRows = (dst: string, src: string, rowOf: string, valid: string) => `
  for (var e = lid; e < ${BT * D}u; e += ${NT}u) {
    let ii = e / D; let d = e % D;
    var x = 0.0;
    if (${valid}) { x = ${src}[(${rowOf}) * D + d]; }
    ${dst}[e] = x;
  }`;
  const dims = (body: string) => `for (var c = 0u; c < ${NC}u; c++) { let d = j + ${BT}u * c; if (d < D) { ${body} } }`;
  const dot = (x: string, y: string) => `{ var x = 0.0; for (var d = 0u; d < D; d++) { x += ${x}[i * D + d] * ${y}[j * D + d]; } sdot = x; }`;
  const queryBlock = `
  let qb = job % NB; let h = (job / NB) % H; let bb = job / (NB * H);
  let kh = h / (H / K);
  let kvBase = (bb * K + kh) * S * D;
  let t = qb * ${BT}u + i;
  let rowValid = t < T;
  let visible = select(0u, u(8u + bb) + t + 1u, rowValid);
  let kmax = u(8u + bb) + min(T, qb * ${BT}u + ${BT}u);
  ${loadRows('Qs', 'a', '(bb * T + qb * ' + BT + 'u + ii) * H + h', 'qb * ' + BT + 'u + ii < T')}
  ${mode === 'dq' ? loadRows('Gs', 'gg', '(bb * T + qb * ' + BT + 'u + ii) * H + h', 'qb * ' + BT + 'u + ii < T') : ''}
  if (lid < ${BT}u) {
    ${mode === 'dq' ? `let r = (bb * T + min(qb * ${BT}u + lid, T - 1u)) * H + h; Ls[lid] = st[2u * r]; Dl[lid] = st[2u * r + 1u];`
      : `Ms[lid] = ${NEG_INF}; Ls[lid] = 0.0;`}
  }
  var acc: array<f32, ${NC}>;
  for (var s0 = 0u; s0 < kmax; s0 += ${BT}u) {
    workgroupBarrier();
    ${loadRows('Ks', 'b', 'kvBase / D + s0 + ii', 's0 + ii < kmax')}
    ${mode !== 'stats' ? loadRows('Vs', 'c', 'kvBase / D + s0 + ii', 's0 + ii < kmax') : ''}
    workgroupBarrier();
    let vis = s0 + j < visible;
    var sdot = 0.0;
    ${dot('Qs', 'Ks')}
    let sc = sdot * scale;
    ${mode === 'dq' ? `let p = select(0.0, exp(sc - Ls[i]), vis);
    ${dot('Gs', 'Vs')}
    Ps[i * ${BT}u + j] = p * (sdot - Dl[i]) * scale;
    workgroupBarrier();
    ${dims(`var x = acc[c]; for (var jj = 0u; jj < ${BT}u; jj++) { x += Ps[i * ${BT}u + jj] * Ks[jj * D + d]; } acc[c] = x;`)}`
    : `Ps[i * ${BT}u + j] = select(${NEG_INF}, sc, vis);
    workgroupBarrier();
    if (j == 0u) {
      var mt = Ms[i];
      for (var jj = 0u; jj < ${BT}u; jj++) { mt = max(mt, Ps[i * ${BT}u + jj]); }
      let corr = exp(Ms[i] - mt);
      var sum = 0.0;
      for (var jj = 0u; jj < ${BT}u; jj++) { let pe = exp(Ps[i * ${BT}u + jj] - mt); Ps[i * ${BT}u + jj] = pe; sum += pe; }
      Ls[i] = Ls[i] * corr + sum; Ms[i] = mt; Cr[i] = corr;
    }
    ${mode === 'out' ? `workgroupBarrier();
    ${dims(`var x = acc[c] * Cr[i]; for (var jj = 0u; jj < ${BT}u; jj++) { x += Ps[i * ${BT}u + jj] * Vs[jj * D + d]; } acc[c] = x;`)}` : ''}`}
  }
  workgroupBarrier();
  if (!rowValid) { return; }
  let qo = ((bb * T + t) * H + h) * D;
  ${mode === 'out' ? dims('o[qo + d] = acc[c] / Ls[i];')
    : mode === 'dq' ? dims('o[qo + d] = acc[c];')
      : `if (j == 0u) {
    var gy = 0.0;
    for (var d = 0u; d < D; d++) { gy += gg[qo + d] * c[qo + d]; }
    let r = (bb * T + t) * H + h;
    o[2u * r] = Ms[i] + log(Ls[i]); o[2u * r + 1u] = gy;
  }`}`;
  // Key-block modes: i indexes the query rows of the tile when scoring and the key rows when accumulating.
  const keyBlock = `
  let kb = job % NB; let kh = (job / NB) % K; let bb = job / (NB * K);
  let G = H / K;
  let kvBase = (bb * K + kh) * S * D;
  let s0 = kb * ${BT}u;
  ${loadRows('Ks', 'b', 'kvBase / D + s0 + ii', 's0 + ii < S')}
  ${mode === 'dk' ? loadRows('Vs', 'c', 'kvBase / D + s0 + ii', 's0 + ii < S') : ''}
  let p0 = u(8u + bb);
  let tStart = select(0u, s0 - p0, s0 > p0);
  var acc: array<f32, ${NC}>;
  for (var hh = 0u; hh < G; hh++) {
    let h = kh * G + hh;
    for (var t0 = tStart; t0 < T; t0 += ${BT}u) {
      workgroupBarrier();
      ${loadRows('Qs', 'a', '(bb * T + t0 + ii) * H + h', 't0 + ii < T')}
      ${loadRows('Gs', 'gg', '(bb * T + t0 + ii) * H + h', 't0 + ii < T')}
      if (lid < ${BT}u) { let r = (bb * T + min(t0 + lid, T - 1u)) * H + h; Ls[lid] = st[2u * r]; Dl[lid] = st[2u * r + 1u]; }
      workgroupBarrier();
      let t = t0 + i; let s = s0 + j;
      let vis = t < T && s < S && s < p0 + t + 1u;
      var sdot = 0.0;
      ${dot('Qs', 'Ks')}
      let p = select(0.0, exp(sdot * scale - Ls[i]), vis);
      ${mode === 'dk' ? `${dot('Gs', 'Vs')}
      Ps[i * ${BT}u + j] = p * (sdot - Dl[i]) * scale;` : `Ps[i * ${BT}u + j] = p;`}
      workgroupBarrier();
      ${dims(`var x = acc[c]; for (var ii = 0u; ii < ${BT}u; ii++) { x += Ps[ii * ${BT}u + i] * ${mode === 'dk' ? 'Qs' : 'Gs'}[ii * D + d]; } acc[c] = x;`)}
    }
  }
  if (s0 + i >= S) { return; }
  let ko = kvBase + (s0 + i) * D;
  ${dims('o[ko + d] = acc[c];')}`;
  const names = ['a', 'b', 'c', 'gg', 'st'];
  return {
    key: `attention_tiled:${mode}:${BT}:${D}`, workgroups: g.workgroups,
    params: words(jobs, g.nx, T, H, K, S, D, f(scale), pos0),
    wgsl: () => `${header(new Array(ins).fill('f32'), 'f32', names)}
${tiles.map((n) => `var<workgroup> ${n}: array<f32, ${BT * D}>;`).join('\n')}
var<workgroup> Ps: array<f32, ${BT * BT}>;
var<workgroup> Ms: array<f32, ${BT}>;
var<workgroup> Ls: array<f32, ${BT}>;
var<workgroup> ${byKeys || mode === 'dq' ? 'Dl' : 'Cr'}: array<f32, ${BT}>;
@compute @workgroup_size(${NT}) fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lv: vec3<u32>) {
  let job = wid.x + wid.y * u(1u);
  if (job >= u(0u)) { return; }
  let lid = lv.x; let i = lid / ${BT}u; let j = lid % ${BT}u;
  let T = u(2u); let H = u(3u); let K = u(4u); let S = u(5u); let scale = f(7u);
  const D = ${D}u;
  let NB = (${byKeys ? 'S' : 'T'} + ${BT - 1}u) / ${BT}u;
  ${byKeys ? keyBlock : queryBlock}
}`,
  };
}
