// Safetensors files on disk: `SafetensorsFile.open` (pread through safetensors-read.ts, which validates
// the header and decodes tensors), `openTensors` for a file or a sharded HF folder (TensorStore presents
// both alike), and `writeSafetensors` (atomic, see atomic.ts).

import * as fs from 'node:fs';
import * as path from 'node:path';
import { CheckpointError, TensorMismatchError, UsageError } from '../util/errors.ts';
import { DTYPE_BYTES, type DType, type HostArray } from '../tensor/dtype.ts';
import { writeFileAtomic } from './atomic.ts';
import { SafetensorsReader, isNonNegInt, missingTensor, numel, shapeStr, type ByteSource, type HostTensor, type TensorInfo, type TensorSource } from './safetensors-read.ts';

export { SafetensorsReader, closeNames, type ByteSource, type HostTensor, type TensorInfo, type TensorSource } from './safetensors-read.ts';

/** A tensor handed to writeSafetensors. `data` must be the HostArray kind of its dtype. */
export interface TensorToWrite {
  name: string;
  dtype: DType;
  shape: number[];
  data: HostArray;
}

const WRITE_DTYPE: Record<DType, string> = { f32: 'F32', f16: 'F16', bf16: 'BF16', i32: 'I32' };

// readSync is capped at 2 GiB per call; read big tensors in chunks below that.
const READ_CHUNK = 1 << 30;

/** An open file descriptor as a ByteSource (pread, in chunks). */
class FdBytes implements ByteSource {
  constructor(private fd: number, readonly size: number) {}

  readInto(into: Uint8Array, offset: number): number {
    let off = 0;
    while (off < into.byteLength) {
      const got = fs.readSync(this.fd, into, off, Math.min(READ_CHUNK, into.byteLength - off), offset + off);
      if (got === 0) break;
      off += got;
    }
    return off;
  }

  close(): void {
    if (this.fd >= 0) {
      fs.closeSync(this.fd);
      this.fd = -1;
    }
  }
}

/**
 * One .safetensors file on disk, opened for on-demand reads. The header is fully validated by `open`.
 *
 * @example
 * const f = SafetensorsFile.open('tiny-llama/model.safetensors');
 * f.info('model.embed_tokens.weight'); // { dtype: 'bf16', shape: [4096, 256], ... }
 * const w = f.readF32('model.embed_tokens.weight');
 * f.close();
 */
export class SafetensorsFile extends SafetensorsReader {
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
      const st = fs.fstatSync(fd);
      if (!st.isFile()) throw new CheckpointError(file, 'is not a regular file', 'pass a .safetensors file; open a checkpoint folder with openTensors(dir)');
      return new SafetensorsFile(file, new FdBytes(fd, st.size));
    } catch (err) {
      fs.closeSync(fd);
      throw err;
    }
  }
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
