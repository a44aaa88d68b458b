;; Brickwork f32 matmul kernels in WebAssembly SIMD (f32x4 mul + add; relaxed-simd FMA needs a flag on Node 20).
;; Source of matmul-wasm.gen.ts: after editing, run `node scripts/build-wasm.mjs`. Driven by matmul.ts.
;; Pointers are byte addresses in the imported memory; leading dims (ld*) are in elements. Kernels do not
;; bounds-check: they may read up to 32 bytes past the end of a or b (whole 4- or 8-float tiles; what they
;; read there lands only in padded outputs or is masked off) and store whole tiles into a padded out.
(module
  (import "env" "mem" (memory 1))

  ;; [sum(v0), sum(v1), sum(v2), sum(v3)]: four horizontal sums in 6 shuffles + 3 adds.
  (func $hsum4 (param $v0 v128) (param $v1 v128) (param $v2 v128) (param $v3 v128) (result v128)
    (local $s01 v128) (local $s23 v128)
    ;; s01 = [v0.0+v0.2, v1.0+v1.2, v0.1+v0.3, v1.1+v1.3]
    (local.set $s01 (f32x4.add
      (i8x16.shuffle 0 1 2 3 16 17 18 19 4 5 6 7 20 21 22 23 (local.get $v0) (local.get $v1))
      (i8x16.shuffle 8 9 10 11 24 25 26 27 12 13 14 15 28 29 30 31 (local.get $v0) (local.get $v1))))
    (local.set $s23 (f32x4.add
      (i8x16.shuffle 0 1 2 3 16 17 18 19 4 5 6 7 20 21 22 23 (local.get $v2) (local.get $v3))
      (i8x16.shuffle 8 9 10 11 24 25 26 27 12 13 14 15 28 29 30 31 (local.get $v2) (local.get $v3))))
    (f32x4.add
      (i8x16.shuffle 0 1 2 3 4 5 6 7 16 17 18 19 20 21 22 23 (local.get $s01) (local.get $s23))
      (i8x16.shuffle 8 9 10 11 12 13 14 15 24 25 26 27 28 29 30 31 (local.get $s01) (local.get $s23))))

;; Stores lane l of v at o + l*qb (adding what is there unless init): a tile's 4 outputs, qb bytes apart.
  (func $st4 (param $o i32) (param $qb i32) (param $v v128) (param $init i32)
    (if (i32.eqz (local.get $init)) (then
      (local.set $v (f32x4.add (local.get $v) (f32x4.replace_lane 3 (f32x4.replace_lane 2 (f32x4.replace_lane 1
        (f32x4.splat (f32.load (local.get $o)))
        (f32.load (i32.add (local.get $o) (local.get $qb))))
        (f32.load (i32.add (local.get $o) (i32.shl (local.get $qb) (i32.const 1)))))
        (f32.load (i32.add (local.get $o) (i32.mul (local.get $qb) (i32.const 3)))))))))
    (f32.store (local.get $o) (f32x4.extract_lane 0 (local.get $v)))
    (f32.store (i32.add (local.get $o) (local.get $qb)) (f32x4.extract_lane 1 (local.get $v)))
    (f32.store (i32.add (local.get $o) (i32.shl (local.get $qb) (i32.const 1))) (f32x4.extract_lane 2 (local.get $v)))
    (f32.store (i32.add (local.get $o) (i32.mul (local.get $qb) (i32.const 3))) (f32x4.extract_lane 3 (local.get $v))))

  ;; NT ("transB"): out[i*ldo + j] (+)= sum_{t<k} a[i*lda + t] * b[j*ldb + t] for i < m, j < n.
  ;; Tiles of 2 a-rows x 4 b-rows (8 f32x4 accumulators, dot products along contiguous rows), 1 x 4 for an
  ;; odd last row. The 4 b-rows of a tile are j, j+q, j+2q, j+3q with q = ceil(n/4), and j steps by one: so
  ;; b is read as 4 long sequential streams whatever K is. (Tiles of 4 adjacent rows read 4 short
  ;; interleaved runs, which the hardware prefetcher follows badly: 1/3 of the bandwidth at K = 128.)
  ;; j runs outside i so the 4 b-rows stay in L1 while a sweeps the rows of a block the caller sized for
  ;; L2. Sums for rows n..4q-1 (at most 3; computed from row n-1) land in padded columns of out, so the
  ;; caller needs out columns up to 4q. The k % 4 tail is one more step with both operands masked to
  ;; the valid lanes, so whatever sits past a row (even NaN) never reaches a valid sum.
  (func (export "nt") (param $out i32) (param $ldo i32) (param $a i32) (param $lda i32)
      (param $b i32) (param $ldb i32) (param $m i32) (param $n i32) (param $k i32) (param $init i32)
    (local $kb i32) (local $tail i32) (local $mask0 v128)
    (local $q i32) (local $qb i32) (local $qb4 i32) (local $blast i32)
    (local $j i32) (local $i i32) (local $t i32) (local $o i32)
    (local $b0 i32) (local $b1 i32) (local $b2 i32) (local $b3 i32) (local $a0 i32) (local $a1 i32)
    (local $pb0 i32) (local $pb1 i32) (local $pb2 i32) (local $pb3 i32) (local $pa0 i32) (local $pa1 i32)
    (local $x0 v128) (local $x1 v128) (local $y v128)
    (local $c00 v128) (local $c01 v128) (local $c02 v128) (local $c03 v128)
    (local $c10 v128) (local $c11 v128) (local $c12 v128) (local $c13 v128)
    (local.set $ldo (i32.shl (local.get $ldo) (i32.const 2)))
    (local.set $lda (i32.shl (local.get $lda) (i32.const 2)))
    (local.set $ldb (i32.shl (local.get $ldb) (i32.const 2)))
    ;; k in steps of 4 (unrolling to 8 measured 25% slower: V8 runs out of registers), then a masked step
    (local.set $kb (i32.shl (i32.and (local.get $k) (i32.const -4)) (i32.const 2)))
    (local.set $tail (i32.and (local.get $k) (i32.const 3)))
    (local.set $mask0 (i32x4.lt_s (v128.const i32x4 0 1 2 3) (i32x4.splat (local.get $tail))))
    (local.set $q (i32.shr_u (i32.add (local.get $n) (i32.const 3)) (i32.const 2)))
    (local.set $qb (i32.mul (local.get $q) (local.get $ldb)))
    (local.set $qb4 (i32.shl (local.get $q) (i32.const 2)))
    (local.set $blast (i32.add (local.get $b) (i32.mul (i32.sub (local.get $n) (i32.const 1)) (local.get $ldb))))
    (block $jdone (loop $jloop
      (br_if $jdone (i32.ge_s (local.get $j) (local.get $q)))
      (local.set $b0 (i32.add (local.get $b) (i32.mul (local.get $j) (local.get $ldb))))
      ;; rows past n (at most 3) read row n-1 instead, so b may end exactly at the end of its buffer
      (local.set $b1 (select (i32.add (local.get $b0) (local.get $qb)) (local.get $blast)
        (i32.lt_s (i32.add (local.get $j) (local.get $q)) (local.get $n))))
      (local.set $b2 (select (i32.add (local.get $b0) (i32.shl (local.get $qb) (i32.const 1))) (local.get $blast)
        (i32.lt_s (i32.add (local.get $j) (i32.shl (local.get $q) (i32.const 1))) (local.get $n))))
      (local.set $b3 (select (i32.add (local.get $b0) (i32.mul (local.get $qb) (i32.const 3))) (local.get $blast)
        (i32.lt_s (i32.add (local.get $j) (i32.mul (local.get $q) (i32.const 3))) (local.get $n))))
      (local.set $i (i32.const 0))
      ;; 2 x 4 tiles
      (block $idone (loop $iloop
        (br_if $idone (i32.ge_s (i32.add (local.get $i) (i32.const 1)) (local.get $m)))
        (local.set $a0 (i32.add (local.get $a) (i32.mul (local.get $i) (local.get $lda))))
        (local.set $a1 (i32.add (local.get $a0) (local.get $lda)))
        (local.set $c00 (v128.const i32x4 0 0 0 0)) (local.set $c01 (v128.const i32x4 0 0 0 0))
        (local.set $c10 (v128.const i32x4 0 0 0 0)) (local.set $c11 (v128.const i32x4 0 0 0 0))
        (local.set $c02 (v128.const i32x4 0 0 0 0)) (local.set $c03 (v128.const i32x4 0 0 0 0))
        (local.set $c12 (v128.const i32x4 0 0 0 0)) (local.set $c13 (v128.const i32x4 0 0 0 0))
        (local.set $t (i32.const 0))
        (if (local.get $kb) (then (loop $kloop2
          (local.set $pa0 (i32.add (local.get $a0) (local.get $t)))
          (local.set $pa1 (i32.add (local.get $a1) (local.get $t)))
          (local.set $pb0 (i32.add (local.get $b0) (local.get $t)))
          (local.set $pb1 (i32.add (local.get $b1) (local.get $t)))
          (local.set $pb2 (i32.add (local.get $b2) (local.get $t)))
          (local.set $pb3 (i32.add (local.get $b3) (local.get $t)))
          (local.set $x0 (v128.load (local.get $pa0)))
          (local.set $x1 (v128.load (local.get $pa1)))
          (local.set $y (v128.load (local.get $pb0)))
          (local.set $c00 (f32x4.add (local.get $c00) (f32x4.mul (local.get $x0) (local.get $y))))
          (local.set $c10 (f32x4.add (local.get $c10) (f32x4.mul (local.get $x1) (local.get $y))))
          (local.set $y (v128.load (local.get $pb1)))
          (local.set $c01 (f32x4.add (local.get $c01) (f32x4.mul (local.get $x0) (local.get $y))))
          (local.set $c11 (f32x4.add (local.get $c11) (f32x4.mul (local.get $x1) (local.get $y))))
          (local.set $y (v128.load (local.get $pb2)))
          (local.set $c02 (f32x4.add (local.get $c02) (f32x4.mul (local.get $x0) (local.get $y))))
          (local.set $c12 (f32x4.add (local.get $c12) (f32x4.mul (local.get $x1) (local.get $y))))
          (local.set $y (v128.load (local.get $pb3)))
          (local.set $c03 (f32x4.add (local.get $c03) (f32x4.mul (local.get $x0) (local.get $y))))
          (local.set $c13 (f32x4.add (local.get $c13) (f32x4.mul (local.get $x1) (local.get $y))))
          (local.set $t (i32.add (local.get $t) (i32.const 16)))
          (br_if $kloop2 (i32.lt_u (local.get $t) (local.get $kb))))))
        ;; the last k % 4 values: one more step, masked
        (if (local.get $tail) (then
          (local.set $pa0 (i32.add (local.get $a0) (local.get $t)))
          (local.set $pa1 (i32.add (local.get $a1) (local.get $t)))
          (local.set $pb0 (i32.add (local.get $b0) (local.get $t)))
          (local.set $pb1 (i32.add (local.get $b1) (local.get $t)))
          (local.set $pb2 (i32.add (local.get $b2) (local.get $t)))
          (local.set $pb3 (i32.add (local.get $b3) (local.get $t)))
          (local.set $x0 (v128.and (local.get $mask0) (v128.load (local.get $pa0))))
          (local.set $x1 (v128.and (local.get $mask0) (v128.load (local.get $pa1))))
          (local.set $y (v128.and (local.get $mask0) (v128.load (local.get $pb0))))
          (local.set $c00 (f32x4.add (local.get $c00) (f32x4.mul (local.get $x0) (local.get $y))))
          (local.set $c10 (f32x4.add (local.get $c10) (f32x4.mul (local.get $x1) (local.get $y))))
          (local.set $y (v128.and (local.get $mask0) (v128.load (local.get $pb1))))
          (local.set $c01 (f32x4.add (local.get $c01) (f32x4.mul (local.get $x0) (local.get $y))))
          (local.set $c11 (f32x4.add (local.get $c11) (f32x4.mul (local.get $x1) (local.get $y))))
          (local.set $y (v128.and (local.get $mask0) (v128.load (local.get $pb2))))
          (local.set $c02 (f32x4.add (local.get $c02) (f32x4.mul (local.get $x0) (local.get $y))))
          (local.set $c12 (f32x4.add (local.get $c12) (f32x4.mul (local.get $x1) (local.get $y))))
          (local.set $y (v128.and (local.get $mask0) (v128.load (local.get $pb3))))
          (local.set $c03 (f32x4.add (local.get $c03) (f32x4.mul (local.get $x0) (local.get $y))))
          (local.set $c13 (f32x4.add (local.get $c13) (f32x4.mul (local.get $x1) (local.get $y))))))
        (local.set $o (i32.add (i32.add (local.get $out) (i32.mul (local.get $i) (local.get $ldo)))
                               (i32.shl (local.get $j) (i32.const 2))))
        (call $st4 (local.get $o) (local.get $qb4)
          (call $hsum4 (local.get $c00) (local.get $c01) (local.get $c02) (local.get $c03)) (local.get $init))
        (call $st4 (i32.add (local.get $o) (local.get $ldo)) (local.get $qb4)
          (call $hsum4 (local.get $c10) (local.get $c11) (local.get $c12) (local.get $c13)) (local.get $init))
        (local.set $i (i32.add (local.get $i) (i32.const 2)))
        (br $iloop)))
      ;; odd last row: 1 x 4
      (if (i32.lt_s (local.get $i) (local.get $m)) (then
        (local.set $a0 (i32.add (local.get $a) (i32.mul (local.get $i) (local.get $lda))))
        (local.set $c00 (v128.const i32x4 0 0 0 0)) (local.set $c01 (v128.const i32x4 0 0 0 0))
        (local.set $c02 (v128.const i32x4 0 0 0 0)) (local.set $c03 (v128.const i32x4 0 0 0 0))
        (local.set $t (i32.const 0))
        (if (local.get $kb) (then (loop $kloop1
          (local.set $pa0 (i32.add (local.get $a0) (local.get $t)))
          (local.set $pb0 (i32.add (local.get $b0) (local.get $t)))
          (local.set $pb1 (i32.add (local.get $b1) (local.get $t)))
          (local.set $pb2 (i32.add (local.get $b2) (local.get $t)))
          (local.set $pb3 (i32.add (local.get $b3) (local.get $t)))
          (local.set $x0 (v128.load (local.get $pa0)))
          (local.set $y (v128.load (local.get $pb0)))
          (local.set $c00 (f32x4.add (local.get $c00) (f32x4.mul (local.get $x0) (local.get $y))))
          (local.set $y (v128.load (local.get $pb1)))
          (local.set $c01 (f32x4.add (local.get $c01) (f32x4.mul (local.get $x0) (local.get $y))))
          (local.set $y (v128.load (local.get $pb2)))
          (local.set $c02 (f32x4.add (local.get $c02) (f32x4.mul (local.get $x0) (local.get $y))))
          (local.set $y (v128.load (local.get $pb3)))
          (local.set $c03 (f32x4.add (local.get $c03) (f32x4.mul (local.get $x0) (local.get $y))))
          (local.set $t (i32.add (local.get $t) (i32.const 16)))
          (br_if $kloop1 (i32.lt_u (local.get $t) (local.get $kb))))))
        ;; the last k % 4 values: one more step, masked
        (if (local.get $tail) (then
          (local.set $pa0 (i32.add (local.get $a0) (local.get $t)))
          (local.set $pb0 (i32.add (local.get $b0) (local.get $t)))
          (local.set $pb1 (i32.add (local.get $b1) (local.get $t)))
          (local.set $pb2 (i32.add (local.get $b2) (local.get $t)))
          (local.set $pb3 (i32.add (local.get $b3) (local.get $t)))
          (local.set $x0 (v128.and (local.get $mask0) (v128.load (local.get $pa0))))
          (local.set $y (v128.and (local.get $mask0) (v128.load (local.get $pb0))))
          (local.set $c00 (f32x4.add (local.get $c00) (f32x4.mul (local.get $x0) (local.get $y))))
          (local.set $y (v128.and (local.get $mask0) (v128.load (local.get $pb1))))
          (local.set $c01 (f32x4.add (local.get $c01) (f32x4.mul (local.get $x0) (local.get $y))))
          (local.set $y (v128.and (local.get $mask0) (v128.load (local.get $pb2))))
          (local.set $c02 (f32x4.add (local.get $c02) (f32x4.mul (local.get $x0) (local.get $y))))
          (local.set $y (v128.and (local.get $mask0) (v128.load (local.get $pb3))))
          (local.set $c03 (f32x4.add (local.get $c03) (f32x4.mul (local.get $x0) (local.get $y))))))
        (local.set $o (i32.add (i32.add (local.get $out) (i32.mul (local.get $i) (local.get $ldo)))
                               (i32.shl (local.get $j) (i32.const 2))))
        (call $st4 (local.get $o) (local.get $qb4)
          (call $hsum4 (local.get $c00) (local.get $c01) (local.get $c02) (local.get $c03)) (local.get $init))))
      (local.set $j (i32.add (local.get $j) (i32.const 1)))
      (br $jloop))))


  ;; NN for few rows of a (decode): out[i*ldo + j] (+)= sum_t a[i*lda + t] * b[t*ldb + j] for j < n rounded
  ;; up to 4, as row updates: out row += sum over 4 b rows, each times its a value, so b is read along its
  ;; rows. The 4 rows of a pass are t, t+kq, t+2kq, t+3kq (kq = floor(k/4)) and t steps by one: 4 long
  ;; sequential streams, as in `nt`, rather than 4 short interleaved runs. The caller passes column chunks
  ;; small enough for the out rows and the 4 b segments to stay in L1/L2.
  (func (export "nnv") (param $out i32) (param $ldo i32) (param $a i32) (param $lda i32)
      (param $b i32) (param $ldb i32) (param $m i32) (param $n i32) (param $k i32) (param $init i32)
    (local $nb i32) (local $t i32) (local $i i32) (local $c i32) (local $o i32) (local $ai i32)
    (local $kq i32) (local $kqa i32) (local $kqb i32) (local $r0 i32) (local $r1 i32) (local $r2 i32) (local $r3 i32)
    (local $s0 v128) (local $s1 v128) (local $s2 v128) (local $s3 v128)
    (local.set $nb (i32.shl (i32.and (i32.add (local.get $n) (i32.const 3)) (i32.const -4)) (i32.const 2)))
    (local.set $ldo (i32.shl (local.get $ldo) (i32.const 2)))
    (local.set $lda (i32.shl (local.get $lda) (i32.const 2)))
    (local.set $ldb (i32.shl (local.get $ldb) (i32.const 2)))
    (local.set $kq (i32.shr_u (local.get $k) (i32.const 2)))
    (local.set $kqa (i32.shl (local.get $kq) (i32.const 2))) ;; bytes between the a values of a pass
    (local.set $kqb (i32.mul (local.get $kq) (local.get $ldb))) ;; bytes between its b rows
    (if (local.get $init) (then
      (block $zdone (loop $zrow
        (br_if $zdone (i32.ge_s (local.get $i) (local.get $m)))
        (local.set $o (i32.add (local.get $out) (i32.mul (local.get $i) (local.get $ldo))))
        (local.set $c (i32.const 0))
        (block $zcdone (loop $zcol
          (br_if $zcdone (i32.ge_u (local.get $c) (local.get $nb)))
          (v128.store (i32.add (local.get $o) (local.get $c)) (v128.const i32x4 0 0 0 0))
          (local.set $c (i32.add (local.get $c) (i32.const 16)))
          (br $zcol)))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $zrow)))))
    ;; four b rows per pass over out
    (block $tdone (loop $tloop
      (br_if $tdone (i32.ge_s (local.get $t) (local.get $kq)))
      (local.set $r0 (i32.add (local.get $b) (i32.mul (local.get $t) (local.get $ldb))))
      (local.set $r1 (i32.add (local.get $r0) (local.get $kqb)))
      (local.set $r2 (i32.add (local.get $r1) (local.get $kqb)))
      (local.set $r3 (i32.add (local.get $r2) (local.get $kqb)))
      (local.set $i (i32.const 0))
      (block $idone (loop $iloop
        (br_if $idone (i32.ge_s (local.get $i) (local.get $m)))
        (local.set $ai (i32.add (i32.add (local.get $a) (i32.mul (local.get $i) (local.get $lda)))
                                (i32.shl (local.get $t) (i32.const 2))))
        (local.set $s0 (v128.load32_splat (local.get $ai)))
        (local.set $ai (i32.add (local.get $ai) (local.get $kqa)))
        (local.set $s1 (v128.load32_splat (local.get $ai)))
        (local.set $ai (i32.add (local.get $ai) (local.get $kqa)))
        (local.set $s2 (v128.load32_splat (local.get $ai)))
        (local.set $ai (i32.add (local.get $ai) (local.get $kqa)))
        (local.set $s3 (v128.load32_splat (local.get $ai)))
        (local.set $o (i32.add (local.get $out) (i32.mul (local.get $i) (local.get $ldo))))
        (local.set $c (i32.const 0))
        (block $cdone (loop $cloop
          (br_if $cdone (i32.ge_u (local.get $c) (local.get $nb)))
          (v128.store (i32.add (local.get $o) (local.get $c)) (f32x4.add
            (v128.load (i32.add (local.get $o) (local.get $c)))
            (f32x4.add
              (f32x4.add (f32x4.mul (local.get $s0) (v128.load (i32.add (local.get $r0) (local.get $c))))
                         (f32x4.mul (local.get $s1) (v128.load (i32.add (local.get $r1) (local.get $c)))))
              (f32x4.add (f32x4.mul (local.get $s2) (v128.load (i32.add (local.get $r2) (local.get $c))))
                         (f32x4.mul (local.get $s3) (v128.load (i32.add (local.get $r3) (local.get $c))))))))
          (local.set $c (i32.add (local.get $c) (i32.const 16)))
          (br $cloop)))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $iloop)))
      (local.set $t (i32.add (local.get $t) (i32.const 1)))
      (br $tloop)))
    ;; last k % 4 rows of b (from 4kq), one at a time
    (local.set $t (i32.shl (local.get $kq) (i32.const 2)))
    (block $t1done (loop $t1loop
      (br_if $t1done (i32.ge_s (local.get $t) (local.get $k)))
      (local.set $r0 (i32.add (local.get $b) (i32.mul (local.get $t) (local.get $ldb))))
      (local.set $i (i32.const 0))
      (block $i1done (loop $i1loop
        (br_if $i1done (i32.ge_s (local.get $i) (local.get $m)))
        (local.set $s0 (v128.load32_splat (i32.add (i32.add (local.get $a) (i32.mul (local.get $i) (local.get $lda)))
                                                   (i32.shl (local.get $t) (i32.const 2)))))
        (local.set $o (i32.add (local.get $out) (i32.mul (local.get $i) (local.get $ldo))))
        (local.set $c (i32.const 0))
        (block $c1done (loop $c1loop
          (br_if $c1done (i32.ge_u (local.get $c) (local.get $nb)))
          (v128.store (i32.add (local.get $o) (local.get $c)) (f32x4.add
            (v128.load (i32.add (local.get $o) (local.get $c)))
            (f32x4.mul (local.get $s0) (v128.load (i32.add (local.get $r0) (local.get $c))))))
          (local.set $c (i32.add (local.get $c) (i32.const 16)))
          (br $c1loop)))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $i1loop)))
      (local.set $t (i32.add (local.get $t) (i32.const 1)))
      (br $t1loop))))

  ;; NN: out[i*ldo + 8p + c] (+)= sum_{t<k} a[i*lda + t] * B(t, 8p + c) for i < m, p < np, c < 8, where
  ;; B(t, 8p + c) sits at byte b + p*bp + t*bk + 4c. Packed panels (bk = 32, bp = 32*K) make every step one
  ;; contiguous 32-byte read; unpacked b[K,N] (bk = 4N, bp = 32) saves the packing when m is small.
  ;; Tiles of 4 a-rows x 8 columns (8 accumulators, a broadcast per row), then 1 x 8 for the last m % 4 rows.
  ;; Panels run outside rows so one panel block stays in L1 while a sweeps its L2-sized block.
  (func (export "nn") (param $out i32) (param $ldo i32) (param $a i32) (param $lda i32)
      (param $b i32) (param $bk i32) (param $bp i32) (param $m i32) (param $np i32) (param $k i32) (param $init i32)
    (local $p i32) (local $i i32) (local $t i32) (local $kb i32) (local $tb i32) (local $pb i32) (local $o i32)
    (local $a0 i32) (local $a1 i32) (local $a2 i32) (local $a3 i32)
    (local $y0 v128) (local $y1 v128) (local $s v128)
    (local $c00 v128) (local $c01 v128) (local $c10 v128) (local $c11 v128)
    (local $c20 v128) (local $c21 v128) (local $c30 v128) (local $c31 v128)
    (local.set $ldo (i32.shl (local.get $ldo) (i32.const 2)))
    (local.set $lda (i32.shl (local.get $lda) (i32.const 2)))
    (local.set $kb (i32.shl (local.get $k) (i32.const 2)))
    (block $pdone (loop $ploop
      (br_if $pdone (i32.ge_s (local.get $p) (local.get $np)))
      (local.set $pb (i32.add (local.get $b) (i32.mul (local.get $p) (local.get $bp))))
      (local.set $i (i32.const 0))
      (block $idone (loop $iloop
        (br_if $idone (i32.ge_s (i32.add (local.get $i) (i32.const 3)) (local.get $m)))
        (local.set $a0 (i32.add (local.get $a) (i32.mul (local.get $i) (local.get $lda))))
        (local.set $a1 (i32.add (local.get $a0) (local.get $lda)))
        (local.set $a2 (i32.add (local.get $a1) (local.get $lda)))
        (local.set $a3 (i32.add (local.get $a2) (local.get $lda)))
        (local.set $c00 (v128.const i32x4 0 0 0 0)) (local.set $c01 (v128.const i32x4 0 0 0 0))
        (local.set $c10 (v128.const i32x4 0 0 0 0)) (local.set $c11 (v128.const i32x4 0 0 0 0))
        (local.set $c20 (v128.const i32x4 0 0 0 0)) (local.set $c21 (v128.const i32x4 0 0 0 0))
        (local.set $c30 (v128.const i32x4 0 0 0 0)) (local.set $c31 (v128.const i32x4 0 0 0 0))
        (local.set $t (i32.const 0))
        (local.set $tb (local.get $pb))
        (if (local.get $kb) (then (loop $kloop
          (local.set $y0 (v128.load (local.get $tb)))
          (local.set $y1 (v128.load offset=16 (local.get $tb)))
          (local.set $s (v128.load32_splat (i32.add (local.get $a0) (local.get $t))))
          (local.set $c00 (f32x4.add (local.get $c00) (f32x4.mul (local.get $s) (local.get $y0))))
          (local.set $c01 (f32x4.add (local.get $c01) (f32x4.mul (local.get $s) (local.get $y1))))
          (local.set $s (v128.load32_splat (i32.add (local.get $a1) (local.get $t))))
          (local.set $c10 (f32x4.add (local.get $c10) (f32x4.mul (local.get $s) (local.get $y0))))
          (local.set $c11 (f32x4.add (local.get $c11) (f32x4.mul (local.get $s) (local.get $y1))))
          (local.set $s (v128.load32_splat (i32.add (local.get $a2) (local.get $t))))
          (local.set $c20 (f32x4.add (local.get $c20) (f32x4.mul (local.get $s) (local.get $y0))))
          (local.set $c21 (f32x4.add (local.get $c21) (f32x4.mul (local.get $s) (local.get $y1))))
          (local.set $s (v128.load32_splat (i32.add (local.get $a3) (local.get $t))))
          (local.set $c30 (f32x4.add (local.get $c30) (f32x4.mul (local.get $s) (local.get $y0))))
          (local.set $c31 (f32x4.add (local.get $c31) (f32x4.mul (local.get $s) (local.get $y1))))
          (local.set $tb (i32.add (local.get $tb) (local.get $bk)))
          (local.set $t (i32.add (local.get $t) (i32.const 4)))
          (br_if $kloop (i32.lt_u (local.get $t) (local.get $kb))))))
        (local.set $o (i32.add (i32.add (local.get $out) (i32.mul (local.get $i) (local.get $ldo)))
                               (i32.shl (local.get $p) (i32.const 5))))
        (if (i32.eqz (local.get $init)) (then
          (local.set $c00 (f32x4.add (local.get $c00) (v128.load (local.get $o))))
          (local.set $c01 (f32x4.add (local.get $c01) (v128.load offset=16 (local.get $o))))
          (local.set $c10 (f32x4.add (local.get $c10) (v128.load (i32.add (local.get $o) (local.get $ldo)))))
          (local.set $c11 (f32x4.add (local.get $c11) (v128.load offset=16 (i32.add (local.get $o) (local.get $ldo)))))
          (local.set $c20 (f32x4.add (local.get $c20)
            (v128.load (i32.add (local.get $o) (i32.shl (local.get $ldo) (i32.const 1))))))
          (local.set $c21 (f32x4.add (local.get $c21)
            (v128.load offset=16 (i32.add (local.get $o) (i32.shl (local.get $ldo) (i32.const 1))))))
          (local.set $c30 (f32x4.add (local.get $c30)
            (v128.load (i32.add (local.get $o) (i32.mul (local.get $ldo) (i32.const 3))))))
          (local.set $c31 (f32x4.add (local.get $c31)
            (v128.load offset=16 (i32.add (local.get $o) (i32.mul (local.get $ldo) (i32.const 3))))))))
        (v128.store (local.get $o) (local.get $c00))
        (v128.store offset=16 (local.get $o) (local.get $c01))
        (local.set $o (i32.add (local.get $o) (local.get $ldo)))
        (v128.store (local.get $o) (local.get $c10))
        (v128.store offset=16 (local.get $o) (local.get $c11))
        (local.set $o (i32.add (local.get $o) (local.get $ldo)))
        (v128.store (local.get $o) (local.get $c20))
        (v128.store offset=16 (local.get $o) (local.get $c21))
        (local.set $o (i32.add (local.get $o) (local.get $ldo)))
        (v128.store (local.get $o) (local.get $c30))
        (v128.store offset=16 (local.get $o) (local.get $c31))
        (local.set $i (i32.add (local.get $i) (i32.const 4)))
        (br $iloop)))
      ;; last m % 4 rows: 1 x 8, k unrolled by 2 into two accumulator pairs to keep 4 add chains in flight
      (block $rdone (loop $rloop
        (br_if $rdone (i32.ge_s (local.get $i) (local.get $m)))
        (local.set $a0 (i32.add (local.get $a) (i32.mul (local.get $i) (local.get $lda))))
        (local.set $c00 (v128.const i32x4 0 0 0 0)) (local.set $c01 (v128.const i32x4 0 0 0 0))
        (local.set $c10 (v128.const i32x4 0 0 0 0)) (local.set $c11 (v128.const i32x4 0 0 0 0))
        (local.set $t (i32.const 0))
        (local.set $tb (local.get $pb))
        (block $k2done (loop $k2loop
          (br_if $k2done (i32.gt_u (i32.add (local.get $t) (i32.const 8)) (local.get $kb)))
          (local.set $s (v128.load32_splat (i32.add (local.get $a0) (local.get $t))))
          (local.set $c00 (f32x4.add (local.get $c00) (f32x4.mul (local.get $s) (v128.load (local.get $tb)))))
          (local.set $c01 (f32x4.add (local.get $c01) (f32x4.mul (local.get $s) (v128.load offset=16 (local.get $tb)))))
          (local.set $tb (i32.add (local.get $tb) (local.get $bk)))
          (local.set $s (v128.load32_splat offset=4 (i32.add (local.get $a0) (local.get $t))))
          (local.set $c10 (f32x4.add (local.get $c10) (f32x4.mul (local.get $s) (v128.load (local.get $tb)))))
          (local.set $c11 (f32x4.add (local.get $c11) (f32x4.mul (local.get $s) (v128.load offset=16 (local.get $tb)))))
          (local.set $tb (i32.add (local.get $tb) (local.get $bk)))
          (local.set $t (i32.add (local.get $t) (i32.const 8)))
          (br $k2loop)))
        (if (i32.lt_u (local.get $t) (local.get $kb)) (then
          (local.set $s (v128.load32_splat (i32.add (local.get $a0) (local.get $t))))
          (local.set $c00 (f32x4.add (local.get $c00) (f32x4.mul (local.get $s) (v128.load (local.get $tb)))))
          (local.set $c01 (f32x4.add (local.get $c01) (f32x4.mul (local.get $s) (v128.load offset=16 (local.get $tb)))))))
        (local.set $c00 (f32x4.add (local.get $c00) (local.get $c10)))
        (local.set $c01 (f32x4.add (local.get $c01) (local.get $c11)))
        (local.set $o (i32.add (i32.add (local.get $out) (i32.mul (local.get $i) (local.get $ldo)))
                               (i32.shl (local.get $p) (i32.const 5))))
        (if (i32.eqz (local.get $init)) (then
          (local.set $c00 (f32x4.add (local.get $c00) (v128.load (local.get $o))))
          (local.set $c01 (f32x4.add (local.get $c01) (v128.load offset=16 (local.get $o))))))
        (v128.store (local.get $o) (local.get $c00))
        (v128.store offset=16 (local.get $o) (local.get $c01))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $rloop)))
      (local.set $p (i32.add (local.get $p) (i32.const 1)))
      (br $ploop))))

  ;; Packs b[k, n] (row-major, at src) into np panels of 8 columns: panel p holds B(t, 8p..8p+8) for t < k,
  ;; contiguous, at dst + 32*k*p. The last panel reads past column n; those lanes only feed padded outputs.
  (func (export "pack_nn") (param $dst i32) (param $src i32) (param $k i32) (param $n i32) (param $np i32)
    (local $t i32) (local $p i32) (local $s i32) (local $d i32) (local $pstride i32)
    (local.set $pstride (i32.shl (local.get $k) (i32.const 5)))
    (local.set $n (i32.shl (local.get $n) (i32.const 2)))
    (block $tdone (loop $tloop
      (br_if $tdone (i32.ge_s (local.get $t) (local.get $k)))
      (local.set $s (i32.add (local.get $src) (i32.mul (local.get $t) (local.get $n))))
      (local.set $d (i32.add (local.get $dst) (i32.shl (local.get $t) (i32.const 5))))
      (local.set $p (i32.const 0))
      (block $pdone (loop $ploop
        (br_if $pdone (i32.ge_s (local.get $p) (local.get $np)))
        (v128.store (local.get $d) (v128.load (local.get $s)))
        (v128.store offset=16 (local.get $d) (v128.load offset=16 (local.get $s)))
        (local.set $s (i32.add (local.get $s) (i32.const 32)))
        (local.set $d (i32.add (local.get $d) (local.get $pstride)))
        (local.set $p (i32.add (local.get $p) (i32.const 1)))
        (br $ploop)))
      (local.set $t (i32.add (local.get $t) (i32.const 1)))
      (br $tloop))))

;; Sum of the f32 values in [ptr, ptr + bytes), bytes a multiple of 128, read as 4 sequential streams
  ;; (one per quarter, as matmul kernels read b) with 8 independent f32x4 sums, so the loop is bound by
  ;; memory, not by add latency. One stream reaches only about half the bandwidth. Measures read bandwidth.
  (func (export "sum") (param $ptr i32) (param $bytes i32) (result f32)
    (local $q i32) (local $end i32) (local $p i32) (local $v v128)
    (local $s0 v128) (local $s1 v128) (local $s2 v128) (local $s3 v128)
    (local $s4 v128) (local $s5 v128) (local $s6 v128) (local $s7 v128)
    (local.set $q (i32.and (i32.shr_u (local.get $bytes) (i32.const 2)) (i32.const -32)))
    (local.set $end (i32.add (local.get $ptr) (local.get $q)))
    (block $done (loop $l
      (br_if $done (i32.ge_u (local.get $ptr) (local.get $end)))
      (local.set $s0 (f32x4.add (local.get $s0) (v128.load offset=0 (local.get $ptr))))
      (local.set $s1 (f32x4.add (local.get $s1) (v128.load offset=16 (local.get $ptr))))
      (local.set $p (i32.add (local.get $ptr) (local.get $q)))
      (local.set $s2 (f32x4.add (local.get $s2) (v128.load offset=0 (local.get $p))))
      (local.set $s3 (f32x4.add (local.get $s3) (v128.load offset=16 (local.get $p))))
      (local.set $p (i32.add (local.get $p) (local.get $q)))
      (local.set $s4 (f32x4.add (local.get $s4) (v128.load offset=0 (local.get $p))))
      (local.set $s5 (f32x4.add (local.get $s5) (v128.load offset=16 (local.get $p))))
      (local.set $p (i32.add (local.get $p) (local.get $q)))
      (local.set $s6 (f32x4.add (local.get $s6) (v128.load offset=0 (local.get $p))))
      (local.set $s7 (f32x4.add (local.get $s7) (v128.load offset=16 (local.get $p))))
      (local.set $ptr (i32.add (local.get $ptr) (i32.const 32)))
      (br $l)))
    (local.set $v (f32x4.add
      (f32x4.add (f32x4.add (local.get $s0) (local.get $s1)) (f32x4.add (local.get $s2) (local.get $s3)))
      (f32x4.add (f32x4.add (local.get $s4) (local.get $s5)) (f32x4.add (local.get $s6) (local.get $s7)))))
    (f32.add
      (f32.add (f32x4.extract_lane 0 (local.get $v)) (f32x4.extract_lane 1 (local.get $v)))
      (f32.add (f32x4.extract_lane 2 (local.get $v)) (f32x4.extract_lane 3 (local.get $v)))))
)
