// Gradient rules: one entry per primitive op (a `Record<OpName, …>` the compiler keeps complete).
// A rule maps the gradient of an op's output to the gradients of the inputs that need one, written
// with tensor/api ops — so backward runs on every backend that has the forward kernels plus the
// backward-only ops (act_grad, norm_grad, attention_grad, …). An op without a gradient says why.

import * as op from './api.ts';
import type { OpAttrs, OpName } from './ops.ts';
import type { Tensor } from './tensor.ts';

export interface GradArgs<O extends OpName> {
  /** d loss / d out, in out's shape. */
  g: Tensor;
  xs: readonly Tensor[];
  out: Tensor;
  attrs: OpAttrs[O];
  /** Which inputs need a gradient (a rule may skip the others). */
  needs: readonly boolean[];
}

/** Gradients of the inputs, in input order (undefined where none is needed or defined). */
export type GradRule<O extends OpName> = (a: GradArgs<O>) => (Tensor | undefined)[];
/** No gradient: recording the op through a watched input throws with `none`, unless `constant` says
 *  its output carries no gradient by nature (integer indices), in which case it is not recorded. */
export type GradEntry<O extends OpName> = GradRule<O> | { none: string; constant?: true };

const same = (a: readonly number[], b: readonly number[]) => a.length === b.length && a.every((d, i) => d === b[i]);

/** Sum a broadcast gradient back down to an input's shape (the identity when nothing broadcast). */
const unbroadcast = (g: Tensor, shape: readonly number[]) => (same(g.shape, shape) ? g : op.sumTo(g, shape));

/** x viewed as 2-d (rows, last axis). */
const rows = (x: Tensor) => x.reshape([x.size / x.shape[x.shape.length - 1], x.shape[x.shape.length - 1]]);

/** x with the last two axes swapped. */
const swapLast2 = (x: Tensor) => {
  const r = x.shape.length;
  return op.permute(x, [...Array.from({ length: r - 2 }, (_, i) => i), r - 1, r - 2]);
};

/** A (C) tensor of ones on the backend of `like` (cached per backend and size). */
const onesCache = new WeakMap<object, Map<number, Tensor>>();
function ones(like: Tensor, C: number): Tensor {
  let m = onesCache.get(like.backend);
  if (!m) onesCache.set(like.backend, (m = new Map()));
  let t = m.get(C);
  if (!t || t.isDisposed) m.set(C, (t = like.backend.upload(new Float32Array(C).fill(1), [C], 'f32')));
  return t;
}

/** x (shape) filled with g broadcast along the axes g lacks (g's shape broadcasts to `shape`). */
function broadcastTo(g: Tensor, shape: readonly number[]): Tensor {
  const z = g.backend.zeros(shape, 'f32');
  const y = op.add(z, g);
  z.dispose();
  return y;
}

type Activation = OpAttrs['act_grad']['fn'];
const act = <O extends Activation>(fn: O): GradRule<O> => ({ g, xs: [x] }) => [op.actGrad(x, g, fn)];

export const GRAD_RULES: { [O in OpName]: GradEntry<O> } = {
  matmul: ({ g, xs: [a, b], attrs: { transA = false, transB }, needs }) => {
    // y = A·B with A = op(a), B = op(b): dA = g·Bᵀ, dB = Aᵀ·g.
    let da: Tensor | undefined, db: Tensor | undefined;
    if (needs[0]) {
      const dA = op.matmulT(g, b, { transB: !transB });
      da = transA ? swapLast2(dA) : dA;
      if (transA) dA.dispose();
    }
    if (needs[1]) {
      const flat = b.shape.length === 2 && a.shape.length > 2 && !transA;
      // NOTE: a weight shared by every batch row folds the rows into one product instead of summing
      // per-batch products (no batch-sized temporary).
      const a2 = flat ? rows(a) : a, g2 = flat ? rows(g) : g;
      const full = transB
        ? op.matmulT(g2, a2, { transA: true, transB: transA }) // dBᵀ = gᵀ·A
        : op.matmulT(a2, g2, { transA: !transA }); // dB = Aᵀ·g
      db = unbroadcast(full, b.shape);
      if (db !== full) full.dispose();
    }
    return [da, db];
  },
  add: ({ g, xs: [a, b], needs }) => [needs[0] ? unbroadcast(g, a.shape) : undefined, needs[1] ? unbroadcast(g, b.shape) : undefined],
  sub: ({ g, xs: [a, b], needs }) => {
    let db: Tensor | undefined;
    if (needs[1]) {
      const r = unbroadcast(g, b.shape);
      db = op.scale(r, -1);
      if (r !== g) r.dispose();
    }
    return [needs[0] ? unbroadcast(g, a.shape) : undefined, db];
  },
  mul: ({ g, xs: [a, b], needs }) => {
    const side = (other: Tensor, shape: readonly number[]) => {
      const full = op.mul(g, other);
      const r = unbroadcast(full, shape);
      if (r !== full) full.dispose();
      return r;
    };
    return [needs[0] ? side(b, a.shape) : undefined, needs[1] ? side(a, b.shape) : undefined];
  },
  div: ({ g, xs: [a, b], out, needs }) => {
    // d/da (a/b) = 1/b; d/db (a/b) = −(a/b)/b.
    let da: Tensor | undefined, db: Tensor | undefined;
    if (needs[0]) {
      const full = op.div(g, b);
      da = unbroadcast(full, a.shape);
      if (da !== full) full.dispose();
    }
    if (needs[1]) {
      const t = op.mul(g, out), t2 = op.div(t, b), t3 = op.scale(t2, -1);
      t.dispose(); t2.dispose();
      db = unbroadcast(t3, b.shape);
      if (db !== t3) t3.dispose();
    }
    return [da, db];
  },
  scale: ({ g, attrs: { s } }) => [op.scale(g, s)],
  silu: act('silu'),
  relu: act('relu'),
  gelu_erf: act('gelu_erf'),
  gelu_tanh: act('gelu_tanh'),
  softmax: ({ g, out: y }) => {
    // dx = y · (g − Σ g·y), the sum over the softmax axis.
    const gy = op.mul(g, y);
    const s = op.sum(gy);
    const d = op.sub(g, s.reshape([...s.shape, 1]));
    const dx = op.mul(y, d);
    op.dispose(gy, s, d);
    return [dx];
  },
  sum: ({ g, xs: [x] }) => [broadcastTo(g.reshape([...g.shape, 1]), x.shape)],
  max: { none: 'max is an inference-time reduction here; a gradient would need an argmax with a tie rule' },
  layernorm: ({ g, xs: [x, w, b], attrs: { eps }, needs }) => {
    const C = w.size;
    const dx = needs[0] ? op.normGrad(x, w, g, 'layernorm', eps) : undefined;
    let dw: Tensor | undefined;
    if (needs[1]) {
      const xh = op.layernorm(x, ones(x, C), undefined, eps), t = op.mul(g, xh);
      dw = op.sumTo(t, [C]);
      op.dispose(xh, t);
    }
    return [dx, dw, b && needs[2] ? op.sumTo(g, [C]) : undefined];
  },
  rmsnorm: ({ g, xs: [x, w], attrs: { eps }, needs }) => {
    const C = w.size;
    const dx = needs[0] ? op.normGrad(x, w, g, 'rmsnorm', eps) : undefined;
    let dw: Tensor | undefined;
    if (needs[1]) {
      const xh = op.rmsnorm(x, ones(x, C), eps), t = op.mul(g, xh);
      dw = op.sumTo(t, [C]);
      op.dispose(xh, t);
    }
    return [dx, dw];
  },
  // A rotation's inverse is the rotation by the opposite angles.
  rope: ({ g, attrs: { pos0, invFreq } }) => [op.rope(g, pos0, invFreq.map((f) => -f))],
  gather_rows: ({ g, xs: [table, idx], needs }) => {
    if (!needs[0]) return [];
    const z = table.backend.zeros(table.shape, 'f32');
    const d = op.indexAddRows(z, g.reshape([idx.size, table.shape[1]]), idx.reshape([idx.size]));
    z.dispose();
    return [d];
  },
  index_add_rows: ({ g, xs: [, , idx], needs }) => [needs[0] ? g : undefined, needs[1] ? op.gatherRows(g, idx) : undefined],
  topk: { none: 'topk returns integer indices', constant: true },
  sample: { none: 'sample returns integer token ids', constant: true },
  accept_draft: { none: 'accept_draft returns integer decisions and token ids', constant: true },
  gather: ({ g, xs: [x, idx] }) => [op.scatterAdd(g, idx, x.shape[x.shape.length - 1])],
  // NOTE: a cache's earlier contents get no gradient: caches are filled by the model, never trained.
  kv_write: ({ g, xs: [, x], attrs: { pos0 } }) => [undefined, op.kvRead(g, pos0, x.shape[1])],
  attention: ({ g, xs: [q, k, v], out, attrs: { pos0, scale }, needs }) => {
    // Backends that tile the gradient over key blocks need each row's softmax statistics up front.
    const stats = g.backend.wantsAttentionStats ? op.attentionStats(q, k, out, g, pos0, scale) : undefined;
    const r = (['q', 'k', 'v'] as const).map((wrt, i) => (needs[i] ? op.attentionGrad(q, k, v, g, pos0, scale, wrt, stats) : undefined));
    stats?.dispose();
    return r;
  },
  attention_probs: { none: 'attention_probs is an analysis view of attention; differentiate attention itself' },
  permute: ({ g, attrs: { perm } }) => {
    const inv = new Array<number>(perm.length);
    perm.forEach((p, i) => { inv[p] = i; });
    return [op.permute(g, inv)];
  },
  sum_to: ({ g, xs: [x] }) => [broadcastTo(g, x.shape)],
  slice: ({ g, xs: [x], attrs: { axis, start, end } }) => [op.pad(g, axis, start, x.shape[axis] - end)],
  concat: ({ g, xs: [a, b], attrs: { axis } }) => [op.slice(g, axis, 0, a.shape[axis]), op.slice(g, axis, a.shape[axis], a.shape[axis] + b.shape[axis])],
  pad: ({ g, xs: [x], attrs: { axis, before } }) => [op.slice(g, axis, before, before + x.shape[axis])],
  act_grad: { none: 'backward-only op: second derivatives are not supported' },
  norm_grad: { none: 'backward-only op: second derivatives are not supported' },
  attention_grad: { none: 'backward-only op: second derivatives are not supported' },
  attention_stats: { none: 'backward-only op: second derivatives are not supported' },
  kv_read: { none: 'backward-only op: second derivatives are not supported' },
  fused_linear: { none: 'inference-only fused op: bricks use it only when no Tape is recording' },
  fused_kv_write: { none: 'inference-only fused op: bricks use it only when no Tape is recording' },
  fused_qkv: { none: 'inference-only fused op: bricks use it only when no Tape is recording' },
  scatter_add: { none: 'backward-only op: second derivatives are not supported' },
  cross_entropy: ({ g, xs: [logits, targets] }) => [op.crossEntropyGrad(logits, targets, g)],
  cross_entropy_grad: { none: 'backward-only op: second derivatives are not supported' },
  adam_moments: { none: 'optimizer update (in place), not part of a differentiable computation' },
  adam_apply: { none: 'optimizer update (in place), not part of a differentiable computation' },
};
