// Reverse-mode autograd over the primitive ops. A Tape, while active, records every op whose inputs
// depend on a watched tensor (the parameters), pinning the tensors backward will read; `backward`
// walks the record in reverse applying GRAD_RULES and unpins each tensor as soon as the last entry
// that reads it is done, so activation memory is given back during backward, not after it.
// Views (reshape) share their base's gradient. One tape is active at a time (like torch's grad mode).

import { GRAD_RULES, type GradRule } from './grad.ts';
import type { OpAttrs, OpName } from './ops.ts';
import { IN_PLACE_OPS } from './ops.ts';
import { activeRecorder, setRecorder, type OpRecorder } from './record.ts';
import type { Tensor } from './tensor.ts';
import { BrickworkError } from '../util/errors.ts';
import * as op from './api.ts';

/** A gradient was asked through an op that has none. */
export class NoGradientError extends BrickworkError {
  constructor(opName: OpName, reason: string) {
    super('E_NO_GRAD', `cannot differentiate through '${opName}': ${reason}`, 'keep this op out of the computation being differentiated, or compute it outside the tape');
  }
}

interface Entry {
  op: OpName;
  inputs: readonly Tensor[];
  attrs: unknown;
  out: Tensor;
}

const root = (t: Tensor) => t.viewOf ?? t;

/**
 * Records a computation for reverse-mode differentiation.
 * @example
 *   const tape = new Tape(model.weights.values());
 *   const loss = await tape.run(() => lossOf(model, ids, targets));
 *   const grads = tape.backward(loss); // Map: parameter → gradient (same shape)
 */
export class Tape implements OpRecorder {
  private readonly entries: Entry[] = [];
  /** Roots of the tensors that depend on a watched tensor. */
  private readonly live = new Set<Tensor>();
  private readonly watched: Set<Tensor>;
  private done = false;

  constructor(params: Iterable<Tensor>) {
    this.watched = new Set([...params].map(root));
    for (const p of this.watched) this.live.add(p);
  }

  record<O extends OpName>(opName: O, inputs: readonly Tensor[], attrs: OpAttrs[O], out: Tensor): void {
    if (this.done) return;
    if (!inputs.some((x) => this.live.has(root(x)))) return;
    const rule = GRAD_RULES[opName];
    if ('none' in rule) {
      if (rule.constant) return;
      throw new NoGradientError(opName, rule.none);
    }
    for (const x of inputs) x.pin();
    out.pin();
    this.live.add(root(out));
    this.entries.push({ op: opName, inputs, attrs, out });
  }

  /** Run fn with this tape recording (refused while another Tape is recording). */
  async run<T>(fn: () => Promise<T> | T): Promise<T> {
    const prev = activeRecorder();
    // NOTE: ops report to one process-wide recorder, so two recordings in flight at once (two
    // unawaited training steps) would mix their records; refuse instead.
    if (prev && prev !== this) throw new BrickworkError('E_TAPE_BUSY', 'another Tape is already recording', 'await one training step before starting the next; one Tape records at a time per process');
    setRecorder(this);
    try {
      return await fn();
    } finally {
      setRecorder(prev);
    }
  }

  /** Number of recorded ops (for tests and reports). */
  get length(): number {
    return this.entries.length;
  }

  /**
   * Gradients of the scalar `loss` (or of Σ seed·loss when a seed of loss's shape is given) with
   * respect to every watched tensor it depends on. Frees the recording as it goes; call once.
   */
  backward(loss: Tensor, seed?: Tensor): Map<Tensor, Tensor> {
    if (this.done) throw new Error('backward: this tape was already used; record a new one');
    this.done = true;
    const prev = setRecorder(undefined);
    // NOTE: a rule may hand the same tensor to several inputs (add passes g through to both), so
    // gradient tensors are reference counted by storage and disposed when no input holds them.
    const grads = new Map<Tensor, Tensor>();
    const refs = new Map<Tensor, number>();
    let pending = this.entries.length - 1; // entries not yet unpinned are 0..pending
    const hold = (t: Tensor) => refs.set(root(t), (refs.get(root(t)) ?? 0) + 1);
    const release = (t: Tensor) => {
      const n = (refs.get(root(t)) ?? 0) - 1;
      if (n > 0) { refs.set(root(t), n); return; }
      refs.delete(root(t));
      t.dispose();
    };
    try {
      if (!this.live.has(root(loss))) throw new Error('backward: the loss does not depend on any watched tensor');
      const s = seed ?? loss.backend.upload(new Float32Array(loss.size).fill(1), loss.shape, 'f32');
      grads.set(root(loss), s.reshape(root(loss).shape));
      hold(s);
      for (; pending >= 0; pending--) {
        const e = this.entries[pending];
        const key = root(e.out);
        const gOut = grads.get(key);
        if (gOut) {
          grads.delete(key);
          const g = same(gOut.shape, e.out.shape) ? gOut : gOut.reshape(e.out.shape);
          const needs = e.inputs.map((x, j) => this.live.has(root(x)) && x.dtype === 'f32' && !(j === 0 && IN_PLACE_OPS.has(e.op)));
          const rule = GRAD_RULES[e.op] as GradRule<OpName>;
          const gi = rule({ g, xs: e.inputs, out: e.out, attrs: e.attrs as never, needs });
          e.inputs.forEach((x, j) => {
            const d = gi[j];
            if (!d || !needs[j]) return;
            const k = root(x);
            const dd = same(d.shape, k.shape) ? d : d.reshape(k.shape);
            const before = grads.get(k);
            if (!before) { grads.set(k, dd); hold(dd); return; }
            const sum = op.add(before, dd);
            release(before);
            grads.set(k, sum);
            hold(sum);
          });
          // Returned tensors nobody took (and that are not g itself) are freed; then g is let go.
          for (const d of new Set(gi)) if (d && !refs.has(root(d)) && root(d) !== root(gOut)) d.dispose();
          release(gOut);
        }
        for (const x of e.inputs) x.unpin();
        e.out.unpin();
      }
    } finally {
      setRecorder(prev);
      // When a rule threw midway, the entries not reached still hold pins.
      for (; pending >= 0; pending--) {
        for (const x of this.entries[pending].inputs) x.unpin();
        this.entries[pending].out.unpin();
      }
      this.entries.length = 0;
    }
    const out = new Map<Tensor, Tensor>();
    const given = new Set<Tensor>();
    for (const [k, g] of grads) {
      if (!this.watched.has(k)) { release(g); continue; }
      // Each parameter gets its own tensor, so disposing one gradient never frees another's.
      if (given.has(root(g))) out.set(k, op.scale(g, 1));
      else { out.set(k, g); given.add(root(g)); }
    }
    return out;
  }
}

const same = (a: readonly number[], b: readonly number[]) => a.length === b.length && a.every((d, i) => d === b[i]);
