// The hook through which op calls are recorded for autograd: tensor/api.ts reports every op it runs
// to the active recorder, if any. Kept apart from autograd.ts so api.ts does not import the rules.

import type { OpAttrs, OpName } from './ops.ts';
import type { Tensor } from './tensor.ts';

export interface OpRecorder {
  record<O extends OpName>(op: O, inputs: readonly Tensor[], attrs: OpAttrs[O], out: Tensor): void;
}

let active: OpRecorder | undefined;

/** The recorder ops report to now (undefined: nothing is recorded). */
export const activeRecorder = (): OpRecorder | undefined => active;

/** Make `r` the active recorder (or none); returns the previous one so callers can restore it. */
export function setRecorder(r: OpRecorder | undefined): OpRecorder | undefined {
  const prev = active;
  active = r;
  return prev;
}
