// Mixture-of-experts brick: a linear router scores E experts per token, the top-k are chosen,
// their softmax weights (renormalised over the chosen ones as Mixtral does, when the spec says so)
// scale each expert's FFN output, and the outputs are summed back per token.
// Only tokens routed to an expert are run through it (gather → FFN → scale → scatter-add).
// Points: `<prefix>.router` (B,T,E) logits, `<prefix>.experts.<e>.act`.

import * as op from '../tensor/api.ts';
import type { MoeSpec } from '../model/spec.ts';
import { ffnBody, ffnBodyDecl, ffnBodyFlops } from './ffn.ts';
import { linearDecl } from './linear.ts';
import { UsageError } from '../util/errors.ts';
import type { BrickDef } from './types.ts';

export const MOE: BrickDef<MoeSpec> = {
  weights(model, m, prefix) {
    const out = linearDecl(`${prefix}.router`, m.experts, model.dModel, false);
    for (let e = 0; e < m.experts; e++) out.push(...ffnBodyDecl(model, m, `${prefix}.experts.${e}`));
    return out;
  },

  flopsPerToken: (model, m) => 2 * model.dModel * m.experts + m.topK * ffnBodyFlops(model, m),

  async forward(ctx, m, prefix, x) {
    const { B, T } = ctx;
    const C = ctx.spec.dModel, N = B * T;
    const flat = x.reshape([N, C]);
    const topK = ctx.moeTopK ?? m.topK;
    if (!(Number.isInteger(topK) && topK >= 1 && topK <= m.experts)) throw new UsageError(`${prefix}: top-k ${topK} is not between 1 and the ${m.experts} experts`, `pass a top-k in 1..${m.experts}`);
    const logits = await ctx.point(`${prefix}.router`, op.matmul(flat, ctx.weight(`${prefix}.router.weight`), true).reshape([B, T, m.experts]));
    const probs = op.softmax(logits.reshape([N, m.experts]));
    const idx = op.topk(probs, topK); // (N, k)
    let w = op.gather(probs, idx); // (N, k)
    if (m.renormalize) {
      const z = op.sum(w);
      const wn = op.div(w, z.reshape([N, 1]));
      ctx.drop(z, w);
      w = wn;
    }
    // NOTE: routing is data-dependent, so the chosen experts are read back to build each expert's
    // token list (on a GPU this is one small readback per MoE layer). The routing weights stay on the
    // device (each expert gathers its column), so gradients reach the router.
    const idxH = await ctx.backend.read(idx);
    const rows: number[][] = Array.from({ length: m.experts }, () => []);
    const slots: number[][] = Array.from({ length: m.experts }, () => []);
    for (let n = 0; n < N; n++) for (let j = 0; j < topK; j++) {
      const e = idxH[n * topK + j];
      rows[e].push(n);
      slots[e].push(n * topK + j);
    }
    ctx.moeRouted?.(prefix, probs, rows.map((r) => r.length));
    ctx.drop(logits, probs, idx);
    const wFlat = w.reshape([N * topK, 1]);
    let out = ctx.backend.zeros([N, C], 'f32');
    for (let e = 0; e < m.experts; e++) {
      if (rows[e].length === 0) continue;
      const ids = ctx.backend.upload(Int32Array.from(rows[e]), [rows[e].length], 'i32');
      const xe = op.gatherRows(flat, ids);
      const ye = await ffnBody(ctx, m, `${prefix}.experts.${e}`, xe, `${prefix}.experts.${e}.act`);
      const slotIds = ctx.backend.upload(Int32Array.from(slots[e]), [slots[e].length], 'i32');
      const we = op.gatherRows(wFlat, slotIds); // (rows, 1)
      const scaled = op.mul(ye, we);
      const next = op.indexAddRows(out, scaled, ids);
      ctx.drop(ids, slotIds, xe, ye, we, scaled, out);
      out = next;
    }
    ctx.drop(w);
    return out.reshape([B, T, C]);
  },
};
