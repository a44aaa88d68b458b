// Activation functions by spec name → one primitive op each.

import * as op from '../tensor/api.ts';
import type { OpAttrs } from '../tensor/ops.ts';
import type { Tensor } from '../tensor/tensor.ts';
import type { Activation } from '../model/spec.ts';

export const ACTIVATION_OPS: Record<Activation, (x: Tensor) => Tensor> = {
  silu: op.silu,
  relu: op.relu,
  gelu: op.geluErf,
  gelu_tanh: op.geluTanh,
};

/** The same activations as `fused_linear` names them. */
export const ACTIVATION_FUSED: Record<Activation, NonNullable<OpAttrs['fused_linear']['act']>> = {
  silu: 'silu',
  relu: 'relu',
  gelu: 'gelu_erf',
  gelu_tanh: 'gelu_tanh',
};
