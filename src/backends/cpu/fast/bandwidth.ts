// Sustained memory read bandwidth, as a decode loop could reach it: the speed limit of matrix-vector work,
// where every weight byte is read once per token (time/token >= weight bytes / bandwidth).
// Sums a buffer much larger than the caches (4 sequential streams, 8 accumulators), best of a few passes,
// with the WASM SIMD kernel the fast matmul uses (a JS loop without SIMD). One thread: ~0.15 s and a
// temporary 256 MiB; `measureMemoryBandwidthParallel` does the same on several threads at once.

import { instantiateFastWasm, wasmAvailable, wasmModule } from './matmul.ts';

/** Result of a bandwidth measurement. `bytes` is the number of bytes read by the best pass. */
export interface BandwidthResult {
  gbPerS: number; // 1e9 bytes per second
  bytes: number;
  method: 'wasm-simd' | 'js';
  threads: number;
}

type Opts = { bytes?: number; repeats?: number };

function sizes(opts: Opts, threads: number): { bytes: number; repeats: number; slice: number } {
  // every thread's slice a multiple of 128 bytes, as the sum kernel needs
  const slice = Math.max(128, Math.floor((opts.bytes ?? 256 * 2 ** 20) / threads / 128) * 128);
  return { bytes: slice * threads, repeats: Math.max(1, opts.repeats ?? 5), slice };
}

/**
 * Measures sustained read bandwidth on one thread by summing `bytes` (default 256 MiB) of f32, best of
 * `repeats` (default 5) passes (after one untimed pass, which also lets V8 finish optimizing the kernel).
 *
 * @example
 * const { gbPerS } = measureMemoryBandwidth();
 * const msPerTokenFloor = (weightBytes / (gbPerS * 1e9)) * 1e3;
 */
export function measureMemoryBandwidth(opts: Opts = {}): BandwidthResult {
  const { bytes, repeats } = sizes(opts, 1);
  let sink = 0;
  let bestMs = Infinity;
  let method: BandwidthResult['method'] = 'js';
  if (wasmAvailable()) {
    method = 'wasm-simd';
    // a memory of its own, so the matmul memory does not keep 256 MiB after this returns
    const mem = new WebAssembly.Memory({ initial: Math.ceil(bytes / 65536) });
    const k = instantiateFastWasm(mem);
    // NOTE: fresh pages all map to one zero page until written; reading them would be far too fast.
    new Float32Array(mem.buffer, 0, bytes / 4).fill(1);
    for (let r = 0; r <= repeats; r++) {
      const t = performance.now();
      sink += k.sum(0, bytes);
      if (r > 0) bestMs = Math.min(bestMs, performance.now() - t);
    }
  } else {
    const x = new Float32Array(bytes / 4).fill(1);
    for (let r = 0; r <= repeats; r++) {
      const t = performance.now();
      sink += sumJs(x);
      if (r > 0) bestMs = Math.min(bestMs, performance.now() - t);
    }
  }
  checkSum(sink, (bytes / 4) * (repeats + 1));
  return { gbPerS: bytes / (bestMs * 1e6), bytes, method, threads: 1 };
}

// Plain JS for `new Worker(..., { eval: true })`: sums its slice each time the GO slot changes.
const WORKER_SOURCE = `
const { workerData, parentPort } = require('node:worker_threads');
const { module, memory, ctl, w, bytes } = workerData;
const k = new WebAssembly.Instance(module, { env: { mem: memory } }).exports;
const I = new Int32Array(memory.buffer), F = new Float32Array(memory.buffer);
parentPort.postMessage('ready');
let seen = 0;
for (;;) {
  Atomics.wait(I, ctl, seen);
  seen = Atomics.load(I, ctl);
  if (seen < 0) break;
  F[ctl + 2 + w] = k.sum(w * bytes, bytes); // its sum, checked by the main thread
  Atomics.add(I, ctl + 1, 1);
  Atomics.notify(I, ctl + 1);
}
`;

/**
 * Like `measureMemoryBandwidth`, with `threads` threads (default: the number of cores) each summing its
 * share of the buffer at the same time: what a decode split over helper threads (startMatmulThreads) can
 * reach. Falls back to the one-thread measurement where workers or shared WASM memory are missing.
 */
export async function measureMemoryBandwidthParallel(opts: Opts & { threads?: number } = {}): Promise<BandwidthResult> {
  let os: typeof import('node:os'), wt: typeof import('node:worker_threads');
  try {
    [os, wt] = await Promise.all([import('node:os'), import('node:worker_threads')]);
  } catch {
    return measureMemoryBandwidth(opts); // not Node
  }
  const threads = Math.max(1, Math.floor(opts.threads ?? os.availableParallelism?.() ?? os.cpus().length));
  if (threads === 1 || !wasmAvailable()) return measureMemoryBandwidth(opts);
  const { bytes, repeats, slice } = sizes(opts, threads);
  const ctlBytes = 4 * (2 + threads);
  let mem: WebAssembly.Memory, mod: WebAssembly.Module;
  try {
    const pages = Math.ceil((bytes + ctlBytes) / 65536);
    mem = new WebAssembly.Memory({ initial: pages, maximum: pages, shared: true });
    mod = wasmModule(true);
  } catch {
    return measureMemoryBandwidth(opts); // no shared memory here
  }
  new Float32Array(mem.buffer, 0, bytes / 4).fill(1);
  const I = new Int32Array(mem.buffer);
  const ctl = bytes / 4; // int32 slots: GO, DONE count, then one f32 sum per thread
  const F = new Float32Array(mem.buffer);
  const k = instantiateFastWasm(mem);
  const workers: import('node:worker_threads').Worker[] = [];
  try {
    for (let w = 1; w < threads; w++) {
      const worker = new wt.Worker(WORKER_SOURCE, { eval: true, workerData: { module: mod, memory: mem, ctl, w, bytes: slice } });
      worker.unref();
      workers.push(worker);
      await new Promise<void>((resolve, reject) => {
        worker.once('message', () => resolve());
        worker.once('error', reject);
      });
    }
    let bestMs = Infinity, sink = 0;
    for (let r = 0; r <= repeats; r++) {
      Atomics.store(I, ctl + 1, 0);
      const t = performance.now();
      Atomics.store(I, ctl, r + 1);
      Atomics.notify(I, ctl);
      sink += k.sum(0, slice);
      for (let done; (done = Atomics.load(I, ctl + 1)) < threads - 1;) Atomics.wait(I, ctl + 1, done, 10_000);
      if (r > 0) bestMs = Math.min(bestMs, performance.now() - t);
      for (let w = 1; w < threads; w++) sink += F[ctl + 2 + w];
    }
    checkSum(sink, (bytes / 4) * (repeats + 1));
    return { gbPerS: bytes / (bestMs * 1e6), bytes, method: 'wasm-simd', threads };
  } finally {
    Atomics.store(I, ctl, -1);
    Atomics.notify(I, ctl);
    await Promise.all(workers.map((w) => w.terminate()));
  }
}

// The sum is checked so that the engine cannot drop the reads as dead code (f32 lanes: allow rounding).
function checkSum(sink: number, want: number): void {
  if (!(Math.abs(sink - want) <= 1e-3 * want)) throw new Error(`measureMemoryBandwidth: bad sum ${sink}, want ${want}`);
}

// 8 independent sums: one chain would be bound by add latency, not by memory.
function sumJs(x: Float32Array): number {
  let s0 = 0, s1 = 0, s2 = 0, s3 = 0, s4 = 0, s5 = 0, s6 = 0, s7 = 0;
  for (let i = 0; i < x.length; i += 8) {
    s0 += x[i]; s1 += x[i + 1]; s2 += x[i + 2]; s3 += x[i + 3];
    s4 += x[i + 4]; s5 += x[i + 5]; s6 += x[i + 6]; s7 += x[i + 7];
  }
  return s0 + s1 + s2 + s3 + s4 + s5 + s6 + s7;
}
