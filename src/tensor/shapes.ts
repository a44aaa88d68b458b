// Shape rules: for each op, the output shape from input shapes and attributes, with checks.
// Backends call `inferShape` before running a kernel, so kernels can trust their inputs.

import { ShapeError } from '../util/errors.ts';
import { fusedLinearSlots, fusedQkvSlots, splitFusedQkv, type OpAttrs, type OpName } from './ops.ts';

type Shape = readonly number[];
type Rule<O extends OpName> = (s: Shape[], a: OpAttrs[O]) => number[];

const fmt = (s: Shape) => `[${s.join(', ')}]`;
const sameShape = (a: Shape, b: Shape) => a.length === b.length && a.every((d, i) => d === b[i]);
const numel = (s: Shape) => s.reduce((p, d) => p * d, 1);

function need(op: string, s: Shape[], n: number, m = n) {
  if (s.length < n || s.length > m) throw new ShapeError(op, `expected ${n === m ? n : `${n}-${m}`} inputs, found ${s.length}`);
}

/** The sampling attributes of `sample` and `accept_draft`. */
function checkSampling(op: string, { temperature, topK, topP }: { temperature: number; topK: number; topP: number }) {
  if (!(temperature > 0 && Number.isFinite(temperature))) throw new ShapeError(op, `temperature must be > 0, found ${temperature}`);
  if (!(Number.isInteger(topK) && topK >= 0)) throw new ShapeError(op, `topK must be an integer >= 0 (0: no cut), found ${topK}`);
  if (!(topP > 0 && topP <= 1)) throw new ShapeError(op, `topP must be in (0, 1] (1: no cut), found ${topP}`);
}

type AttrFreeRule = (s: Shape[]) => number[];

function binary(op: string): AttrFreeRule {
  return (s) => {
    need(op, s, 2);
    const out = broadcastShapes(s[0], s[1]);
    if (!out) throw new ShapeError(op, `cannot broadcast ${fmt(s[0])} with ${fmt(s[1])} (numpy rules: trailing dims equal or 1)`);
    return out;
  };
}

/** Numpy broadcasting of two shapes, or undefined when they do not broadcast. */
export function broadcastShapes(a: Shape, b: Shape): number[] | undefined {
  const n = Math.max(a.length, b.length);
  const out: number[] = [];
  for (let i = 0; i < n; i++) {
    const da = a[a.length - n + i] ?? 1, db = b[b.length - n + i] ?? 1;
    if (da !== db && da !== 1 && db !== 1) return undefined;
    out.push(da === 1 ? db : da);
  }
  return out;
}

const same = (op: string): AttrFreeRule => (s) => { need(op, s, 1); return [...s[0]]; };
const lastReduce = (op: string): AttrFreeRule => (s) => {
  need(op, s, 1);
  if (s[0].length === 0) throw new ShapeError(op, 'cannot reduce a 0-d tensor');
  return s[0].slice(0, -1);
};

function attnCheck(op: string, s: Shape[], pos0: number[]) {
  need(op, s, op === 'attention' ? 3 : 2);
  const [q, k] = s;
  if (q.length !== 4 || k.length !== 4) throw new ShapeError(op, `expected q (B,T,H,D) and k (B,K,S,D), found ${fmt(q)} and ${fmt(k)}`);
  const [B, T, H, D] = q;
  const [Bk, K, S, Dk] = k;
  if (Bk !== B || Dk !== D) throw new ShapeError(op, `q ${fmt(q)} and k ${fmt(k)} disagree on B or D`);
  if (H % K !== 0) throw new ShapeError(op, `query heads ${H} not a multiple of kv heads ${K}`);
  if (s.length === 3 && !sameShape(s[2], k)) throw new ShapeError(op, `v ${fmt(s[2])} must match k ${fmt(k)}`);
  if (pos0.length !== B) throw new ShapeError(op, `pos0 has ${pos0.length} entries, expected B = ${B}`);
  for (const p of pos0) if (p + T > S) throw new ShapeError(op, `positions up to ${p + T} exceed the key length ${S}`);
  return { B, T, H, D, S };
}

/** The shape rule of every op. */
export const SHAPE_RULES: { [O in OpName]: Rule<O> } = {
  matmul: (s, { transB, transA }) => {
    need('matmul', s, 2);
    const [a, b] = s;
    if (a.length < 2 || b.length < 2) throw new ShapeError('matmul', `operands need >= 2 dims, found ${fmt(a)} and ${fmt(b)}`);
    const M = a[a.length - (transA ? 1 : 2)], K = a[a.length - (transA ? 2 : 1)];
    const Kb = transB ? b[b.length - 1] : b[b.length - 2];
    const N = transB ? b[b.length - 2] : b[b.length - 1];
    if (K !== Kb) throw new ShapeError('matmul', `inner dims differ: a ${fmt(a)} has K = ${K}, b ${fmt(b)}${transB ? ' (transposed)' : ''} has K = ${Kb}`);
    const ab = a.slice(0, -2), bb = b.slice(0, -2);
    if (bb.length > 0 && (bb.length > ab.length || !bb.every((d, i) => d === ab[ab.length - bb.length + i])))
      throw new ShapeError('matmul', `batch dims of b ${fmt(bb)} do not match those of a ${fmt(ab)}`);
    return [...ab, M, N];
  },
  add: binary('add'), sub: binary('sub'), mul: binary('mul'), div: binary('div'),
  scale: same('scale'), silu: same('silu'), relu: same('relu'), gelu_erf: same('gelu_erf'), gelu_tanh: same('gelu_tanh'),
  softmax: same('softmax'),
  sum: lastReduce('sum'), max: lastReduce('max'),
  layernorm: (s) => {
    need('layernorm', s, 2, 3);
    const C = s[0][s[0].length - 1];
    for (const p of s.slice(1)) if (p.length !== 1 || p[0] !== C) throw new ShapeError('layernorm', `weight/bias ${fmt(p)} must be [${C}]`);
    return [...s[0]];
  },
  rmsnorm: (s) => {
    need('rmsnorm', s, 2);
    const C = s[0][s[0].length - 1];
    if (s[1].length !== 1 || s[1][0] !== C) throw new ShapeError('rmsnorm', `weight ${fmt(s[1])} must be [${C}]`);
    return [...s[0]];
  },
  rope: (s, { pos0, invFreq }) => {
    need('rope', s, 1);
    if (s[0].length !== 4) throw new ShapeError('rope', `expected (B,T,H,D), found ${fmt(s[0])}`);
    if (pos0.length !== s[0][0]) throw new ShapeError('rope', `pos0 has ${pos0.length} entries, expected B = ${s[0][0]}`);
    if (invFreq.length * 2 > s[0][3]) throw new ShapeError('rope', `${invFreq.length} frequencies rotate more than head dim ${s[0][3]}`);
    return [...s[0]];
  },
  gather_rows: (s) => {
    need('gather_rows', s, 2);
    if (s[0].length !== 2) throw new ShapeError('gather_rows', `table must be 2-d (N, C), found ${fmt(s[0])}`);
    return [...s[1], s[0][1]];
  },
  index_add_rows: (s) => {
    need('index_add_rows', s, 3);
    const [dst, src, idx] = s;
    if (dst.length !== 2 || src.length !== 2 || idx.length !== 1 || src[1] !== dst[1] || idx[0] !== src[0])
      throw new ShapeError('index_add_rows', `expected dst (N,C), src (M,C), idx (M); found ${fmt(dst)}, ${fmt(src)}, ${fmt(idx)}`);
    return [...dst];
  },
  topk: (s, { k }) => {
    need('topk', s, 1);
    const E = s[0][s[0].length - 1];
    if (!(k >= 1 && k <= E)) throw new ShapeError('topk', `k = ${k} must be in 1..${E}`);
    return [...s[0].slice(0, -1), k];
  },
  sample: (s, a) => {
    need('sample', s, 2);
    const [x, u] = s;
    if (x.length !== 2 || u.length !== 1 || u[0] !== x[0]) throw new ShapeError('sample', `expected logits (N, V) and uniforms (N); found ${fmt(x)}, ${fmt(u)}`);
    checkSampling('sample', a);
    return [x[0]];
  },
  accept_draft: (s, a) => {
    need('accept_draft', s, 4);
    const [p, q, d, u] = s;
    if (p.length !== 2 || !sameShape(p, q) || d.length !== 1 || d[0] !== p[0] || !sameShape(u, [p[0], 2]))
      throw new ShapeError('accept_draft', `expected target and draft logits (N, V), drafted ids (N) and uniforms (N, 2); found ${fmt(p)}, ${fmt(q)}, ${fmt(d)}, ${fmt(u)}`);
    checkSampling('accept_draft', a);
    return [p[0], 2];
  },
  gather: (s) => {
    need('gather', s, 2);
    if (!sameShape(s[0].slice(0, -1), s[1].slice(0, -1))) throw new ShapeError('gather', `leading dims of ${fmt(s[0])} and ${fmt(s[1])} differ`);
    return [...s[1]];
  },
  kv_write: (s, { pos0 }) => {
    need('kv_write', s, 2);
    const [c, n] = s;
    if (c.length !== 4 || n.length !== 4 || c[0] !== n[0] || c[1] !== n[2] || c[3] !== n[3])
      throw new ShapeError('kv_write', `expected cache (B,K,S,D) and new (B,T,K,D), found ${fmt(c)} and ${fmt(n)}`);
    if (pos0.length !== c[0]) throw new ShapeError('kv_write', `pos0 has ${pos0.length} entries, expected B = ${c[0]}`);
    for (const p of pos0) if (p < 0 || p + n[1] > c[2]) throw new ShapeError('kv_write', `rows ${p}..${p + n[1]} do not fit the cache length ${c[2]}`);
    return [...c];
  },
  attention: (s, a) => { const { B, T, H, D } = attnCheck('attention', s, a.pos0); return [B, T, H, D]; },
  attention_probs: (s, a) => { const { B, T, H, S } = attnCheck('attention_probs', s, a.pos0); return [B, H, T, S]; },
  permute: (s, { perm }) => {
    need('permute', s, 1);
    const x = s[0];
    if (perm.length !== x.length || [...perm].sort((p, q) => p - q).some((p, i) => p !== i))
      throw new ShapeError('permute', `perm [${perm.join(', ')}] is not a permutation of the ${x.length} axes of ${fmt(x)}`);
    return perm.map((p) => x[p]);
  },
  sum_to: (s, { shape }) => {
    need('sum_to', s, 1);
    if (!sameShape(broadcastShapes(s[0], shape) ?? [], s[0]) || shape.length > s[0].length)
      throw new ShapeError('sum_to', `${fmt(s[0])} does not broadcast from ${fmt(shape)}`);
    return [...shape];
  },
  slice: (s, { axis, start, end }) => {
    need('slice', s, 1);
    const x = s[0];
    if (!(axis >= 0 && axis < x.length)) throw new ShapeError('slice', `axis ${axis} outside the ${x.length} axes of ${fmt(x)}`);
    if (!(Number.isInteger(start) && Number.isInteger(end) && start >= 0 && start < end && end <= x[axis]))
      throw new ShapeError('slice', `range [${start}, ${end}) is not inside axis ${axis} of length ${x[axis]}`);
    return x.map((d, i) => (i === axis ? end - start : d));
  },
  concat: (s, { axis }) => {
    need('concat', s, 2);
    const [a, b] = s;
    if (!(Number.isInteger(axis) && axis >= 0 && axis < a.length)) throw new ShapeError('concat', `axis ${axis} outside the ${a.length} axes of ${fmt(a)}`);
    if (a.length !== b.length || a.some((d, i) => i !== axis && d !== b[i]))
      throw new ShapeError('concat', `${fmt(a)} and ${fmt(b)} differ outside axis ${axis}`);
    return a.map((d, i) => (i === axis ? d + b[i] : d));
  },
  pad: (s, { axis, before, after }) => {
    need('pad', s, 1);
    const x = s[0];
    if (!(axis >= 0 && axis < x.length)) throw new ShapeError('pad', `axis ${axis} outside the ${x.length} axes of ${fmt(x)}`);
    if (!(Number.isInteger(before) && Number.isInteger(after) && before >= 0 && after >= 0)) throw new ShapeError('pad', `padding ${before}, ${after} must be integers >= 0`);
    return x.map((d, i) => (i === axis ? d + before + after : d));
  },
  act_grad: (s) => {
    need('act_grad', s, 2);
    if (!sameShape(s[0], s[1])) throw new ShapeError('act_grad', `x ${fmt(s[0])} and g ${fmt(s[1])} differ`);
    return [...s[0]];
  },
  norm_grad: (s) => {
    need('norm_grad', s, 3);
    const C = s[0][s[0].length - 1];
    if (s[1].length !== 1 || s[1][0] !== C) throw new ShapeError('norm_grad', `weight ${fmt(s[1])} must be [${C}]`);
    if (!sameShape(s[0], s[2])) throw new ShapeError('norm_grad', `x ${fmt(s[0])} and g ${fmt(s[2])} differ`);
    return [...s[0]];
  },
  attention_grad: (s, a) => {
    need('attention_grad', s, 4, 5);
    attnCheck('attention', s.slice(0, 3), a.pos0);
    if (!sameShape(s[3], s[0])) throw new ShapeError('attention_grad', `g ${fmt(s[3])} must match q ${fmt(s[0])}`);
    if (s.length === 5 && !sameShape(s[4], [...s[0].slice(0, 3), 2])) throw new ShapeError('attention_grad', `stats ${fmt(s[4])} must be [${[...s[0].slice(0, 3), 2].join(', ')}] (from attention_stats)`);
    return [...(a.wrt === 'q' ? s[0] : s[1])];
  },
  attention_stats: (s, a) => {
    need('attention_stats', s, 4);
    const { B, T, H } = attnCheck('attention_stats', s.slice(0, 2), a.pos0);
    for (const [i, name] of [[2, 'y'], [3, 'g']] as const) if (!sameShape(s[i], s[0])) throw new ShapeError('attention_stats', `${name} ${fmt(s[i])} must match q ${fmt(s[0])}`);
    return [B, T, H, 2];
  },
  kv_read: (s, { pos0, T }) => {
    need('kv_read', s, 1);
    const c = s[0];
    if (c.length !== 4) throw new ShapeError('kv_read', `expected a cache (B,K,S,D), found ${fmt(c)}`);
    if (pos0.length !== c[0]) throw new ShapeError('kv_read', `pos0 has ${pos0.length} entries, expected B = ${c[0]}`);
    for (const p of pos0) if (p < 0 || p + T > c[2]) throw new ShapeError('kv_read', `rows ${p}..${p + T} are not inside the cache length ${c[2]}`);
    return [c[0], T, c[1], c[3]];
  },
  scatter_add: (s, { size }) => {
    need('scatter_add', s, 2);
    if (!sameShape(s[0], s[1])) throw new ShapeError('scatter_add', `g ${fmt(s[0])} and idx ${fmt(s[1])} differ`);
    if (!(size >= 1)) throw new ShapeError('scatter_add', `size ${size} must be >= 1`);
    return [...s[0].slice(0, -1), size];
  },
  cross_entropy: (s) => {
    need('cross_entropy', s, 2);
    if (s[0].length !== 2 || s[1].length !== 1 || s[1][0] !== s[0][0])
      throw new ShapeError('cross_entropy', `expected logits (N,V) and targets (N), found ${fmt(s[0])} and ${fmt(s[1])}`);
    return [s[0][0]];
  },
  cross_entropy_grad: (s) => {
    need('cross_entropy_grad', s, 3);
    if (s[0].length !== 2 || s[1].length !== 1 || s[1][0] !== s[0][0] || !sameShape(s[2], s[1]))
      throw new ShapeError('cross_entropy_grad', `expected logits (N,V), targets (N), g (N), found ${fmt(s[0])}, ${fmt(s[1])}, ${fmt(s[2])}`);
    return [...s[0]];
  },
  adam_moments: (s) => {
    need('adam_moments', s, 2);
    const n = numel(s[1]);
    if (s[0].length !== 2 || s[0][0] !== 2 || s[0][1] !== n) throw new ShapeError('adam_moments', `state must be [2, ${n}] for a gradient of ${n} values, found ${fmt(s[0])}`);
    return [...s[0]];
  },
  adam_apply: (s) => {
    need('adam_apply', s, 2);
    const n = numel(s[0]);
    if (s[1].length !== 2 || s[1][0] !== 2 || s[1][1] !== n) throw new ShapeError('adam_apply', `state must be [2, ${n}] for a parameter of ${n} values, found ${fmt(s[1])}`);
    return [...s[0]];
  },
  fused_linear: (s, a) => {
    const slot = fusedLinearSlots(a);
    need('fused_linear', s, slot.count);
    const x = s[0], w = s[1];
    const K = x[x.length - 1];
    if (x.length < 2 || w.length !== 2 || w[1] !== K) throw new ShapeError('fused_linear', `expected x (..., K) and w (N, K), found ${fmt(x)} and ${fmt(w)}`);
    const N = w[0];
    const out = [...x.slice(0, -1), N];
    const vec = (i: number | undefined, n: number, what: string) => {
      if (i !== undefined && (s[i].length !== 1 || s[i][0] !== n)) throw new ShapeError('fused_linear', `${what} ${fmt(s[i])} must be [${n}]`);
    };
    vec(slot.normW, K, 'norm weight'); vec(slot.normB, K, 'norm bias'); vec(slot.bias, N, 'bias'); vec(slot.biasUp, N, 'up bias');
    if (slot.wUp !== undefined && !sameShape(s[slot.wUp], w)) throw new ShapeError('fused_linear', `up weight ${fmt(s[slot.wUp])} must match w ${fmt(w)}`);
    if (slot.residual !== undefined && !sameShape(s[slot.residual], out)) throw new ShapeError('fused_linear', `residual ${fmt(s[slot.residual])} must be the output shape ${fmt(out)}`);
    if (a.glu && !a.act) throw new ShapeError('fused_linear', 'glu needs an activation for the gate');
    if (a.glu && a.residual) throw new ShapeError('fused_linear', 'glu and residual do not combine (a GLU output feeds the down projection)');
    if (a.rope && (a.act || a.glu)) throw new ShapeError('fused_linear', 'rope does not combine with an activation');
    if (a.rope) {
      const { pos0, invFreq, headDim } = a.rope;
      if (x.length !== 3) throw new ShapeError('fused_linear', `with rope x must be (B, T, K), found ${fmt(x)}`);
      if (pos0.length !== x[0]) throw new ShapeError('fused_linear', `pos0 has ${pos0.length} entries, expected B = ${x[0]}`);
      if (!(headDim > 0) || N % headDim !== 0) throw new ShapeError('fused_linear', `${N} outputs are not whole heads of ${headDim}`);
      if (invFreq.length * 2 > headDim) throw new ShapeError('fused_linear', `${invFreq.length} frequencies rotate more than head dim ${headDim}`);
    }
    return out;
  },
  fused_kv_write: (s, { linear, pos0 }) => {
    const c = s[0];
    if (linear.act || linear.glu || linear.residual) throw new ShapeError('fused_kv_write', 'only norm, bias and rope fold into a cache write');
    const [B, T, N] = SHAPE_RULES.fused_linear(s.slice(1), linear);
    if (s[1].length !== 3 || c.length !== 4 || c[0] !== B || c[1] * c[3] !== N)
      throw new ShapeError('fused_kv_write', `expected cache (B, K, S, D) with K·D = ${N} for x ${fmt(s[1])}, found ${fmt(c)}`);
    if (linear.rope && linear.rope.headDim !== c[3]) throw new ShapeError('fused_kv_write', `rope head dim ${linear.rope.headDim} differs from the cache's ${c[3]}`);
    if (linear.rope && linear.rope.pos0.join() !== pos0.join()) throw new ShapeError('fused_kv_write', 'rope and cache positions differ');
    if (pos0.length !== B) throw new ShapeError('fused_kv_write', `pos0 has ${pos0.length} entries, expected B = ${B}`);
    for (const p of pos0) if (p < 0 || p + T > c[2]) throw new ShapeError('fused_kv_write', `rows ${p}..${p + T} do not fit the cache length ${c[2]}`);
    return [...c];
  },
  fused_qkv: (s, a) => {
    need('fused_qkv', s, fusedQkvSlots(a).count);
    const [kc, vc] = s;
    if (!sameShape(kc, vc)) throw new ShapeError('fused_qkv', `key cache ${fmt(kc)} and value cache ${fmt(vc)} differ`);
    const parts = splitFusedQkv(s, a);
    const q = SHAPE_RULES.fused_linear(parts.q.xs, parts.q.attrs);
    // k and v follow fused_kv_write's rules, which check their widths against the caches and the positions.
    SHAPE_RULES.fused_kv_write([kc, ...parts.k.xs], { linear: parts.k.attrs, pos0: a.pos0 });
    SHAPE_RULES.fused_kv_write([vc, ...parts.v.xs], { linear: parts.v.attrs, pos0: a.pos0 });
    return q;
  },
};

export function inferShape<O extends OpName>(op: O, shapes: Shape[], attrs: OpAttrs[O]): number[] {
  return (SHAPE_RULES[op] as Rule<O>)(shapes, attrs);
}

export { numel };
