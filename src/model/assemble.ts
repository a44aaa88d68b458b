// Assembles a ModelSpec and its weights into a runnable Model: declares every weight, checks the
// loaded ones against the declarations, and runs the forward pass layer by layer through the bricks,
// naming every intermediate (see points.ts) so callers can capture or patch it with hooks.

import { applyNorm, brickOf, nestedWidth, normDecl, normFlops, normParts, type ForwardContext, type WeightDecl } from '../bricks/index.ts';
import { activeRecorder } from '../tensor/record.ts';
import { ropeHeadDim, ropeInvFreq } from '../bricks/position.ts';
import * as op from '../tensor/api.ts';
import type { Backend, Tensor } from '../tensor/tensor.ts';
import { TensorMismatchError, UsageError } from '../util/errors.ts';
import { compilePattern, type PointMatcher } from './points.ts';
import { placementOf, sublayerNames, validateSpec, type LayerSpec, type ModelSpec, type SublayerSpec } from './spec.ts';

/** A hook sees the value at every point its pattern matches; returning a tensor replaces the value. */
export interface Hook {
  point: string;
  fn: (value: Tensor, name: string) => Tensor | void | Promise<Tensor | void>;
}

/** Decides, before a sublayer runs, whether it runs (skip policies). Names are `layers.3.ffn`. */
export type SublayerGate = (name: string, layer: number) => boolean;

/**
 * Early exit: called after every layer but the last with the residual (B, T, C), or only the
 * `logitRows` rows (B, 1, C) when those were asked for. Returning logits (same rows, (B, ·, V)) ends
 * the pass there: the remaining layers run only their KV-cache writes (see `Model.forward`).
 */
export type ExitCheck = (layer: number, resid: Tensor) => Promise<Tensor | undefined>;

export interface ForwardOptions {
  /** First position of each batch row (default 0); needs `cache` when > 0. */
  pos0?: number[];
  cache?: KVCache;
  /** Patterns of points to capture (`layers.*.resid.post`). */
  capture?: string[];
  hooks?: Hook[];
  /** Return logits only for these (batch, time) rows: one index into T per batch row. */
  logitRows?: number[];
  /** Skip sublayers for which this returns false. */
  gate?: SublayerGate;
  /** Route every token of every MoE sublayer to this many experts instead of the spec's top-k. */
  moeTopK?: number;
  /** Early exit (per token); see ExitCheck. */
  exit?: ExitCheck;
  /** Also return the MoE load-balancing loss (`ForwardResult.auxLoss`). */
  auxLoss?: boolean;
  /**
   * MatFormer: the width (number of neurons) FFN sublayers run at — one number for every FFN, or a
   * function of (layer index, sublayer prefix like `layers.3.ffn`) returning undefined for full width.
   * A width must be one of that sublayer's `nested` widths (or its full width); default: full width.
   * @example
   *   await model.forward(ids, 1, T, { ffnWidth: 256 });
   *   await model.forward(ids, 1, T, { ffnWidth: (layer) => (layer < 4 ? 512 : 256) });
   */
  ffnWidth?: number | ((layer: number, prefix: string) => number | undefined);
  /**
   * Run sublayers as fused ops (norm, projection, rope, activation and residual add in fewer
   * dispatches; see `BrickDef.fused`). Default: when the backend prefers it (WebGPU) and the pass has
   * at most 8 rows (decoding). Never while a Tape records; sublayers whose points are captured or
   * hooked, and variants without a fused form, run unfused. The values agree with the unfused pass
   * (bit for bit on the CPU).
   */
  fuse?: boolean;
}

export interface ForwardResult {
  /** (B, T, V), or (B, 1, V) when logitRows was given. */
  logits: Tensor;
  /** Captured points, in the order they were produced. */
  captured: Map<string, Tensor>;
  /** Sublayers that did not run (gated off, or after an early exit), e.g. `layers.3.ffn`. */
  skipped: string[];
  /** Layers that ran in full: `spec.layers.length` unless the pass exited early. */
  exitLayer: number;
  /**
   * With `auxLoss`, when the model has MoE sublayers: the load-balancing loss over all of them as HF
   * Mixtral computes it, E · Σₑ fₑ · Pₑ (fₑ: share of routed (token, slot) pairs that went to expert
   * e, Pₑ: mean router probability of e, both over every MoE layer and token). A scalar.
   */
  auxLoss?: Tensor;
}

/** Per-attention-sublayer key/value buffers (B, K, S, D), head-major. Owned by the runtime, filled by attention. */
export class KVCache {
  constructor(readonly slots: Map<string, { k: Tensor; v: Tensor }>, readonly batch: number, readonly capacity: number) {}
  dispose(): void {
    for (const { k, v } of this.slots.values()) { k.dispose(); v.dispose(); }
    this.slots.clear();
  }
}

/** The norms a sublayer's placement puts around it: an input norm (pre, peri), an output norm (peri), a post norm. */
function normsOf(layer: LayerSpec, sub: SublayerSpec) {
  const p = placementOf(layer, sub);
  return { input: p === 'pre' || p === 'peri', out: p === 'peri', post: p === 'post' };
}

/** Number of C-wide norms around a sublayer (each has the weights `normDecl` declares). */
function normCount(layer: LayerSpec, sub: SublayerSpec): number {
  const n = normsOf(layer, sub);
  return Number(n.input) + Number(n.out) + Number(n.post);
}

/** Whether a layer scales its input norms (LayerNorm Scaling). */
const scalesNorms = (layer: LayerSpec) => layer.normScale !== undefined && layer.normScale !== 1;

/** Every weight a spec needs, in a stable order. */
export function declareWeights(spec: ModelSpec): WeightDecl[] {
  const C = spec.dModel;
  const out: WeightDecl[] = [{ name: 'embed.weight', shape: [spec.vocabSize, C] }];
  if (spec.learnedPositions) out.push({ name: 'pos_embed.weight', shape: [spec.maxContext, C] });
  spec.layers.forEach((layer, i) => {
    const names = sublayerNames(layer);
    layer.sublayers.forEach((sub, j) => {
      const prefix = `layers.${i}.${names[j]}`;
      // NOTE: the input norm (pre/peri) and the post norm share the name `.norm`: a sublayer has one or the other.
      if (normCount(layer, sub) > 0) out.push(...normDecl(spec, `${prefix}.norm`));
      if (normsOf(layer, sub).out) out.push(...normDecl(spec, `${prefix}.out_norm`));
      out.push(...brickOf(sub).weights(spec, sub, prefix));
    });
  });
  if (spec.finalNorm) out.push(...normDecl(spec, 'final_norm'));
  if (!spec.tiedEmbeddings) out.push({ name: 'lm_head.weight', shape: [spec.vocabSize, C] });
  return out;
}

/** Parameters and FLOPs per token of every brick, for `inspect` and reports. */
export interface BrickCost { name: string; kind: string; params: number; flopsPerToken: number }

export function brickCosts(spec: ModelSpec, ctxLen = spec.maxContext): BrickCost[] {
  const numel = (d: WeightDecl) => d.shape.reduce((p, x) => p * x, 1);
  const out: BrickCost[] = [{ name: 'embed', kind: 'embed', params: spec.vocabSize * spec.dModel + (spec.learnedPositions ? spec.maxContext * spec.dModel : 0), flopsPerToken: 0 }];
  spec.layers.forEach((layer, i) => {
    const names = sublayerNames(layer);
    layer.sublayers.forEach((sub, j) => {
      const prefix = `layers.${i}.${names[j]}`;
      const nNorms = normCount(layer, sub);
      const norms = nNorms ? normDecl(spec, `${prefix}.norm`).reduce((p, d) => p + numel(d), 0) * nNorms : 0;
      const scaling = normsOf(layer, sub).input && scalesNorms(layer) ? spec.dModel : 0;
      out.push({
        name: prefix, kind: sub.kind,
        params: brickOf(sub).weights(spec, sub, prefix).reduce((p, d) => p + numel(d), 0) + norms,
        flopsPerToken: brickOf(sub).flopsPerToken(spec, sub, ctxLen) + nNorms * normFlops(spec) + scaling,
      });
    });
  });
  out.push({
    name: 'head', kind: 'head',
    params: (spec.finalNorm ? spec.dModel * (spec.norm.kind === 'layernorm' && spec.norm.bias ? 2 : 1) : 0) + (spec.tiedEmbeddings ? 0 : spec.vocabSize * spec.dModel),
    flopsPerToken: 2 * spec.vocabSize * spec.dModel + (spec.finalNorm ? normFlops(spec) : 0),
  });
  return out;
}

/** A spec, its weights on a backend, ready to run. */
export class Model {
  readonly spec: ModelSpec;
  readonly backend: Backend;
  readonly weights: Map<string, Tensor>;
  /** The same tensors as `weights`, for identity checks. */
  readonly weightSet: Set<Tensor>;
  readonly invFreq: number[];

  /** Checks every declared weight is present with its shape; extra weights are an error too. */
  constructor(spec: ModelSpec, backend: Backend, weights: Map<string, Tensor>) {
    this.spec = validateSpec(spec);
    this.backend = backend;
    const decls = declareWeights(spec);
    const declared = new Set(decls.map((d) => d.name));
    for (const d of decls) {
      const w = weights.get(d.name);
      if (!w) throw new TensorMismatchError(d.name, `missing; the spec needs shape [${d.shape.join(', ')}]`, 'the checkpoint does not match its config/spec');
      if (w.shape.join() !== d.shape.join()) throw new TensorMismatchError(d.name, `expected shape [${d.shape.join(', ')}], found [${w.shape.join(', ')}]`, 'the checkpoint does not match its config/spec');
    }
    for (const name of weights.keys()) if (!declared.has(name)) throw new TensorMismatchError(name, 'not used by the spec', 'remove it or fix the spec');
    this.weights = weights;
    this.weightSet = new Set(weights.values());
    const hd = ropeHeadDim(spec);
    this.invFreq = spec.rope && hd ? ropeInvFreq(spec.rope, hd) : [];
  }

  get numParams(): number {
    let n = 0;
    for (const w of this.weights.values()) n += w.size;
    return n;
  }

  /** An empty KV cache for `batch` rows of up to `capacity` positions. */
  newCache(batch: number, capacity = this.spec.maxContext): KVCache {
    const slots = new Map<string, { k: Tensor; v: Tensor }>();
    this.spec.layers.forEach((layer, i) => {
      const names = sublayerNames(layer);
      layer.sublayers.forEach((sub, j) => {
        if (sub.kind !== 'attn') return;
        const shape = [batch, sub.kvHeads, capacity, sub.headDim];
        slots.set(`layers.${i}.${names[j]}`, { k: this.backend.zeros(shape, 'f32'), v: this.backend.zeros(shape, 'f32') });
      });
    });
    return new KVCache(slots, batch, capacity);
  }

  /**
   * Run the model on token ids (B rows of T ids each, row-major). The ids may also be an i32 tensor
   * on the model's backend (e.g. the argmax of the previous pass, left on the GPU); its values are not
   * range-checked, since reading them would wait for the device.
   * @example
   *   const { logits } = await model.forward(Int32Array.from(ids), 1, ids.length);
   */
  async forward(ids: Int32Array | Tensor, B: number, T: number, opts: ForwardOptions = {}): Promise<ForwardResult> {
    const ctx = this.context(B, T, opts);
    return this.rest(ctx, 0, await this.embed(ctx, ids));
  }

  /**
   * The first `layers` layers of a forward pass: embeds the ids, runs layers 0..layers−1 (writing their
   * KV cache entries) and returns the residual (B, T, C) that layer `layers` takes as its input, with
   * what was captured on the way. Pair it with `forwardFrom` to run a pass in two parts.
   * @example
   *   const { resid } = await model.prefix(ids, 1, T, 4, { cache, pos0: [p] });
   *   const { logits } = await model.forwardFrom(4, resid, 1, T, { cache, pos0: [p] });
   */
  async prefix(ids: Int32Array | Tensor, B: number, T: number, layers: number, opts: Omit<ForwardOptions, 'exit' | 'logitRows' | 'auxLoss'> = {}): Promise<{ resid: Tensor; captured: Map<string, Tensor>; skipped: string[] }> {
    const L = this.spec.layers.length;
    if (!(Number.isInteger(layers) && layers >= 0 && layers <= L)) throw new UsageError(`prefix: layers must be an integer in 0..${L}, found ${layers}`);
    const ctx = this.context(B, T, opts);
    let x = await this.embed(ctx, ids);
    for (let i = 0; i < layers; i++) x = await this.layer(ctx, i, x);
    return { resid: x, captured: ctx.captured, skipped: ctx.skipped };
  }

  /**
   * The rest of a forward pass from layer `layer` on: `resid` (B, T, C) is that layer's input (its
   * `resid.pre`, the `resid.post` of the layer before, or what `prefix` returned), computed earlier. Layers
   * below `layer` do not run, so their KV cache entries at these positions must already be written.
   * `resid` stays the caller's. At `layer` = the number of layers only the final norm and head run.
   */
  async forwardFrom(layer: number, resid: Tensor, B: number, T: number, opts: ForwardOptions = {}): Promise<ForwardResult> {
    const L = this.spec.layers.length, C = this.spec.dModel;
    if (!(Number.isInteger(layer) && layer >= 0 && layer <= L)) throw new UsageError(`forwardFrom: layer must be an integer in 0..${L}, found ${layer}`);
    if (resid.shape.join() !== [B, T, C].join() || resid.dtype !== 'f32' || resid.backend !== this.backend)
      throw new UsageError(`forwardFrom: the residual must be f32 [${B}, ${T}, ${C}] on backend '${this.backend.name}', found ${resid.dtype} [${resid.shape.join(', ')}] on '${resid.backend.name}'`);
    const ctx = this.context(B, T, opts);
    ctx.keep(resid);
    return this.rest(ctx, layer, resid);
  }

  /** Checks the pass's shape and positions and makes its context. */
  private context(B: number, T: number, opts: ForwardOptions): Ctx {
    const pos0 = opts.pos0 ?? new Array(B).fill(0);
    for (const p of pos0) if (p + T > this.spec.maxContext) throw new Error(`forward: positions up to ${p + T} exceed maxContext ${this.spec.maxContext}`);
    return new Ctx(this, B, T, pos0, opts);
  }

  /** The embedding (plus learned positions) of B×T ids: `embed.out`. */
  private async embed(ctx: Ctx, ids: Int32Array | Tensor): Promise<Tensor> {
    const spec = this.spec, { B, T, pos0 } = ctx;
    const onDevice = !(ids instanceof Int32Array);
    const n = onDevice ? ids.size : ids.length;
    if (n !== B * T) throw new Error(`forward: ${n} ids for B=${B}, T=${T}`);
    if (onDevice && (ids.dtype !== 'i32' || ids.backend !== this.backend))
      throw new Error(`forward: token ids must be an i32 tensor on backend '${this.backend.name}', got ${ids.dtype} on '${ids.backend.name}'`);
    if (!onDevice) for (const id of ids) if (!(id >= 0 && id < spec.vocabSize)) throw new Error(`forward: token id ${id} outside the vocabulary 0..${spec.vocabSize - 1}`);
    const be = this.backend;

    const idT = onDevice ? ids.reshape([B, T]) : be.upload(ids, [B, T], 'i32');
    let x = op.gatherRows(this.weights.get('embed.weight')!, idT);
    if (!onDevice) ctx.drop(idT);
    if (spec.learnedPositions) {
      const pos = new Int32Array(B * T);
      for (let b = 0; b < B; b++) for (let t = 0; t < T; t++) pos[b * T + t] = pos0[b] + t;
      const posT = be.upload(pos, [B, T], 'i32');
      const pe = op.gatherRows(this.weights.get('pos_embed.weight')!, posT);
      const x2 = op.add(x, pe);
      ctx.drop(posT, pe, x);
      x = x2;
    }
    return ctx.point('embed.out', x);
  }

  /** Layers `start`.. (with the early-exit checks), the final norm and the head, from the residual x. */
  private async rest(ctx: Ctx, start: number, x: Tensor): Promise<ForwardResult> {
    const spec = this.spec, opts = ctx.opts, { B, T } = ctx;
    const L = spec.layers.length;
    for (let i = start; i < L; i++) {
      x = await this.layer(ctx, i, x);
      if (!opts.exit || i === L - 1) continue;
      const rows = opts.logitRows ? this.pickRows(x, opts.logitRows, B, T) : x;
      const exitLogits = await opts.exit(i, rows);
      if (rows !== x) ctx.drop(rows);
      if (!exitLogits) continue;
      // NOTE: the layers after an exit still owe later tokens their keys and values. As CALM does, the
      // exit residual is copied up to every skipped layer and only its K/V projections run on it, so
      // the cache is filled at the cost of two small matmuls per skipped attention sublayer.
      for (let j = i + 1; j < L; j++) await this.fillCache(ctx, j, x);
      ctx.drop(x);
      return { logits: await ctx.point('logits', exitLogits), captured: ctx.captured, skipped: ctx.skipped, exitLayer: i + 1, auxLoss: ctx.auxLoss() };
    }

    if (ctx.fusing && spec.finalNorm && !ctx.wants('final.norm')) {
      // The final norm folds into the head (rows picked first: both are per row).
      const rows = opts.logitRows ? this.pickRows(x, opts.logitRows, B, T) : x;
      const logits = await ctx.point('logits', op.fusedLinear({ x: rows, w: this.headWeight(), norm: normParts(ctx, 'final_norm') }));
      ctx.drop(x);
      if (rows !== x) ctx.drop(rows);
      return { logits, captured: ctx.captured, skipped: ctx.skipped, exitLayer: L, auxLoss: ctx.auxLoss() };
    }
    let h = x;
    if (spec.finalNorm) {
      h = await ctx.point('final.norm', applyNorm(ctx, 'final_norm', x));
      ctx.drop(x);
    }
    if (opts.logitRows) {
      const picked = this.pickRows(h, opts.logitRows, B, T);
      if (picked !== h) ctx.drop(h);
      h = picked;
    }
    const logits = await ctx.point('logits', op.matmul(h, this.headWeight(), true));
    ctx.drop(h);
    return { logits, captured: ctx.captured, skipped: ctx.skipped, exitLayer: L, auxLoss: ctx.auxLoss() };
  }

  /**
   * The logit lens: the final norm and the LM head applied to a residual (…, C) → (…, V).
   * @example
   *   const { captured } = await model.forward(ids, 1, T, { capture: ['layers.3.resid.post'] });
   *   const early = model.lens(captured.get('layers.3.resid.post')!);
   */
  lens(resid: Tensor): Tensor {
    if (!this.spec.finalNorm) return op.matmul(resid, this.headWeight(), true);
    const h = applyNorm({ spec: this.spec, weight: (name) => this.weights.get(name)! }, 'final_norm', resid);
    const logits = op.matmul(h, this.headWeight(), true);
    h.dispose();
    return logits;
  }

  private headWeight(): Tensor {
    return this.spec.tiedEmbeddings ? this.weights.get('embed.weight')! : this.weights.get('lm_head.weight')!;
  }

  /** Row `rows[b]` of every batch entry of x (B, T, C) → (B, 1, C); x itself when T is 1 (nothing to pick). */
  private pickRows(x: Tensor, rows: number[], B: number, T: number): Tensor {
    if (T === 1 && rows.every((r) => r === 0)) return x;
    const idx = this.backend.upload(Int32Array.from(rows.map((t, b) => b * T + t)), [B, 1], 'i32');
    const picked = op.gatherRows(x.reshape([B * T, this.spec.dModel]), idx);
    idx.dispose();
    return picked;
  }

  /** After an early exit: write layer i's keys/values computed from the exit residual x; nothing else runs. */
  private async fillCache(ctx: Ctx, i: number, x: Tensor): Promise<void> {
    const layer = this.spec.layers[i];
    const names = sublayerNames(layer);
    for (let j = 0; j < layer.sublayers.length; j++) {
      const sub = layer.sublayers[j];
      const prefix = `layers.${i}.${names[j]}`;
      ctx.skipped.push(prefix);
      const fill = brickOf(sub).fillCache;
      if (!fill || !ctx.kv(prefix)) continue;
      const h = this.inputNorm(ctx, layer, sub, prefix, x);
      await fill(ctx, sub, prefix, h);
      if (h !== x) ctx.drop(h);
    }
  }

  /** A sublayer's input: its input norm (pre/peri, times the layer's norm scale) applied to x, or x itself. */
  private inputNorm(ctx: Ctx, layer: LayerSpec, sub: SublayerSpec, prefix: string, x: Tensor): Tensor {
    if (!normsOf(layer, sub).input) return x;
    const h = applyNorm(ctx, `${prefix}.norm`, x);
    if (!scalesNorms(layer)) return h;
    const scaled = op.scale(h, layer.normScale!);
    ctx.drop(h);
    return scaled;
  }

  private async layer(ctx: Ctx, i: number, x: Tensor): Promise<Tensor> {
    const layer = this.spec.layers[i];
    const names = sublayerNames(layer);
    const lp = `layers.${i}`;
    x = await ctx.point(`${lp}.resid.pre`, x);
    const run = async (j: number, input: Tensor) => {
      const sub = layer.sublayers[j];
      const prefix = `${lp}.${names[j]}`;
      let h = this.inputNorm(ctx, layer, sub, prefix, input);
      h = await ctx.point(`${prefix}.in`, h);
      let y = await brickOf(sub).forward(ctx, sub, prefix, h);
      if (h !== input) ctx.drop(h);
      if (normsOf(layer, sub).out) {
        const y2 = applyNorm(ctx, `${prefix}.out_norm`, y);
        ctx.drop(y);
        y = y2;
      }
      return ctx.point(`${prefix}.out`, y);
    };
    // The fused form of sublayer j: residual + sublayer(input), or undefined (run it unfused).
    const fused = async (j: number, input: Tensor, residual: Tensor): Promise<Tensor | undefined> => {
      const sub = layer.sublayers[j];
      const brick = brickOf(sub);
      const prefix = `${lp}.${names[j]}`;
      const n = normsOf(layer, sub);
      if (!ctx.fusing || !brick.fused || n.out || n.post) return undefined;
      if (['in', 'out', ...(brick.points ?? [])].some((p) => ctx.wants(`${prefix}.${p}`))) return undefined;
      const norm = n.input ? normParts(ctx, `${prefix}.norm`, scalesNorms(layer) ? layer.normScale : 1) : undefined;
      return brick.fused(ctx, sub, prefix, input, { norm, residual });
    };
    const gate = ctx.opts.gate;
    const active = layer.sublayers.map((_, j) => !gate || gate(`${lp}.${names[j]}`, i));
    active.forEach((on, j) => { if (!on) ctx.skipped.push(`${lp}.${names[j]}`); });

    if (layer.wiring === 'parallel') {
      let acc = x;
      for (let j = 0; j < layer.sublayers.length; j++) {
        if (!active[j]) continue;
        let next = await fused(j, x, acc);
        if (!next) {
          const y = await run(j, x);
          next = op.add(acc, y);
          ctx.drop(y);
        }
        if (acc !== x) ctx.drop(acc);
        acc = next;
      }
      if (acc !== x) ctx.drop(x);
      return ctx.point(`${lp}.resid.post`, acc);
    }

    for (let j = 0; j < layer.sublayers.length; j++) {
      if (active[j]) {
        let next = await fused(j, x, x);
        if (!next) {
          const y = await run(j, x);
          next = op.add(x, y);
          ctx.drop(y);
          if (normsOf(layer, layer.sublayers[j]).post) {
            const normed = applyNorm(ctx, `${lp}.${names[j]}.norm`, next);
            ctx.drop(next);
            next = normed;
          }
        }
        ctx.drop(x);
        x = next;
      }
      if (j < layer.sublayers.length - 1) x = await ctx.point(layer.sublayers.length === 2 ? `${lp}.resid.mid` : `${lp}.resid.mid.${j}`, x);
    }
    return ctx.point(`${lp}.resid.post`, x);
  }
}

/** The ForwardContext of one forward pass. */
class Ctx implements ForwardContext {
  readonly spec: ModelSpec;
  readonly backend: Backend;
  readonly invFreq: number[];
  readonly captured = new Map<string, Tensor>();
  readonly skipped: string[] = [];
  readonly moeTopK?: number;
  /** Whether sublayers may run fused (ForwardOptions.fuse). */
  readonly fusing: boolean;
  /** Resolved MatFormer widths by FFN prefix (only when `ffnWidth` was given). */
  private readonly widths = new Map<string, number>();
  private readonly kept = new Set<Tensor>();
  private readonly captureMatchers: PointMatcher[];
  private readonly hooks: { match: PointMatcher; hook: Hook }[];

  constructor(private readonly model: Model, readonly B: number, readonly T: number, readonly pos0: number[], readonly opts: ForwardOptions) {
    this.spec = model.spec;
    this.backend = model.backend;
    this.invFreq = model.invFreq;
    this.moeTopK = opts.moeTopK;
    this.fusing = !activeRecorder() && (opts.fuse ?? (model.backend.prefersFusion === true && B * T <= 8));
    this.captureMatchers = (opts.capture ?? []).map(compilePattern);
    this.hooks = (opts.hooks ?? []).map((hook) => ({ match: compilePattern(hook.point), hook }));
    // Every asked width is checked before anything runs, so a bad one fails fast and names its sublayer.
    const fw = opts.ffnWidth;
    if (fw !== undefined) this.spec.layers.forEach((layer, i) => {
      const names = sublayerNames(layer);
      layer.sublayers.forEach((sub, j) => {
        if (sub.kind !== 'ffn') return;
        const prefix = `layers.${i}.${names[j]}`;
        this.widths.set(prefix, nestedWidth(sub, prefix, typeof fw === 'number' ? fw : fw(i, prefix)));
      });
    });
  }

  ffnWidth(prefix: string): number | undefined {
    return this.widths.get(prefix);
  }

  weight(name: string): Tensor {
    const w = this.model.weights.get(name);
    if (!w) throw new TensorMismatchError(name, 'missing from the loaded weights', 'the spec and the weights disagree');
    return w;
  }

  hasWeight(name: string): boolean {
    return this.model.weights.has(name);
  }

  wants(name: string): boolean {
    return this.captureMatchers.some((m) => m(name)) || this.hooks.some((h) => h.match(name));
  }

  async point(name: string, t: Tensor): Promise<Tensor> {
    for (const { match, hook } of this.hooks) {
      if (!match(name)) continue;
      const r = await hook.fn(t, name);
      // NOTE: the replaced value is not disposed here: the caller may still hold it (e.g. a residual).
      if (r) t = r;
    }
    if (this.captureMatchers.some((m) => m(name))) {
      this.captured.set(name, t);
      this.kept.add(t.viewOf ?? t);
    }
    return t;
  }

  kv(prefix: string) {
    return this.opts.cache?.slots.get(prefix);
  }

  private routed?: { probSum: Tensor; counts: number[]; tokens: number };

  moeRouted(prefix: string, probs: Tensor, counts: number[]): void {
    if (!this.opts.auxLoss) return;
    const E = counts.length;
    const s = op.sumTo(probs, [E]);
    const r = this.routed;
    if (!r) { this.routed = { probSum: s, counts: [...counts], tokens: probs.shape[0] }; return; }
    if (r.counts.length !== E) throw new UsageError(`${prefix}: ${E} experts, but an earlier MoE sublayer has ${r.counts.length}`, 'the load-balancing loss needs the same number of experts in every MoE sublayer');
    const sum = op.add(r.probSum, s);
    this.drop(r.probSum, s);
    r.probSum = sum;
    counts.forEach((c, e) => { r.counts[e] += c; });
    r.tokens += probs.shape[0];
  }

  /** The load-balancing loss from what the MoE sublayers reported (undefined without any). */
  auxLoss(): Tensor | undefined {
    const r = this.routed;
    if (!r) return undefined;
    const E = r.counts.length;
    // HF: mean over tokens of the top-k one-hot picks (summed over slots) · mean router probability:
    // E · Σₑ (Cₑ / N) · (Sₑ / N), with Cₑ picks of e and Sₑ its summed probability over N tokens.
    const counts = this.backend.upload(Float32Array.from(r.counts), [E], 'f32');
    const cs = op.mul(r.probSum, counts);
    const total = op.sum(cs);
    const loss = op.scale(total, E / (r.tokens * r.tokens));
    this.drop(counts, cs, total, r.probSum);
    this.routed = undefined;
    return loss;
  }

  /** Never dispose t in this pass (the caller's input). */
  keep(t: Tensor): void {
    this.kept.add(t.viewOf ?? t);
  }

  drop(...ts: (Tensor | undefined)[]): void {
    for (const t of ts) {
      if (!t || this.kept.has(t.viewOf ?? t) || this.isWeight(t)) continue;
      t.dispose();
    }
  }

  private isWeight(t: Tensor): boolean {
    return this.model.weightSet.has(t.viewOf ?? t);
  }
}
