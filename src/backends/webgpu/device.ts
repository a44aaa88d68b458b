// WebGPU device acquisition: `navigator.gpu` in browsers, Dawn (the `webgpu` npm package) in Node.
// Requests the adapter's largest buffer limits (weights of real models exceed the defaults) and the
// optional features Brickwork uses (shader-f16, subgroups, timestamp-query) where offered.
// NOTE: in Node the object `create()` returns must stay referenced while the device lives
// (a collected one crashed the process), so it is kept in a module variable.

import { BrickworkError } from '../../util/errors.ts';

/** No WebGPU adapter could be found (no GPU, no driver, or WebGPU unavailable in this runtime). */
export class NoWebGpuError extends BrickworkError {
  constructor(why: string) {
    super('E_NO_WEBGPU', `WebGPU is not available: ${why}`,
      'run with --device cpu, or install a Vulkan driver; without a GPU, Debian\'s chromium package ships SwiftShader: ' +
      'apt-get install chromium libvulkan1 and set VK_ICD_FILENAMES=/usr/lib/chromium/vk_swiftshader_icd.json');
  }
}

export interface GpuContext {
  device: GPUDevice;
  adapterInfo: { vendor: string; architecture: string; description: string };
  features: Set<string>;
}

let keepAlive: unknown; // the Dawn GPU object (see NOTE above)

async function getGpu(): Promise<GPU> {
  const nav = (globalThis as { navigator?: { gpu?: GPU } }).navigator;
  if (nav?.gpu) return nav.gpu;
  if (typeof process === 'undefined' || !process.versions?.node) throw new NoWebGpuError('this browser does not expose navigator.gpu');
  let mod: { create: (o: string[]) => GPU; globals: object };
  try {
    mod = (await import('webgpu')) as unknown as typeof mod;
  } catch (e) {
    throw new NoWebGpuError(`the 'webgpu' package could not be loaded (${(e as Error).message})`);
  }
  Object.assign(globalThis, mod.globals); // GPUBufferUsage, GPUMapMode, … as in browsers
  process.env.XDG_RUNTIME_DIR ??= '/tmp'; // Dawn's Vulkan loader complains without it
  const flags = process.env.BRICKWORK_DAWN_FLAGS ? process.env.BRICKWORK_DAWN_FLAGS.split(',') : [];
  const gpu = mod.create(flags);
  keepAlive = gpu;
  return gpu;
}

/** Acquire a WebGPU device, or throw NoWebGpuError saying why. */
export async function acquireDevice(): Promise<GpuContext> {
  const gpu = await getGpu();
  const adapter = await gpu.requestAdapter({ powerPreference: 'high-performance' });
  if (!adapter) throw new NoWebGpuError('no adapter was found');
  const want: GPUFeatureName[] = (['shader-f16', 'subgroups', 'timestamp-query'] as GPUFeatureName[]).filter((f) => adapter.features.has(f));
  const L = adapter.limits;
  const device = await adapter.requestDevice({
    requiredFeatures: want,
    requiredLimits: {
      maxStorageBufferBindingSize: L.maxStorageBufferBindingSize,
      maxBufferSize: L.maxBufferSize,
      maxComputeWorkgroupStorageSize: L.maxComputeWorkgroupStorageSize,
      maxComputeInvocationsPerWorkgroup: L.maxComputeInvocationsPerWorkgroup,
      maxComputeWorkgroupSizeX: L.maxComputeWorkgroupSizeX,
      maxStorageBuffersPerShaderStage: L.maxStorageBuffersPerShaderStage,
    },
  });
  const info = adapter.info ?? ({} as GPUAdapterInfo);
  void keepAlive;
  return {
    device,
    adapterInfo: { vendor: info.vendor ?? '', architecture: info.architecture ?? '', description: info.description ?? '' },
    features: new Set(want),
  };
}
