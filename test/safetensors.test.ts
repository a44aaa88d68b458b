// Tests for src/io/safetensors.ts and src/io/atomic.ts: round trips per dtype, the exact byte layout,
// the real tiny-llama fixture, sharded folders, every malformed-input case, and atomic writes.
// Each bad-input case checks the error type, that the message names the file/tensor, and a 'hint:' line.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { SafetensorsFile, openTensors, writeSafetensors, type TensorToWrite } from '../src/io/safetensors.ts';
import { recoverDirAtomic, writeDirAtomic, writeFileAtomic } from '../src/io/atomic.ts';
import { CheckpointError, TensorMismatchError } from '../src/util/errors.ts';
import { fromF32 } from '../src/tensor/dtype.ts';

const repoRoot = fileURLToPath(new URL('../', import.meta.url));
const fixtures = path.resolve(repoRoot, process.env.BRICKWORK_FIXTURES ?? '../shared/fixtures');

function tmpDir(): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), 'brickwork-st-'));
}

/** A deterministic mix of dtypes and awkward shapes: scalar, empty dim, odd sizes. */
function sampleTensors(): TensorToWrite[] {
  const f = (n: number, k = 1) => Float32Array.from({ length: n }, (_, i) => (i - n / 3) * 0.37 * k);
  return [
    { name: 'a.f32', dtype: 'f32', shape: [3, 7], data: f(21) },
    { name: 'b.f16', dtype: 'f16', shape: [5], data: fromF32(f(5, 2), 'f16') },
    { name: 'c.bf16', dtype: 'bf16', shape: [1, 3, 3], data: fromF32(f(9, -3), 'bf16') },
    { name: 'd.i32', dtype: 'i32', shape: [2, 2], data: Int32Array.from([-2147483648, -1, 0, 2147483647]) },
    { name: 'e.scalar', dtype: 'f32', shape: [], data: Float32Array.from([42.5]) },
    { name: 'f.empty', dtype: 'bf16', shape: [4, 0], data: new Uint16Array(0) },
    { name: 'g.odd', dtype: 'f16', shape: [1], data: fromF32(Float32Array.from([-0.5]), 'f16') },
    { name: 'h.after-odd', dtype: 'f32', shape: [3], data: Float32Array.from([1, -2, 3]) },
  ];
}

/** Build a safetensors file by hand from a header object and a data section (for malformed cases). */
function rawFile(file: string, header: unknown, data: Uint8Array = new Uint8Array(0), headerText?: string): void {
  const json = Buffer.from(headerText ?? JSON.stringify(header), 'utf8');
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(json.byteLength));
  fs.writeFileSync(file, Buffer.concat([len, json, data]));
}

/** Assert `fn` throws `kind`, with every `mentions` in the message and a hint line. */
function assertBad(fn: () => unknown, kind: typeof CheckpointError | typeof TensorMismatchError, mentions: string[]): Error {
  let caught: unknown;
  try {
    fn();
  } catch (err) {
    caught = err;
  }
  assert.ok(caught instanceof kind, `expected ${kind.name}, got ${caught === undefined ? 'no error' : String(caught)}`);
  const msg = (caught as Error).message;
  for (const m of mentions) assert.ok(msg.includes(m), `message should mention '${m}':\n${msg}`);
  assert.ok(msg.includes('hint:'), `message should carry a hint:\n${msg}`);
  return caught as Error;
}

test('round trip: f32, f16, bf16, i32, scalar and empty shapes, metadata', () => {
  const dir = tmpDir();
  const file = path.join(dir, 'rt.safetensors');
  const tensors = sampleTensors();
  writeSafetensors(file, tensors, { format: 'pt', note: 'héllo' });
  const f = SafetensorsFile.open(file);
  try {
    assert.deepEqual(f.names(), tensors.map((t) => t.name));
    assert.deepEqual(f.metadata, { format: 'pt', note: 'héllo' });
    for (const t of tensors) {
      assert.ok(f.has(t.name));
      const info = f.info(t.name);
      assert.equal(info.dtype, t.dtype);
      assert.deepEqual(info.shape, t.shape);
      const got = f.read(t.name);
      assert.equal(got.dtype, t.dtype);
      assert.deepEqual(got.shape, t.shape);
      assert.equal(got.data.constructor, t.data.constructor);
      assert.deepEqual(Array.from(got.data), Array.from(t.data));
      assert.equal(got.data.byteOffset, 0); // fresh, aligned buffer
    }
    // readF32 widens: bf16/f16 values equal the f32 they were rounded from, to their precision.
    assert.deepEqual(Array.from(f.readF32('e.scalar')), [42.5]);
    assert.deepEqual(Array.from(f.readF32('g.odd')), [-0.5]);
    // i32 → f32 rounds beyond 2^24: 2147483647 becomes 2^31.
    assert.deepEqual(Array.from(f.readF32('d.i32')), [-2147483648, -1, 0, 2147483648]);
    const bf = f.readF32('c.bf16');
    bf.forEach((v, i) => assert.ok(Math.abs(v - (i - 3) * 0.37 * -3) <= Math.abs(v) * 2 ** -8 + 1e-6));
    assert.equal(f.readF32('f.empty').length, 0);
  } finally {
    f.close();
  }
  fs.rmSync(dir, { recursive: true });
});

test('byte layout follows the spec: 8-byte LE length, space-padded header, contiguous data', () => {
  const dir = tmpDir();
  const file = path.join(dir, 'layout.safetensors');
  const tensors = sampleTensors();
  writeSafetensors(file, tensors, { format: 'pt' });
  const buf = fs.readFileSync(file);
  const n = Number(buf.readBigUInt64LE(0));
  assert.equal(n % 8, 0, 'header length must be a multiple of 8');
  const text = buf.subarray(8, 8 + n).toString('utf8');
  assert.match(text, /^\{.*\} *$/s, 'header is a JSON object padded with spaces');
  const header = JSON.parse(text);
  assert.deepEqual(header.__metadata__, { format: 'pt' });
  let offset = 0;
  for (const t of tensors) {
    const bytes = t.data.length * t.data.BYTES_PER_ELEMENT;
    const e = header[t.name];
    assert.equal(e.dtype, { f32: 'F32', f16: 'F16', bf16: 'BF16', i32: 'I32' }[t.dtype]);
    assert.deepEqual(e.shape, t.shape);
    assert.deepEqual(e.data_offsets, [offset, offset + bytes]);
    const stored = buf.subarray(8 + n + offset, 8 + n + offset + bytes);
    assert.ok(stored.equals(Buffer.from(t.data.buffer, t.data.byteOffset, bytes)), `bytes of ${t.name}`);
    offset += bytes;
  }
  assert.equal(buf.byteLength, 8 + n + offset, 'no trailing bytes');
  fs.rmSync(dir, { recursive: true });
});

test('reads I64 as i32 and rejects I64 values beyond the i32 range', () => {
  const dir = tmpDir();
  const ok = path.join(dir, 'i64.safetensors');
  const vals = BigInt64Array.from([-5n, 0n, 2147483647n]);
  rawFile(ok, { ids: { dtype: 'I64', shape: [3], data_offsets: [0, 24] } }, new Uint8Array(vals.buffer));
  const f = SafetensorsFile.open(ok);
  assert.deepEqual(f.info('ids'), { dtype: 'i32', shape: [3], byteLength: 24, storedDtype: 'I64' });
  assert.deepEqual(Array.from(f.read('ids').data), [-5, 0, 2147483647]);
  f.close();
  const big = path.join(dir, 'i64big.safetensors');
  rawFile(big, { ids: { dtype: 'I64', shape: [2], data_offsets: [0, 16] } }, new Uint8Array(BigInt64Array.from([1n, 1n << 40n]).buffer));
  const g = SafetensorsFile.open(big);
  assertBad(() => g.read('ids'), CheckpointError, [big, "'ids'", 'does not fit in i32']);
  g.close();
  fs.rmSync(dir, { recursive: true });
});

test('real fixture: tiny-llama/model.safetensors', (t) => {
  const file = path.join(fixtures, 'tiny-llama', 'model.safetensors');
  if (!fs.existsSync(file)) {
    t.skip(`tiny-llama fixture not found at ${file}; set BRICKWORK_FIXTURES`);
    return;
  }
  const f = SafetensorsFile.open(file);
  try {
    const names = f.names();
    assert.ok(names.length > 10);
    assert.ok(names.includes('model.embed_tokens.weight'));
    assert.ok(names.includes('model.layers.0.self_attn.q_proj.weight'));
    const info = f.info('model.embed_tokens.weight');
    assert.equal(info.dtype, 'bf16');
    assert.deepEqual(info.shape, [4096, 256]);
    assert.equal(info.byteLength, 4096 * 256 * 2);
    const w = f.readF32('model.embed_tokens.weight');
    assert.equal(w.length, 4096 * 256);
    assert.ok(w.every(Number.isFinite));
    assert.ok(w.some((v) => v !== 0));
    // The same file reached through openTensors(folder) reads identically.
    const store = openTensors(path.dirname(file));
    assert.deepEqual(store.names(), names);
    assert.deepEqual(store.readF32('model.norm.weight'), f.readF32('model.norm.weight'));
    store.close();
  } finally {
    f.close();
  }
});

test('a sharded folder reads identically to the unsharded file', () => {
  const dir = tmpDir();
  const tensors = sampleTensors();
  const whole = path.join(dir, 'whole');
  const sharded = path.join(dir, 'sharded');
  fs.mkdirSync(whole);
  fs.mkdirSync(sharded);
  writeSafetensors(path.join(whole, 'model.safetensors'), tensors, { format: 'pt' });
  const first = tensors.slice(0, 3);
  const second = tensors.slice(3);
  const s1 = 'model-00001-of-00002.safetensors';
  const s2 = 'model-00002-of-00002.safetensors';
  // Put the second half in shard 1 so shard order and name order differ.
  writeSafetensors(path.join(sharded, s1), second, { format: 'pt' });
  writeSafetensors(path.join(sharded, s2), first, { format: 'pt' });
  const weightMap: Record<string, string> = {};
  for (const t of tensors) weightMap[t.name] = first.includes(t) ? s2 : s1;
  fs.writeFileSync(path.join(sharded, 'model.safetensors.index.json'), JSON.stringify({ metadata: { total_size: 0 }, weight_map: weightMap }));

  const a = openTensors(whole);
  const b = openTensors(sharded);
  assert.deepEqual([...b.names()].sort(), [...a.names()].sort());
  assert.deepEqual(b.metadata, { format: 'pt' });
  assert.equal(b.files.length, 2);
  for (const name of a.names()) {
    assert.ok(b.has(name));
    assert.deepEqual(b.info(name), a.info(name));
    assert.deepEqual(b.read(name), a.read(name));
    assert.deepEqual(b.readF32(name), a.readF32(name));
  }
  assert.equal(path.basename(b.fileOf('a.f32')), s2);
  a.close();
  b.close();
  // Opening through the index file itself works too.
  const c = openTensors(path.join(sharded, 'model.safetensors.index.json'));
  assert.deepEqual(c.read('d.i32'), { dtype: 'i32', shape: [2, 2], data: Int32Array.from([-2147483648, -1, 0, 2147483647]) });
  c.close();
  fs.rmSync(dir, { recursive: true });
});

test('a folder with exactly one *.safetensors (any name) opens; two without an index is refused', () => {
  const dir = tmpDir();
  writeSafetensors(path.join(dir, 'weights.safetensors'), sampleTensors().slice(0, 2));
  assert.deepEqual(openTensors(dir).names(), ['a.f32', 'b.f16']);
  writeSafetensors(path.join(dir, 'other.safetensors'), sampleTensors().slice(0, 1));
  assertBad(() => openTensors(dir), CheckpointError, [dir, '2 .safetensors files']);
  const empty = tmpDir();
  assertBad(() => openTensors(empty), CheckpointError, [empty, 'no .safetensors']);
  fs.rmSync(dir, { recursive: true });
  fs.rmSync(empty, { recursive: true });
});

test('bad input: every malformed file gives a typed error naming the file and tensor, with a hint', async (t) => {
  const dir = tmpDir();
  const good = path.join(dir, 'good.safetensors');
  writeSafetensors(good, sampleTensors());
  const goodBytes = fs.readFileSync(good);
  const f32 = (n: number) => new Uint8Array(n * 4);

  await t.test('missing file', () => {
    const p = path.join(dir, 'nope.safetensors');
    assertBad(() => SafetensorsFile.open(p), CheckpointError, [p, 'not found']);
    assertBad(() => openTensors(p), CheckpointError, [p]);
  });

  await t.test('shorter than 8 bytes', () => {
    const p = path.join(dir, 'tiny.safetensors');
    fs.writeFileSync(p, Buffer.from([1, 2, 3]));
    assertBad(() => SafetensorsFile.open(p), CheckpointError, [p, '3 bytes', 'truncated']);
  });

  await t.test('truncated: last bytes cut from a valid file', () => {
    const p = path.join(dir, 'cut.safetensors');
    fs.writeFileSync(p, goodBytes.subarray(0, goodBytes.byteLength - 5));
    // The last tensor in the file is the one whose data no longer fits.
    assertBad(() => SafetensorsFile.open(p), CheckpointError, [p, "'h.after-odd'", 'truncated']);
  });

  await t.test('header length larger than the file', () => {
    const p = path.join(dir, 'biglen.safetensors');
    const b = Buffer.from(goodBytes);
    b.writeBigUInt64LE(BigInt(goodBytes.byteLength + 100), 0);
    fs.writeFileSync(p, b);
    assertBad(() => SafetensorsFile.open(p), CheckpointError, [p, 'header length', 'exceeds']);
    // A huge value (e.g. a non-safetensors file) says so rather than suggesting a re-download only.
    const q = path.join(dir, 'notst.safetensors');
    fs.writeFileSync(q, Buffer.from('PK\x03\x04 this is a zip file, not safetensors'));
    assertBad(() => SafetensorsFile.open(q), CheckpointError, [q, 'exceeds']);
  });

  await t.test('header offsets beyond the file', () => {
    const p = path.join(dir, 'beyond.safetensors');
    rawFile(p, { w: { dtype: 'F32', shape: [4], data_offsets: [16, 32] } }, f32(4));
    assertBad(() => SafetensorsFile.open(p), CheckpointError, [p, "'w'", 'data section has only 16 bytes', 'truncated']);
  });

  await t.test('invalid JSON header', () => {
    const p = path.join(dir, 'json.safetensors');
    rawFile(p, null, new Uint8Array(0), '{"w": {"dtype": "F32",');
    assertBad(() => SafetensorsFile.open(p), CheckpointError, [p, 'not valid UTF-8 JSON']);
    const q = path.join(dir, 'array.safetensors');
    rawFile(q, [1, 2]);
    assertBad(() => SafetensorsFile.open(q), CheckpointError, [q, 'JSON object']);
  });

  await t.test('entry missing dtype / shape / data_offsets', () => {
    const p = path.join(dir, 'missing.safetensors');
    rawFile(p, { w: { dtype: 'F32', shape: [2] } }, f32(2));
    assertBad(() => SafetensorsFile.open(p), CheckpointError, [p, "'w'", 'missing data_offsets']);
    rawFile(p, { w: { data_offsets: [0, 8] } }, f32(2));
    assertBad(() => SafetensorsFile.open(p), CheckpointError, [p, "'w'", 'missing dtype, shape']);
    rawFile(p, { w: { dtype: 'F32', shape: [-2], data_offsets: [0, 8] } }, f32(2));
    assertBad(() => SafetensorsFile.open(p), CheckpointError, [p, "'w'", 'shape']);
    rawFile(p, { w: 5 }, f32(2));
    assertBad(() => SafetensorsFile.open(p), CheckpointError, [p, "'w'", 'must be an object']);
  });

  await t.test('offsets not matching shape × dtype', () => {
    const p = path.join(dir, 'mismatch.safetensors');
    rawFile(p, { w: { dtype: 'BF16', shape: [3, 3], data_offsets: [0, 16] } }, new Uint8Array(18));
    assertBad(() => SafetensorsFile.open(p), CheckpointError, [p, "'w'", 'span 16 bytes', 'needs 18 bytes']);
    rawFile(p, { w: { dtype: 'F32', shape: [1], data_offsets: [8, 4] } }, f32(2));
    assertBad(() => SafetensorsFile.open(p), CheckpointError, [p, "'w'", 'end before']);
  });

  await t.test('unknown and unsupported dtypes', () => {
    const p = path.join(dir, 'dtype.safetensors');
    rawFile(p, { w: { dtype: 'F99', shape: [2], data_offsets: [0, 8] } }, f32(2));
    assertBad(() => SafetensorsFile.open(p), CheckpointError, [p, "'w'", "unknown dtype 'F99'"]);
    rawFile(p, { q: { dtype: 'U8', shape: [8], data_offsets: [0, 8] } }, f32(2));
    assertBad(() => SafetensorsFile.open(p), CheckpointError, [p, "'q'", 'U8 is not supported']);
  });

  await t.test('overlapping data ranges', () => {
    const p = path.join(dir, 'overlap.safetensors');
    rawFile(p, {
      a: { dtype: 'F32', shape: [2], data_offsets: [0, 8] },
      b: { dtype: 'F32', shape: [2], data_offsets: [4, 12] },
    }, f32(3));
    assertBad(() => SafetensorsFile.open(p), CheckpointError, [p, "'a'", "'b'", 'overlapping']);
  });

  await t.test('bad __metadata__', () => {
    const p = path.join(dir, 'meta.safetensors');
    rawFile(p, { __metadata__: { n: 3 } });
    assertBad(() => SafetensorsFile.open(p), CheckpointError, [p, '__metadata__.n']);
  });

  await t.test('missing tensor name lists close names', () => {
    const f = SafetensorsFile.open(good);
    const err = assertBad(() => f.read('a.f33'), TensorMismatchError, ["'a.f33'", good, "'a.f32'"]);
    assert.equal((err as TensorMismatchError).code, 'E_TENSOR');
    assertBad(() => f.info('zzz'), TensorMismatchError, ["'zzz'"]);
    f.close();
    assertBad(() => f.read('a.f32'), CheckpointError, [good, "'a.f32'", 'closed']);
    const store = openTensors(good);
    assertBad(() => store.readF32('b.f61'), TensorMismatchError, ["'b.f61'", "'b.f16'"]);
    store.close();
  });

  await t.test('bad index.json', () => {
    const s = path.join(dir, 'shardy');
    fs.mkdirSync(s);
    fs.copyFileSync(good, path.join(s, 'part1.safetensors'));
    const index = path.join(s, 'model.safetensors.index.json');
    fs.writeFileSync(index, '{"weight_map": {"a.f32": ');
    assertBad(() => openTensors(s), CheckpointError, [index, 'not valid JSON']);
    fs.writeFileSync(index, JSON.stringify({ metadata: {} }));
    assertBad(() => openTensors(s), CheckpointError, [index, 'weight_map']);
    fs.writeFileSync(index, JSON.stringify({ weight_map: { 'a.f32': 7 } }));
    assertBad(() => openTensors(s), CheckpointError, [index, "weight_map['a.f32']"]);
    fs.writeFileSync(index, JSON.stringify({ weight_map: { 'a.f32': '../good.safetensors' } }));
    assertBad(() => openTensors(s), CheckpointError, [index, 'outside']);
    fs.writeFileSync(index, JSON.stringify({ weight_map: { 'not.there': 'part1.safetensors' } }));
    assertBad(() => openTensors(s), CheckpointError, [index, "'not.there'", 'part1.safetensors', 'does not contain']);
  });

  await t.test('index naming a missing shard', () => {
    const s = path.join(dir, 'shardless');
    fs.mkdirSync(s);
    fs.copyFileSync(good, path.join(s, 'part1.safetensors'));
    const index = path.join(s, 'model.safetensors.index.json');
    fs.writeFileSync(index, JSON.stringify({ weight_map: { 'a.f32': 'part1.safetensors', 'b.f16': 'part2.safetensors', 'c.bf16': 'part2.safetensors' } }));
    assertBad(() => openTensors(s), CheckpointError, [index, "'part2.safetensors'", "'b.f16'", '1 more', 'does not exist']);
  });

  await t.test('a corrupt shard names the shard file', () => {
    const s = path.join(dir, 'badshard');
    fs.mkdirSync(s);
    fs.writeFileSync(path.join(s, 'part1.safetensors'), goodBytes.subarray(0, 40));
    fs.writeFileSync(path.join(s, 'model.safetensors.index.json'), JSON.stringify({ weight_map: { 'a.f32': 'part1.safetensors' } }));
    assertBad(() => openTensors(s), CheckpointError, [path.join(s, 'part1.safetensors')]);
  });

  await t.test('writeSafetensors validates its input', () => {
    const p = path.join(dir, 'w.safetensors');
    assertBad(() => writeSafetensors(p, [{ name: 'x', dtype: 'f32', shape: [2, 3], data: new Float32Array(5) }]), TensorMismatchError, ["'x'", '6 elements', 'has 5']);
    assertBad(() => writeSafetensors(p, [{ name: 'x', dtype: 'bf16', shape: [2], data: new Float32Array(2) }]), TensorMismatchError, ["'x'", 'Uint16Array']);
    const x = { name: 'x', dtype: 'f32' as const, shape: [1], data: new Float32Array(1) };
    assertBad(() => writeSafetensors(p, [x, x]), TensorMismatchError, ["'x'", 'twice']);
    assert.equal(fs.existsSync(p), false, 'nothing written on bad input');
  });

  fs.rmSync(dir, { recursive: true });
});

test('atomic writes: a failing writer leaves no partial target and no temp file', async () => {
  const dir = tmpDir();
  const target = path.join(dir, 'out.bin');
  writeFileAtomic(target, 'old');
  // A chunk that is not a byte array makes writeSync throw halfway through the write.
  const bad = [new Uint8Array([1, 2, 3]), 42 as unknown as Uint8Array];
  assert.throws(() => writeFileAtomic(target, bad));
  assert.equal(fs.readFileSync(target, 'utf8'), 'old', 'old content intact');
  assert.deepEqual(fs.readdirSync(dir), ['out.bin'], 'no temp file left');

  const fresh = path.join(dir, 'fresh.bin');
  assert.throws(() => writeFileAtomic(fresh, bad));
  assert.equal(fs.existsSync(fresh), false, 'no partial target');
  assert.deepEqual(fs.readdirSync(dir), ['out.bin']);

  // A failure at the final rename (the target is a non-empty folder) also cleans up the temp file.
  const blocker = path.join(dir, 'blocker');
  fs.mkdirSync(blocker);
  fs.writeFileSync(path.join(blocker, 'keep'), 'x');
  assert.throws(() => writeFileAtomic(blocker, 'data'));
  assert.deepEqual(fs.readdirSync(dir).sort(), ['blocker', 'out.bin']);
  fs.rmSync(blocker, { recursive: true });

  writeFileAtomic(target, [new Uint8Array([104, 105]), Buffer.from('!')]);
  assert.equal(fs.readFileSync(target, 'utf8'), 'hi!');

  // writeDirAtomic: a failing fill leaves the old folder untouched and no temp folder.
  const ckpt = path.join(dir, 'ckpt');
  await writeDirAtomic(ckpt, (tmp) => fs.writeFileSync(path.join(tmp, 'a.txt'), 'v1'));
  assert.deepEqual(fs.readdirSync(ckpt), ['a.txt']);
  await assert.rejects(writeDirAtomic(ckpt, async (tmp) => {
    fs.writeFileSync(path.join(tmp, 'a.txt'), 'half');
    throw new Error('disk on fire');
  }), /disk on fire/);
  assert.equal(fs.readFileSync(path.join(ckpt, 'a.txt'), 'utf8'), 'v1');
  assert.deepEqual(fs.readdirSync(dir).sort(), ['ckpt', 'out.bin']);

  // ...and a successful one replaces the existing folder completely (old files gone, no backup left).
  await writeDirAtomic(ckpt, async (tmp) => {
    writeSafetensors(path.join(tmp, 'model.safetensors'), sampleTensors());
    fs.writeFileSync(path.join(tmp, 'b.txt'), 'v2');
  });
  assert.deepEqual(fs.readdirSync(ckpt).sort(), ['b.txt', 'model.safetensors']);
  assert.deepEqual(fs.readdirSync(dir).sort(), ['ckpt', 'out.bin']);
  assert.deepEqual(openTensors(ckpt).names(), sampleTensors().map((t) => t.name));
  fs.rmSync(dir, { recursive: true });
});

test('recoverDirAtomic: removes what killed folder writes left, and puts back a folder killed between the renames', () => {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'bw-recover-'));
  try {
    const ckpt = path.join(root, 'checkpoint');
    fs.mkdirSync(ckpt);
    fs.writeFileSync(path.join(ckpt, 'a.txt'), 'current');
    const leftover = (suffix: string, text: string) => {
      const p = path.join(root, `.checkpoint.1234.0badc0de.${suffix}`.replace('0badc0de', Math.random().toString(16).slice(2, 10).padEnd(8, '0')));
      fs.mkdirSync(p);
      fs.writeFileSync(path.join(p, 'a.txt'), text);
      return p;
    };
    leftover('tmp', 'half written');
    const other = path.join(root, '.other.1.00000000.tmp');
    fs.mkdirSync(other);
    let r = recoverDirAtomic(ckpt);
    assert.equal(r.restored, false);
    assert.equal(r.removed.length, 1);
    assert.deepEqual(fs.readdirSync(root).sort(), ['.other.1.00000000.tmp', 'checkpoint'], 'only its own leftovers go');
    // Killed between the renames: the checkpoint is at .old, the new one (complete or not) at .tmp.
    fs.renameSync(ckpt, path.join(root, '.checkpoint.1234.89abcdef.old'));
    leftover('tmp', 'new');
    r = recoverDirAtomic(ckpt);
    assert.equal(r.restored, true);
    assert.equal(fs.readFileSync(path.join(ckpt, 'a.txt'), 'utf8'), 'current');
    assert.deepEqual(fs.readdirSync(root).sort(), ['.other.1.00000000.tmp', 'checkpoint']);
  } finally {
    fs.rmSync(root, { recursive: true, force: true });
  }
});
