// Fast CPU matmul (src/backends/cpu/fast/matmul.ts) against a float64 naive reference written here:
// every path (naive, tiled JS, WASM SIMD, the shape-picked default, resident arrays, helper threads) on
// odd shapes, both b layouts, offsets and accumulate, plus exact small cases and bad input (~3 s).

import { strict as assert } from 'node:assert';
import { after, describe, it } from 'node:test';
import {
  allocF32, freeF32, isResident, matmulF32, matmulF32Js, matmulF32Naive, matmulF32Wasm, matmulPath,
  matmulThreads, startMatmulThreads, stopMatmulThreads, wasmAvailable, type MatmulF32Fn,
} from '../src/backends/cpu/fast/matmul.ts';
import { measureMemoryBandwidth } from '../src/backends/cpu/fast/bandwidth.ts';
import { rand } from './helpers.ts';

/** Seeded uniform values in [-1, 1) (the shared mulberry32 of helpers.ts), so failures reproduce. */
function rng(seed: number): () => number {
  const r = rand(seed);
  return () => r() * 2 - 1;
}

function randArray(n: number, r: () => number): Float32Array {
  const x = new Float32Array(n);
  for (let i = 0; i < n; i++) x[i] = r();
  return x;
}

// Tolerance, per output element: |got - ref| <= 2^-24 * ((K + 8) * sum_k |a_ik b_kj| + 2 |out_ij before|).
// 2^-24 is the f32 unit roundoff u. Whatever order a kernel sums in, each of the K products is rounded
// once and passes through at most K - 1 further additions (plus a few: the store, `accumulate`), so the
// classic bound |error| <= gamma_{K+1} * sum|a b| ~ (K + 1) u sum|a b| covers it; +8 and the factor 2 are
// headroom for the final f32 rounding of the float64 JS paths and the accumulate add. This is tighter than
// 1e-5 * K * max|a| * max|b| for K < ~160 and never looser than the true worst case, yet any real bug (a
// lost or doubled term, a wrong index, a tail left out) moves an entry by about |a b| ~ 0.25 >> tol.
/** float64 reference of the product plus the per-element tolerance (above). */
function reference(a: Float32Array, b: Float32Array, M: number, N: number, K: number, transB: boolean,
  aOff = 0, bOff = 0, init?: Float32Array, outOff = 0): { ref: Float64Array; tol: Float64Array } {
  const ref = new Float64Array(M * N), tol = new Float64Array(M * N);
  const u = 2 ** -24;
  for (let i = 0; i < M; i++) {
    for (let j = 0; j < N; j++) {
      let s = 0, abs = 0;
      for (let k = 0; k < K; k++) {
        const p = a[aOff + i * K + k] * b[bOff + (transB ? j * K + k : k * N + j)];
        s += p; abs += Math.abs(p);
      }
      const o0 = init ? init[outOff + i * N + j] : 0;
      ref[i * N + j] = o0 + s;
      tol[i * N + j] = u * ((K + 8) * abs + 2 * Math.abs(o0)) + 1e-30;
    }
  }
  return { ref, tol };
}

function assertClose(name: string, out: Float32Array, outOff: number, ref: Float64Array, tol: Float64Array): void {
  for (let i = 0; i < ref.length; i++) {
    const got = out[outOff + i], d = Math.abs(got - ref[i]);
    if (!(d <= tol[i])) assert.fail(`${name}: element ${i}: got ${got}, want ${ref[i]} (|diff| ${d} > tol ${tol[i]})`);
  }
}

const IMPLS: [string, MatmulF32Fn][] = [
  ['naive', matmulF32Naive], ['js', matmulF32Js], ['auto', matmulF32],
  ...(wasmAvailable() ? [['wasm', matmulF32Wasm] as [string, MatmulF32Fn]] : []),
];
const ODD = [1, 7, 33, 257];

after(async () => { await stopMatmulThreads(); });

describe('fast matmul: exact small cases', () => {
  // [[1,2,3],[4,5,6]] @ [[7,8],[9,10],[11,12]] = [[58,64],[139,154]]: small integers, exact in f32
  const a = Float32Array.of(1, 2, 3, 4, 5, 6);
  const bKN = Float32Array.of(7, 8, 9, 10, 11, 12);
  const bNK = Float32Array.of(7, 9, 11, 8, 10, 12);
  for (const [name, f] of IMPLS) {
    it(`${name}: 2x3 @ 3x2, both layouts, and accumulate`, () => {
      const out = new Float32Array(4);
      f(out, a, bKN, 2, 2, 3, false);
      assert.deepEqual([...out], [58, 64, 139, 154]);
      out.fill(-1);
      f(out, a, bNK, 2, 2, 3, true);
      assert.deepEqual([...out], [58, 64, 139, 154]);
      f(out, a, bNK, 2, 2, 3, true, 0, 0, 0, true);
      assert.deepEqual([...out], [116, 128, 278, 308]);
    });
    it(`${name}: identity, K = 0, empty shapes`, () => {
      const n = 5, eye = new Float32Array(n * n), x = Float32Array.from({ length: 3 * n }, (_, i) => i - 7);
      for (let i = 0; i < n; i++) eye[i * n + i] = 1;
      for (const transB of [false, true]) {
        const out = new Float32Array(3 * n);
        f(out, x, eye, 3, n, n, transB);
        assert.deepEqual([...out], [...x]);
      }
      const out = Float32Array.of(3, 4);
      f(out, new Float32Array(0), new Float32Array(0), 1, 2, 0, true, 0, 0, 0, true);
      assert.deepEqual([...out], [3, 4]); // accumulate of an empty sum leaves out alone
      f(out, new Float32Array(0), new Float32Array(0), 1, 2, 0, true);
      assert.deepEqual([...out], [0, 0]);
      f(out, new Float32Array(0), new Float32Array(0), 0, 2, 0, false); // M = 0: nothing to do
      f(out, new Float32Array(3), new Float32Array(0), 1, 0, 3, false); // N = 0
    });
  }
});

/** Every fast implementation against the float64 reference on each shape, both layouts of b. */
function checkFastPaths(r: () => number, shapes: number[][]): void {
  for (const [M, N, K] of shapes) {
    for (const transB of [true, false]) {
      const a = randArray(M * K, r), b = randArray(N * K, r);
      const { ref, tol } = reference(a, b, M, N, K, transB);
      for (const [name, f] of IMPLS) {
        if (name === 'naive') continue;
        const out = new Float32Array(M * N).fill(NaN);
        f(out, a, b, M, N, K, transB);
        assertClose(`${name} M=${M} N=${N} K=${K} transB=${transB}`, out, 0, ref, tol);
      }
    }
  }
}

describe('fast matmul: odd shapes against float64', () => {
  for (const transB of [true, false]) {
    it(`M, N, K in {1, 7, 33, 257}, transB=${transB}`, () => {
      const r = rng(transB ? 1 : 2);
      for (const M of ODD) for (const N of ODD) for (const K of ODD) {
        const a = randArray(M * K, r), b = randArray(N * K, r);
        const { ref, tol } = reference(a, b, M, N, K, transB);
        for (const [name, f] of IMPLS) {
          if (name === 'naive' && M * N * K > 1e5) continue; // the naive loop is the reference's twin
          const out = new Float32Array(M * N).fill(NaN); // an output left unwritten fails
          f(out, a, b, M, N, K, transB);
          assertClose(`${name} M=${M} N=${N} K=${K} transB=${transB}`, out, 0, ref, tol);
        }
      }
    });
  }

  it('decode shapes: M = 1..8 (matrix-vector), long and short rows, N off every block size', () => {
    checkFastPaths(rng(3), [[1, 50257, 128], [1, 2049, 771], [2, 4099, 130], [3, 1031, 515], [8, 771, 64], [5, 4103, 9]]);
  });

  it('prefill shapes: several row blocks, K cut into slices, packed panels', () => {
    checkFastPaths(rng(4), [[130, 67, 1029], [67, 130, 600], [16, 9, 1], [65, 17, 2051]]);
  });
});

describe('fast matmul: offsets, accumulate, neighbours', () => {
  it('offsets address one slice; accumulate adds; NaN around the slices never leaks in or gets written', () => {
    const r = rng(5);
    for (const [M, N, K] of [[1, 7, 33], [7, 33, 1], [33, 257, 7], [2, 70, 129], [19, 45, 67]]) {
      for (const transB of [true, false]) {
        for (const accumulate of [false, true]) {
          const aOff = 5, bOff = 11, outOff = 3;
          // NaN before and after each slice: a kernel reading or writing one element too far shows up
          const a = new Float32Array(aOff + M * K + 40).fill(NaN), b = new Float32Array(bOff + N * K + 40).fill(NaN);
          a.set(randArray(M * K, r), aOff);
          b.set(randArray(N * K, r), bOff);
          const init = new Float32Array(outOff + M * N + 9).fill(NaN);
          init.set(randArray(M * N, r), outOff);
          const { ref, tol } = reference(a, b, M, N, K, transB, aOff, bOff, accumulate ? init : undefined, outOff);
          for (const [name, f] of IMPLS) {
            const out = init.slice();
            f(out, a, b, M, N, K, transB, aOff, bOff, outOff, accumulate);
            const what = `${name} M=${M} N=${N} K=${K} transB=${transB} accumulate=${accumulate}`;
            assertClose(what, out, outOff, ref, tol);
            for (let i = 0; i < outOff; i++) assert.ok(Number.isNaN(out[i]), `${what}: wrote before outOff`);
            for (let i = outOff + M * N; i < out.length; i++) assert.ok(Number.isNaN(out[i]), `${what}: wrote past the slice`);
          }
        }
      }
    }
  });
});

describe('fast matmul: resident arrays (allocF32)', { skip: !wasmAvailable() && 'no WebAssembly SIMD' }, () => {
  it('reads a and b in place, with offsets, and gives the same results', () => {
    const r = rng(6);
    for (const [M, N, K] of [[1, 1001, 130], [3, 257, 33], [7, 33, 1], [40, 70, 515], [1, 7, 1], [2, 9, 6], [1, 1, 3], [3, 1, 5]]) {
      for (const transB of [true, false]) {
        // NaN right after each slice: kernels read whole vectors past row ends, and must mask what they read
        const a = allocF32(2 + M * K + 8).fill(NaN), b = allocF32(1 + N * K + 8).fill(NaN);
        a.set(randArray(M * K, r), 2);
        b.set(randArray(N * K, r), 1);
        const { ref, tol } = reference(a, b, M, N, K, transB, 2, 1);
        const out = new Float32Array(M * N);
        matmulF32Wasm(out, a, b, M, N, K, transB, 2, 1);
        assertClose(`resident M=${M} N=${N} K=${K} transB=${transB}`, out, 0, ref, tol);
        matmulF32(out, a, b, M, N, K, transB, 2, 1);
        assertClose(`resident auto M=${M} N=${N} K=${K} transB=${transB}`, out, 0, ref, tol);
        freeF32(b);
        freeF32(a);
      }
    }
  });

  it('reads nothing past b when b ends where the memory ends (no out-of-bounds trap)', () => {
    const r = rng(8);
    const [M, N, K] = [1, 5, 16384]; // tiles of 4 rows: 3 rows (192 KiB) past the last row if not clamped
    const warm = new Float32Array(4 * N * K);
    matmulF32Wasm(new Float32Array(4 * N), warm, warm, 4, N, K, true); // scratch now large and below b
    const b = allocF32(N * K); // the newest, highest block: the memory ends at most a page after it
    b.set(randArray(N * K, r));
    const a = randArray(M * K, r);
    const { ref, tol } = reference(a, b, M, N, K, true);
    const out = new Float32Array(M * N);
    matmulF32Wasm(out, a, b, M, N, K, true);
    assertClose('b at the end of memory', out, 0, ref, tol);
    freeF32(b);
  });

  it('allocates zeroed memory, survives growth, frees and reuses blocks', () => {
    const x = allocF32(1000);
    x.fill(7);
    const big = allocF32(8 << 20); // 32 MiB: grows the memory; x must stay valid (shared memory)
    if (!isResident(x)) return; // plain memory (no SharedArrayBuffer): allocF32 gives ordinary arrays
    assert.equal(x.length, 1000);
    assert.equal(x[999], 7);
    freeF32(big);
    freeF32(x);
    const y = allocF32(1000);
    assert.ok(y.every((v) => v === 0), 'a reused block must come back zeroed');
    assert.throws(() => freeF32(y.subarray(1)), /not one that allocF32 returned/);
    freeF32(y);
    assert.throws(() => freeF32(y), /not one that allocF32 returned/);
    freeF32(new Float32Array(3)); // ordinary arrays are ignored
  });
});

describe('fast matmul: helper threads', { skip: !wasmAvailable() && 'no WebAssembly SIMD' }, () => {
  it('splits big products over threads with the same results, and stops cleanly', async () => {
    const threads = await startMatmulThreads(2);
    assert.equal(matmulThreads(), threads);
    const r = rng(7);
    // all >= 2^21 multiply-adds, so they are split; N chosen so that parts end off tile boundaries
    for (const [M, N, K] of [[1, 16411, 129], [2, 8207, 131], [3, 1031, 1029], [70, 333, 129]]) {
      for (const transB of [true, false]) {
        for (const accumulate of [false, true]) {
          const a = randArray(M * K, r), b = randArray(N * K, r), init = randArray(M * N, r);
          const { ref, tol } = reference(a, b, M, N, K, transB, 0, 0, accumulate ? init : undefined);
          const out = init.slice();
          matmulF32Wasm(out, a, b, M, N, K, transB, 0, 0, 0, accumulate);
          assertClose(`threads=${threads} M=${M} N=${N} K=${K} transB=${transB} acc=${accumulate}`, out, 0, ref, tol);
        }
      }
    }
    await stopMatmulThreads();
    assert.equal(matmulThreads(), 1);
  });
});

describe('fast matmul: paths and bad input', () => {
  it('picks naive for tiny shapes and WASM for big ones', () => {
    assert.equal(matmulPath(2, 2, 2, true), 'naive');
    assert.equal(matmulPath(1, 2048, 2048, true), wasmAvailable() ? 'wasm' : 'js');
    assert.equal(matmulPath(256, 768, 768, false), wasmAvailable() ? 'wasm' : 'js');
  });

  it('rejects short arrays and bad dims with a ShapeError, before touching out', () => {
    const out = new Float32Array(4).fill(9);
    assert.throws(() => matmulF32(out, new Float32Array(5), new Float32Array(6), 2, 2, 3, true), /a needs 6 floats/);
    assert.throws(() => matmulF32(out, new Float32Array(6), new Float32Array(6), 2, 2, 3, true, 0, 1), /b needs 6 floats from offset 1/);
    assert.throws(() => matmulF32(out, new Float32Array(6), new Float32Array(6), 2, 2, 3, true, 0, 0, 1), /out needs 4 floats/);
    assert.throws(() => matmulF32(out, new Float32Array(6), new Float32Array(6), 2, -2, 3, true), /N must be an integer >= 0/);
    assert.throws(() => matmulF32(out, new Float32Array(6), new Float32Array(6), 2, 2, 1.5, true), /K must be/);
    assert.deepEqual([...out], [9, 9, 9, 9]);
  });
});

describe('memory bandwidth', () => {
  it('measures a positive, finite read bandwidth over the bytes asked for', () => {
    const r = measureMemoryBandwidth({ bytes: 8 << 20, repeats: 1 });
    assert.equal(r.bytes, 8 << 20);
    assert.ok(Number.isFinite(r.gbPerS) && r.gbPerS > 0.1, `gbPerS = ${r.gbPerS}`);
    assert.equal(r.method, wasmAvailable() ? 'wasm-simd' : 'js');
  });
});
