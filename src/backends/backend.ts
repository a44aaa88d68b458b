// Backend registry: named factories, and `getBackend(name)` for 'cpu', 'cpu-reference' (and
// 'webgpu' once registered). The interface itself lives in tensor/tensor.ts.

import type { Backend } from '../tensor/tensor.ts';
import { UsageError } from '../util/errors.ts';
import { CpuBackend } from './cpu/backend.ts';

export type { Backend } from '../tensor/tensor.ts';

type Factory = () => Backend | Promise<Backend>;
const factories = new Map<string, Factory>([
  ['cpu', () => new CpuBackend()],
  ['cpu-reference', () => new CpuBackend({ reference: true })],
]);

/** Register a backend factory under a name (used by optional backends such as WebGPU). */
export function registerBackend(name: string, factory: Factory): void {
  factories.set(name, factory);
}

/** Create a backend by name. */
export async function getBackend(name = 'cpu'): Promise<Backend> {
  const f = factories.get(name);
  if (!f) throw new UsageError(`unknown backend '${name}'`, `choose one of: ${[...factories.keys()].join(', ')}`);
  return f();
}

export { CpuBackend };
