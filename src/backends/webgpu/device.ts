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
  /** WGSL language features of the implementation (navigator.gpu.wgslLanguageFeatures), e.g. `subgroup_id`. */
  wgslFeatures: Set<string>;
  /** A fallback adapter (WebGPU's term for one with large performance caveats: a CPU implementation such as SwiftShader). */
  fallback: boolean;
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
  const gpu = mod.create(dawnFlags(process.env.BRICKWORK_DAWN_FLAGS));
  keepAlive = gpu;
  return gpu;
}

/** Brickwork's default Dawn toggles in Node (see dawnFlags). */
const DAWN_DEFAULTS: [string, string][] = [
  ['disable-dawn-features', 'timestamp_quantization'],
  ['enable-dawn-features', 'disable_workgroup_init'],
];

/**
 * Dawn's options in Node: `BRICKWORK_DAWN_FLAGS` (comma-separated `key=value`; a word without `=`
 * continues the previous value, so `enable-dawn-features=a,b` keeps its list) merged with Brickwork's
 * defaults, each of which gives way where the flags name the same toggle in either list:
 * - `timestamp_quantization` off: by default Dawn rounds timestamp queries down to multiples of
 *   65,536 ns (a browser's timing-attack mitigation), which turns a per-dispatch profile of
 *   microsecond kernels into noise;
 * - `disable_workgroup_init` on: Dawn otherwise zeroes every workgroup's shared memory before the
 *   workgroup runs (a store loop and a barrier per workgroup; a third of the GPU time of small decode and
 *   prefill passes on SwiftShader). Every kernel here writes its shared memory before reading it, and the
 *   test suite runs with this default. Browsers keep the zeroing; to keep it in Node too:
 *   `BRICKWORK_DAWN_FLAGS=disable-dawn-features=disable_workgroup_init`.
 * Robust buffer access (Dawn clamping every storage-buffer index) stays on unless the flags say
 * `enable-dawn-features=disable_robustness`; the test suite also runs clean under Brickwork's own bounds
 * checker (bounds.ts), which is what would make turning it off safe.
 */
export function dawnFlags(env: string | undefined): string[] {
  const opts = new Map<string, string[]>();
  let last: string[] | undefined;
  for (const word of (env ?? '').split(',').map((w) => w.trim()).filter(Boolean)) {
    const eq = word.indexOf('=');
    if (eq < 0) {
      if (!last) throw new BrickworkError('E_DAWN_FLAGS', `BRICKWORK_DAWN_FLAGS starts with '${word}', which is not key=value`, "write it as key=value[,key=value…], e.g. backend=null or enable-dawn-features=dump_shaders,disable_symbol_renaming");
      last.push(word);
      continue;
    }
    const key = word.slice(0, eq);
    last = opts.get(key) ?? [];
    if (eq + 1 < word.length) last.push(word.slice(eq + 1));
    opts.set(key, last);
  }
  const named = new Set([...(opts.get('enable-dawn-features') ?? []), ...(opts.get('disable-dawn-features') ?? [])]);
  for (const [list, toggle] of DAWN_DEFAULTS) {
    if (named.has(toggle)) continue;
    opts.set(list, [...(opts.get(list) ?? []), toggle]);
  }
  return [...opts].map(([k, v]) => `${k}=${v.join(',')}`);
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
  // Where it lives moved from the adapter (older browsers) to its info.
  const fallback = (info as { isFallbackAdapter?: boolean }).isFallbackAdapter ?? (adapter as { isFallbackAdapter?: boolean }).isFallbackAdapter ?? false;
  void keepAlive;
  return {
    device,
    adapterInfo: { vendor: info.vendor ?? '', architecture: info.architecture ?? '', description: info.description ?? '' },
    features: new Set(want),
    wgslFeatures: new Set(gpu.wgslLanguageFeatures ?? []),
    fallback,
  };
}
