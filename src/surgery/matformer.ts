// MatFormer extraction (Mix'n'Match): a standalone model whose nested FFNs are cut to chosen widths,
// keeping the first m neurons of each (rows of gate/up, columns of down) exactly as
// `ForwardOptions.ffnWidth` runs them. The new spec has plain FFNs; every weight is a fresh copy (any dtype).

import { nestedWidth } from '../bricks/index.ts';
import { Model } from '../model/assemble.ts';
import { sublayerNames, type FfnSpec, type LayerSpec, type ModelSpec } from '../model/spec.ts';
import type { HostArray } from '../tensor/dtype.ts';
import type { Tensor } from '../tensor/tensor.ts';
import { UsageError } from '../util/errors.ts';

/**
 * Cut a MatFormer model to one width for every nested FFN (a number) or one width per layer (an array
 * of `layers` widths). Each width must be one of the sublayer's `nested` widths (or its full width); plain
 * FFN sublayers must be asked for their full width. Its logits equal the parent's run with the same
 * `ffnWidth`.
 * @example
 *   const small = await sliceMatFormer(model, 256);
 *   const mixed = await sliceMatFormer(model, [512, 512, 256, 256]);
 */
export async function sliceMatFormer(model: Model, widths: number | number[]): Promise<Model> {
  const spec = model.spec;
  const L = spec.layers.length;
  if (Array.isArray(widths) && widths.length !== L)
    throw new UsageError(`sliceMatFormer: expected ${L} widths (one per layer), found ${widths.length}`, 'give one number for every layer, or a single number for all');
  const cut = new Map<string, { f: FfnSpec; m: number }>();
  const layers: LayerSpec[] = spec.layers.map((layer, i) => {
    const names = sublayerNames(layer);
    const w = Array.isArray(widths) ? widths[i] : widths;
    return {
      ...layer,
      sublayers: layer.sublayers.map((sub, j) => {
        if (sub.kind !== 'ffn') return sub;
        const prefix = `layers.${i}.${names[j]}`;
        const m = nestedWidth(sub, prefix, w);
        cut.set(prefix, { f: sub, m });
        const { nested: _nested, ...plain } = sub;
        return { ...plain, hidden: m };
      }),
    };
  });
  const newSpec: ModelSpec = { ...spec, layers };

  const be = model.backend;
  const weights = new Map<string, Tensor>();
  for (const [name, w] of model.weights) {
    const data = await be.read(w);
    const hit = /^(layers\.\d+\.[^.]+)\.(gate|up|down)\.(weight|bias)$/.exec(name);
    const c = hit ? cut.get(hit[1]) : undefined;
    if (!hit || !c || c.m === c.f.hidden) {
      weights.set(name, be.upload(data, w.shape, w.dtype));
      continue;
    }
    const [, , part, kind] = hit;
    const { m } = c;
    if (part !== 'down') {
      // gate/up (F, C) and their bias (F): the first m rows.
      const row = kind === 'weight' ? w.shape[1] : 1;
      weights.set(name, be.upload(data.slice(0, m * row), kind === 'weight' ? [m, w.shape[1]] : [m], w.dtype));
    } else if (kind === 'weight') {
      // down (C, F): the first m columns of every row.
      const [C, F] = w.shape;
      const out = new (data.constructor as new (n: number) => HostArray)(C * m);
      for (let r = 0; r < C; r++) out.set(data.subarray(r * F, r * F + m), r * m);
      weights.set(name, be.upload(out, [C, m], w.dtype));
    } else weights.set(name, be.upload(data, w.shape, w.dtype)); // down's bias (C) is unchanged
  }
  return new Model(newSpec, be, weights);
}
