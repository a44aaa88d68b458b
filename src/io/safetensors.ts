// Safetensors reading and writing (https://github.com/huggingface/safetensors, format section).
// Opening a file reads and validates only the header; each tensor is read on demand with pread, so a
// multi-GB checkpoint costs nothing until its tensors are asked for. Dtypes: F32, F16, BF16, I32, and I64
// (narrowed to i32 with a range check). Assumes a little-endian host, as every WebGPU/Node target is.
// Writes are atomic (see atomic.ts). TensorStore presents a single file or a sharded HF folder alike.

import * as fs from 'node:fs';
import * as path from 'node:path';
import { CheckpointError, TensorMismatchError, UsageError } from '../util/errors.ts';
import { DTYPE_BYTES, toF32, type DType, type HostArray } from '../tensor/dtype.ts';
import { writeFileAtomic } from './atomic.ts';

/** Shape, dtype and size of one stored tensor. */
export interface TensorInfo {
  /** Dtype `read()` returns (I64 is narrowed to 'i32'). */
  dtype: DType;
  shape: number[];
  /** Bytes the tensor occupies in the file (for I64, twice what `read()` returns). */
  byteLength: number;
  /** Dtype as written in the file header, e.g. 'BF16' or 'I64'. */
  storedDtype: string;
}

/** A tensor as stored: f16/bf16 come back as raw 16-bit patterns in a Uint16Array. */
export interface HostTensor {
  dtype: DType;
  shape: number[];
  data: HostArray;
}

/** What SafetensorsFile and TensorStore have in common: read-only, by-name access to tensors. */
export interface TensorSource {
  readonly metadata: Record<string, string>;
  names(): string[];
  has(name: string): boolean;
  info(name: string): TensorInfo;
  read(name: string): HostTensor;
  readF32(name: string): Float32Array;
  close(): void;
}

/** A tensor handed to writeSafetensors. `data` must be the HostArray kind of its dtype. */
export interface TensorToWrite {
  name: string;
  dtype: DType;
  shape: number[];
  data: HostArray;
}

// Header dtype → (dtype returned, bytes per stored element). Only these can be read.
const READABLE: Record<string, { dtype: DType; bytes: number }> = {
  F32: { dtype: 'f32', bytes: 4 },
  F16: { dtype: 'f16', bytes: 2 },
  BF16: { dtype: 'bf16', bytes: 2 },
  I32: { dtype: 'i32', bytes: 4 },
  I64: { dtype: 'i32', bytes: 8 },
};
// Valid safetensors dtypes Brickwork does not read: rejected with "unsupported", not "unknown".
const KNOWN_UNSUPPORTED = new Set(['BOOL', 'U8', 'I8', 'U16', 'I16', 'U32', 'U64', 'F64', 'F8_E4M3', 'F8_E5M2', 'F8_E8M0', 'F4', 'F6_E2M3', 'F6_E3M2', 'C64']);
const WRITE_DTYPE: Record<DType, string> = { f32: 'F32', f16: 'F16', bf16: 'BF16', i32: 'I32' };

// The reference implementation refuses headers over 100 MB; a larger length is corruption, not a model.
const MAX_HEADER_BYTES = 100_000_000;
// readSync is capped at 2 GiB per call; read big tensors in chunks below that.
const READ_CHUNK = 1 << 30;

const TRUNCATED_HINT = 'the file looks truncated: re-download or re-save it';
const CORRUPT_HINT = 'the header is corrupt or was written by a broken tool: re-download or re-save the file';

interface Entry {
  name: string;
  info: TensorInfo;
  begin: number; // offset inside the data section
  end: number;
}

function shapeStr(shape: number[]): string {
  return `[${shape.join(', ')}]`;
}

function numel(shape: number[]): number {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}

function isNonNegInt(x: unknown): x is number {
  return typeof x === 'number' && Number.isSafeInteger(x) && x >= 0;
}

/** Levenshtein distance, for "did you mean" hints only. */
function editDistance(a: string, b: string): number {
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const cur = [i];
    for (let j = 1; j <= b.length; j++) {
      cur[j] = Math.min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] === b[j - 1] ? 0 : 1));
    }
    prev = cur;
  }
  return prev[b.length];
}

/** Up to `k` names closest to `name`, for a hint line. */
export function closeNames(name: string, names: string[], k = 3): string[] {
  return names
    .map((n) => ({ n, d: editDistance(name, n) }))
    .sort((x, y) => x.d - y.d || (x.n < y.n ? -1 : 1))
    .slice(0, k)
    .map((x) => x.n);
}

function missingTensor(name: string, where: string, names: string[]): TensorMismatchError {
  const close = closeNames(name, names);
  const hint = close.length
    ? `closest names: ${close.map((n) => `'${n}'`).join(', ')}; call names() to list all ${names.length}`
    : `${where} holds no tensors`;
  return new TensorMismatchError(name, `not found in ${where} (${names.length} tensors)`, hint);
}

/**
 * One .safetensors file, opened for on-demand reads. The header is fully validated by `open`.
 *
 * @example
 * const f = SafetensorsFile.open('tiny-llama/model.safetensors');
 * f.info('model.embed_tokens.weight'); // { dtype: 'bf16', shape: [4096, 256], ... }
 * const w = f.readF32('model.embed_tokens.weight');
 * f.close();
 */
export class SafetensorsFile implements TensorSource {
  readonly path: string;
  readonly metadata: Record<string, string>;
  /** Absolute file offset where the data section starts (8 + header length). */
  readonly dataStart: number;
  private fd: number;
  private readonly entries: Map<string, Entry>;
  private readonly order: string[];

  private constructor(file: string, fd: number, dataStart: number, entries: Entry[], metadata: Record<string, string>) {
    this.path = file;
    this.fd = fd;
    this.dataStart = dataStart;
    this.metadata = metadata;
    this.entries = new Map(entries.map((e) => [e.name, e]));
    this.order = entries.map((e) => e.name);
  }

  /** Open `file` and validate its header (throws CheckpointError on any problem; no tensor is read). */
  static open(file: string): SafetensorsFile {
    let fd: number;
    try {
      fd = fs.openSync(file, 'r');
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'ENOENT') throw new CheckpointError(file, 'file not found', 'check the path; a checkpoint folder is opened with openTensors(dir)');
      throw new CheckpointError(file, `cannot open: ${(err as Error).message}`, 'check the path and its permissions');
    }
    try {
      const { dataStart, entries, metadata } = parseHeader(file, fd);
      return new SafetensorsFile(file, fd, dataStart, entries, metadata);
    } catch (err) {
      fs.closeSync(fd);
      throw err;
    }
  }

  /** Tensor names in file (data offset) order. */
  names(): string[] {
    return [...this.order];
  }

  has(name: string): boolean {
    return this.entries.has(name);
  }

  info(name: string): TensorInfo {
    const e = this.entry(name);
    return { ...e.info, shape: [...e.info.shape] };
  }

  /** Read a tensor's stored values into a fresh, aligned array (f16/bf16 as bit patterns). */
  read(name: string): HostTensor {
    const e = this.entry(name);
    const bytes = this.readBytes(e);
    const { dtype, shape, storedDtype } = e.info;
    let data: HostArray;
    if (storedDtype === 'I64') {
      data = narrowI64(this.path, name, bytes);
    } else if (dtype === 'f32') {
      data = new Float32Array(bytes.buffer);
    } else if (dtype === 'i32') {
      data = new Int32Array(bytes.buffer);
    } else {
      data = new Uint16Array(bytes.buffer);
    }
    return { dtype, shape: [...shape], data };
  }

  /** Read a tensor widened to f32 (exact for f16/bf16; i32 rounded to the nearest f32 beyond ±2^24). */
  readF32(name: string): Float32Array {
    const t = this.read(name);
    // read() already returns a fresh array, so f32 needs no second copy.
    return t.dtype === 'f32' ? (t.data as Float32Array) : toF32(t.data, t.dtype);
  }

  /** Release the file descriptor. Safe to call twice; reads after close throw. */
  close(): void {
    if (this.fd >= 0) {
      fs.closeSync(this.fd);
      this.fd = -1;
    }
  }

  private entry(name: string): Entry {
    const e = this.entries.get(name);
    if (!e) throw missingTensor(name, this.path, this.order);
    return e;
  }

  private readBytes(e: Entry): Uint8Array {
    if (this.fd < 0) throw new CheckpointError(this.path, `cannot read tensor '${e.name}': the file was closed`, 'read tensors before calling close()');
    // NOTE: a fresh ArrayBuffer is 8-byte aligned, so the typed-array view over it is always valid, even
    // when the tensor's offset in the file is odd (which the format allows).
    let bytes: Uint8Array;
    try {
      bytes = new Uint8Array(e.end - e.begin);
    } catch {
      throw new CheckpointError(this.path, `tensor '${e.name}' (${e.end - e.begin} bytes) is too large for one array`, 'split the tensor or use a smaller checkpoint');
    }
    let off = 0;
    while (off < bytes.byteLength) {
      const want = Math.min(READ_CHUNK, bytes.byteLength - off);
      const got = fs.readSync(this.fd, bytes, off, want, this.dataStart + e.begin + off);
      if (got === 0) {
        throw new CheckpointError(this.path, `tensor '${e.name}': file ended after ${off} of ${bytes.byteLength} bytes (it shrank after opening?)`, TRUNCATED_HINT);
      }
      off += got;
    }
    return bytes;
  }
}

/** I64 → Int32Array, refusing values that do not fit (they would silently wrap otherwise). */
function narrowI64(file: string, name: string, bytes: Uint8Array): Int32Array {
  const src = new BigInt64Array(bytes.buffer);
  const out = new Int32Array(src.length);
  for (let i = 0; i < src.length; i++) {
    const v = src[i];
    if (v > 2147483647n || v < -2147483648n) {
      throw new CheckpointError(file, `tensor '${name}' is I64 and element ${i} = ${v} does not fit in i32`, 'Brickwork reads I64 tensors as i32; convert the tensor to I32 (or F32) before loading');
    }
    out[i] = Number(v);
  }
  return out;
}

/** Read and validate the header of an open file. Every check names the file and, where one is at fault, the tensor. */
function parseHeader(file: string, fd: number): { dataStart: number; entries: Entry[]; metadata: Record<string, string> } {
  const st = fs.fstatSync(fd);
  if (!st.isFile()) throw new CheckpointError(file, 'is not a regular file', 'pass a .safetensors file; open a checkpoint folder with openTensors(dir)');
  const size = st.size;
  if (size < 8) {
    throw new CheckpointError(file, `file is ${size} bytes, shorter than the 8-byte header length every safetensors file starts with`, TRUNCATED_HINT);
  }
  const lenBuf = Buffer.alloc(8);
  fs.readSync(fd, lenBuf, 0, 8, 0);
  const headerLen = lenBuf.readBigUInt64LE(0);
  if (headerLen > BigInt(size - 8)) {
    throw new CheckpointError(file, `header length ${headerLen} exceeds the ${size - 8} bytes that follow it (file is ${size} bytes)`,
      headerLen > BigInt(MAX_HEADER_BYTES) ? 'this is not a safetensors file, or its first 8 bytes are corrupt' : TRUNCATED_HINT);
  }
  const n = Number(headerLen);
  if (n > MAX_HEADER_BYTES) throw new CheckpointError(file, `header length ${n} exceeds the 100 MB limit of the format`, CORRUPT_HINT);
  if (n < 2) throw new CheckpointError(file, `header length ${n} is too short to hold a JSON object`, CORRUPT_HINT);

  const headerBytes = Buffer.alloc(n);
  fs.readSync(fd, headerBytes, 0, n, 8);
  let header: unknown;
  try {
    header = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(headerBytes));
  } catch (err) {
    throw new CheckpointError(file, `header (${n} bytes at offset 8) is not valid UTF-8 JSON: ${(err as Error).message}`, `${CORRUPT_HINT} (or it is not a safetensors file)`);
  }
  if (typeof header !== 'object' || header === null || Array.isArray(header)) {
    throw new CheckpointError(file, `header must be a JSON object, found ${Array.isArray(header) ? 'an array' : typeof header}`, CORRUPT_HINT);
  }

  const dataStart = 8 + n;
  const dataSize = size - dataStart;
  let metadata: Record<string, string> = {};
  const entries: Entry[] = [];
  for (const [name, raw] of Object.entries(header as Record<string, unknown>)) {
    if (name === '__metadata__') {
      metadata = parseMetadata(file, raw);
      continue;
    }
    const where = `tensor '${name}'`;
    if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) {
      throw new CheckpointError(file, `${where}: header entry must be an object with dtype, shape and data_offsets`, CORRUPT_HINT);
    }
    const { dtype, shape, data_offsets: offsets } = raw as Record<string, unknown>;
    const missing = (['dtype', 'shape', 'data_offsets'] as const).filter((k) => (raw as Record<string, unknown>)[k] === undefined);
    if (missing.length) throw new CheckpointError(file, `${where}: header entry is missing ${missing.join(', ')}`, CORRUPT_HINT);

    if (typeof dtype !== 'string') throw new CheckpointError(file, `${where}: dtype must be a string, found ${JSON.stringify(dtype)}`, CORRUPT_HINT);
    const readable = READABLE[dtype];
    if (!readable) {
      if (KNOWN_UNSUPPORTED.has(dtype)) {
        throw new CheckpointError(file, `${where}: dtype ${dtype} is not supported (Brickwork reads F32, F16, BF16, I32, I64)`, 'convert the checkpoint to F32, F16 or BF16 (e.g. with torch and safetensors.torch.save_file)');
      }
      throw new CheckpointError(file, `${where}: unknown dtype '${dtype}' (expected one of F32, F16, BF16, I32, I64)`, CORRUPT_HINT);
    }
    if (!Array.isArray(shape) || !shape.every(isNonNegInt)) {
      throw new CheckpointError(file, `${where}: shape must be an array of non-negative integers, found ${JSON.stringify(shape)}`, CORRUPT_HINT);
    }
    if (!Array.isArray(offsets) || offsets.length !== 2 || !offsets.every(isNonNegInt)) {
      throw new CheckpointError(file, `${where}: data_offsets must be [begin, end] with non-negative integers, found ${JSON.stringify(offsets)}`, CORRUPT_HINT);
    }
    const [begin, end] = offsets as [number, number];
    if (end < begin) throw new CheckpointError(file, `${where}: data_offsets [${begin}, ${end}] end before they begin`, CORRUPT_HINT);
    const count = numel(shape);
    const need = count * readable.bytes;
    if (!Number.isSafeInteger(need) || end - begin !== need) {
      throw new CheckpointError(file,
        `${where}: data_offsets [${begin}, ${end}] span ${end - begin} bytes but shape ${shapeStr(shape)} × ${dtype} needs ${need} bytes`,
        CORRUPT_HINT);
    }
    entries.push({ name, begin, end, info: { dtype: readable.dtype, shape: [...shape], byteLength: need, storedDtype: dtype } });
  }

  entries.sort((a, b) => a.begin - b.begin || a.end - b.end || (a.name < b.name ? -1 : 1));
  // Checked in file order, so a truncated file names the first tensor that was cut off.
  const cut = entries.filter((e) => e.end > dataSize);
  if (cut.length) {
    const e = cut[0];
    throw new CheckpointError(file,
      `tensor '${e.name}': data ends at byte ${e.end} of the data section, but the data section has only ${dataSize} bytes ` +
      `(file is ${size} bytes; ${cut.length} tensor${cut.length === 1 ? '' : 's'} affected)`,
      TRUNCATED_HINT);
  }
  // Overlapping ranges mean two tensors share bytes: a corrupt header, never a valid file.
  let prev: Entry | undefined;
  for (const e of entries) {
    if (e.end === e.begin) continue; // empty tensors occupy no bytes
    if (prev && e.begin < prev.end) {
      throw new CheckpointError(file,
        `tensors '${prev.name}' [${prev.begin}, ${prev.end}] and '${e.name}' [${e.begin}, ${e.end}] have overlapping data_offsets`,
        CORRUPT_HINT);
    }
    prev = e;
  }
  return { dataStart, entries, metadata };
}

function parseMetadata(file: string, raw: unknown): Record<string, string> {
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) {
    throw new CheckpointError(file, `__metadata__ must be an object of strings, found ${JSON.stringify(raw)}`, CORRUPT_HINT);
  }
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(raw as Record<string, unknown>)) {
    if (typeof v !== 'string') throw new CheckpointError(file, `__metadata__.${k} must be a string, found ${JSON.stringify(v)}`, CORRUPT_HINT);
    out[k] = v;
  }
  return out;
}

const INDEX_FILE = 'model.safetensors.index.json';

/**
 * The tensors of a checkpoint, possibly split over shards, behind one TensorSource API.
 * Built by `openTensors`.
 */
export class TensorStore implements TensorSource {
  /** The file or folder this store was opened from. */
  readonly source: string;
  /** Shard files, in the order they were opened. */
  readonly files: string[];
  /** `__metadata__` of the shards, merged (first shard wins on conflicts). */
  readonly metadata: Record<string, string>;
  private readonly shards: SafetensorsFile[];
  private readonly where: Map<string, SafetensorsFile>;
  private readonly order: string[];

  constructor(source: string, shards: SafetensorsFile[], where: Map<string, SafetensorsFile>) {
    this.source = source;
    this.shards = shards;
    this.files = shards.map((s) => s.path);
    this.where = where;
    this.order = [...where.keys()];
    const meta: Record<string, string> = {};
    for (const s of [...shards].reverse()) Object.assign(meta, s.metadata);
    this.metadata = meta;
  }

  names(): string[] {
    return [...this.order];
  }

  has(name: string): boolean {
    return this.where.has(name);
  }

  /** Path of the shard holding `name`. */
  fileOf(name: string): string {
    return this.shard(name).path;
  }

  info(name: string): TensorInfo {
    return this.shard(name).info(name);
  }

  read(name: string): HostTensor {
    return this.shard(name).read(name);
  }

  readF32(name: string): Float32Array {
    return this.shard(name).readF32(name);
  }

  close(): void {
    for (const s of this.shards) s.close();
  }

  private shard(name: string): SafetensorsFile {
    const s = this.where.get(name);
    if (!s) throw missingTensor(name, this.source, this.order);
    return s;
  }
}

/**
 * Open a checkpoint's tensors: a .safetensors file, a `model.safetensors.index.json`, or a folder holding
 * `model.safetensors.index.json` (sharded), `model.safetensors`, or exactly one `*.safetensors` file.
 * Every header (and the index) is validated before this returns.
 *
 * @example
 * const store = openTensors('models/llama-3.2-1b');
 * const q = store.readF32('model.layers.0.self_attn.q_proj.weight'); // (H*D, C)
 * store.close();
 */
export function openTensors(location: string): TensorStore {
  let st: fs.Stats;
  try {
    st = fs.statSync(location);
  } catch {
    throw new CheckpointError(location, 'not found', 'pass a checkpoint folder or a .safetensors file');
  }
  if (st.isFile()) {
    if (location.endsWith('.index.json')) return openSharded(location);
    return single(location, SafetensorsFile.open(location));
  }
  const index = path.join(location, INDEX_FILE);
  if (fs.existsSync(index)) return openSharded(index, location);
  const model = path.join(location, 'model.safetensors');
  if (fs.existsSync(model)) return single(location, SafetensorsFile.open(model));
  const found = fs.readdirSync(location).filter((f) => f.endsWith('.safetensors')).sort();
  if (found.length === 1) return single(location, SafetensorsFile.open(path.join(location, found[0])));
  if (found.length === 0) {
    throw new CheckpointError(location, 'folder holds no .safetensors file', 'download the weights (model.safetensors or shards + model.safetensors.index.json) into this folder');
  }
  throw new CheckpointError(location, `folder holds ${found.length} .safetensors files (${found.slice(0, 4).join(', ')}${found.length > 4 ? ', …' : ''}) and no ${INDEX_FILE}`,
    `add a ${INDEX_FILE} mapping tensors to shards, or pass the one file to use`);
}

function single(source: string, f: SafetensorsFile): TensorStore {
  return new TensorStore(source, [f], new Map(f.names().map((n) => [n, f])));
}

/** Open a sharded checkpoint from its index; every error about the mapping names the index file. */
function openSharded(indexPath: string, source = indexPath): TensorStore {
  const dir = path.dirname(indexPath);
  const badIndex = 'the index is corrupt: re-download model.safetensors.index.json with the shards';
  let parsed: unknown;
  try {
    parsed = JSON.parse(fs.readFileSync(indexPath, 'utf8'));
  } catch (err) {
    throw new CheckpointError(indexPath, `is not valid JSON: ${(err as Error).message}`, badIndex);
  }
  const weightMap = (parsed as Record<string, unknown> | null)?.weight_map;
  if (typeof parsed !== 'object' || parsed === null || typeof weightMap !== 'object' || weightMap === null || Array.isArray(weightMap)) {
    throw new CheckpointError(indexPath, 'must be an object with a "weight_map" object (tensor name → shard file)', badIndex);
  }
  const byShard = new Map<string, string[]>();
  for (const [name, shard] of Object.entries(weightMap as Record<string, unknown>)) {
    if (typeof shard !== 'string' || shard === '') {
      throw new CheckpointError(indexPath, `weight_map['${name}'] must be a shard file name, found ${JSON.stringify(shard)}`, badIndex);
    }
    // Shards live next to the index; a path that escapes the folder is refused rather than followed.
    if (path.isAbsolute(shard) || shard.split(/[\\/]/).includes('..')) {
      throw new CheckpointError(indexPath, `weight_map['${name}'] = '${shard}' points outside the checkpoint folder`, badIndex);
    }
    const list = byShard.get(shard) ?? [];
    list.push(name);
    byShard.set(shard, list);
  }
  if (byShard.size === 0) throw new CheckpointError(indexPath, 'weight_map is empty', badIndex);
  for (const [shard, names] of byShard) {
    if (!fs.existsSync(path.join(dir, shard))) {
      throw new CheckpointError(indexPath,
        `weight_map names shard '${shard}' (for '${names[0]}'${names.length > 1 ? ` and ${names.length - 1} more` : ''}) but ${path.join(dir, shard)} does not exist`,
        'the download is incomplete: fetch every shard listed in the index');
    }
  }

  const shards: SafetensorsFile[] = [];
  try {
    const opened = new Map<string, SafetensorsFile>();
    for (const [shard, names] of byShard) {
      const f = SafetensorsFile.open(path.join(dir, shard));
      shards.push(f);
      opened.set(shard, f);
      for (const name of names) {
        if (!f.has(name)) {
          throw new CheckpointError(indexPath, `weight_map puts tensor '${name}' in '${shard}', but that shard does not contain it`,
            'the index and shards come from different saves: re-download them together');
        }
      }
    }
    // Keep the index's name order (HF indexes list names sorted), independent of shard order.
    const where = new Map<string, SafetensorsFile>();
    for (const [name, shard] of Object.entries(weightMap as Record<string, string>)) where.set(name, opened.get(shard)!);
    return new TensorStore(source, shards, where);
  } catch (err) {
    for (const s of shards) s.close();
    throw err;
  }
}

/**
 * Write tensors as a safetensors file, atomically. The header JSON is space-padded to a multiple of 8
 * bytes so the data section starts 8-aligned; tensors are laid out contiguously in the given order.
 *
 * @example
 * writeSafetensors('out/model.safetensors', [
 *   { name: 'w', dtype: 'f32', shape: [2, 3], data: new Float32Array(6) },
 * ], { format: 'pt' });
 */
export function writeSafetensors(file: string, tensors: TensorToWrite[], metadata?: Record<string, string>): void {
  const header: Record<string, unknown> = {};
  if (metadata !== undefined) {
    for (const [k, v] of Object.entries(metadata)) {
      if (typeof v !== 'string') throw new UsageError(`metadata['${k}'] must be a string, found ${typeof v}`, 'safetensors metadata holds only strings: JSON.stringify other values');
    }
    header.__metadata__ = { ...metadata };
  }
  const chunks: Uint8Array[] = [];
  let offset = 0;
  for (const t of tensors) {
    if (!t.name || t.name === '__metadata__') throw new TensorMismatchError(t.name, 'invalid tensor name', 'use a non-empty name other than __metadata__');
    if (Object.prototype.hasOwnProperty.call(header, t.name)) throw new TensorMismatchError(t.name, 'appears twice in the list to write', 'give each tensor a unique name');
    if (!(t.dtype in WRITE_DTYPE)) throw new TensorMismatchError(t.name, `unknown dtype '${t.dtype}'`, 'use one of f32, f16, bf16, i32');
    if (!Array.isArray(t.shape) || !t.shape.every(isNonNegInt)) {
      throw new TensorMismatchError(t.name, `shape must be non-negative integers, found ${JSON.stringify(t.shape)}`, 'fix the shape passed to writeSafetensors');
    }
    const expectedKind = t.dtype === 'f32' ? Float32Array : t.dtype === 'i32' ? Int32Array : Uint16Array;
    if (!(t.data instanceof expectedKind)) {
      throw new TensorMismatchError(t.name, `dtype ${t.dtype} needs a ${expectedKind.name}, found ${t.data?.constructor?.name}`,
        t.dtype === 'f16' || t.dtype === 'bf16' ? 'convert with fromF32(data, dtype) from tensor/dtype.ts' : 'pass the typed array matching the dtype');
    }
    const count = numel(t.shape);
    if (t.data.length !== count) {
      throw new TensorMismatchError(t.name, `shape ${shapeStr(t.shape)} needs ${count} elements, data has ${t.data.length}`, 'fix the shape or the data passed to writeSafetensors');
    }
    const bytes = count * DTYPE_BYTES[t.dtype];
    header[t.name] = { dtype: WRITE_DTYPE[t.dtype], shape: t.shape, data_offsets: [offset, offset + bytes] };
    chunks.push(new Uint8Array(t.data.buffer, t.data.byteOffset, bytes));
    offset += bytes;
  }
  let json = Buffer.from(JSON.stringify(header), 'utf8');
  const pad = (8 - (json.byteLength % 8)) % 8;
  if (pad) json = Buffer.concat([json, Buffer.alloc(pad, 0x20)]);
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(json.byteLength), 0);
  writeFileAtomic(file, [len, json, ...chunks]);
}
