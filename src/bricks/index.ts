// The brick table: one BrickDef per sublayer kind. Adding a kind to SublayerSpec makes tsc ask for
// an entry here.

import type { SublayerKind, SublayerSpec } from '../model/spec.ts';
import { ATTENTION } from './attention.ts';
import { FFN } from './ffn.ts';
import { MOE } from './moe.ts';
import type { BrickDef } from './types.ts';

export const BRICKS: { [K in SublayerKind]: BrickDef<Extract<SublayerSpec, { kind: K }>> } = {
  attn: ATTENTION,
  ffn: FFN,
  moe: MOE,
};

/** The brick of a sublayer, typed for that sublayer. */
export function brickOf<S extends SublayerSpec>(sub: S): BrickDef<S> {
  return BRICKS[sub.kind] as unknown as BrickDef<S>;
}

export type { BrickDef, ForwardContext, FusedIo, WeightDecl } from './types.ts';
export { applyNorm, normDecl, normFlops, normParts } from './norm.ts';
export { nestedWidth } from './ffn.ts';
