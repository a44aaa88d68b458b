// Atomic writes for checkpoints: a save either fully lands or leaves the previous state untouched.
// Files: written to a temp file in the same directory, fsync'd, then renamed over the target (POSIX
// rename is atomic, so readers see the old file or the new one, never a partial one).
// Folders: built in a sibling temp folder, then swapped in with two renames; the old folder is kept
// under a backup name until the new one is in place (see writeDirAtomic for the one small window).

import * as fs from 'node:fs';
import * as path from 'node:path';
import { randomBytes } from 'node:crypto';

/** `.<name>.<pid>.<random>.<suffix>` next to `target`: same directory, so the final rename never crosses a filesystem. */
function siblingName(target: string, suffix: string): string {
  const dir = path.dirname(target);
  const base = path.basename(target);
  return path.join(dir, `.${base}.${process.pid}.${randomBytes(4).toString('hex')}.${suffix}`);
}

/** fsync a directory so the rename itself survives a power loss. Best effort: some platforms refuse. */
function fsyncDir(dir: string): void {
  let fd: number | undefined;
  try {
    fd = fs.openSync(dir, 'r');
    fs.fsyncSync(fd);
  } catch {
    // NOTE: Windows and some network filesystems cannot open/fsync a directory; the rename is still atomic.
  } finally {
    if (fd !== undefined) fs.closeSync(fd);
  }
}

function writeAll(fd: number, bytes: Uint8Array): void {
  // A non-byte chunk would otherwise be skipped silently (its byteLength is undefined) and save a short file.
  if (!(bytes instanceof Uint8Array)) throw new TypeError(`writeFileAtomic: chunk is not a Uint8Array (${typeof bytes})`);
  let off = 0;
  while (off < bytes.byteLength) off += fs.writeSync(fd, bytes, off, bytes.byteLength - off);
}

/**
 * Write `data` to `target` atomically: either the whole new content is at `target`, or the old file
 * (or nothing) is. An array of chunks is written in order without concatenating them first, so a large
 * checkpoint never needs a second copy in memory. On any error the temp file is removed and the error rethrown.
 *
 * @example
 * writeFileAtomic('out/config.json', JSON.stringify(spec, null, 2));
 * writeFileAtomic('out/model.safetensors', [headerBytes, tensorBytes]);
 */
export function writeFileAtomic(target: string, data: Uint8Array | string | Uint8Array[]): void {
  const tmp = siblingName(target, 'tmp');
  let fd: number | undefined;
  try {
    fd = fs.openSync(tmp, 'wx', 0o644);
    const chunks = typeof data === 'string' ? [Buffer.from(data, 'utf8')] : Array.isArray(data) ? data : [data];
    for (const chunk of chunks) writeAll(fd, chunk);
    fs.fsyncSync(fd);
    fs.closeSync(fd);
    fd = undefined;
    fs.renameSync(tmp, target);
  } catch (err) {
    if (fd !== undefined) {
      try { fs.closeSync(fd); } catch { /* already failing; keep the first error */ }
    }
    fs.rmSync(tmp, { force: true });
    throw err;
  }
  fsyncDir(path.dirname(target));
}

/**
 * Clean up after writeDirAtomic calls that were killed: the temp folders they left (`.<name>.<pid>.<rand>.tmp`,
 * complete or not) are removed, and where `dir` itself is missing because the kill fell between the two
 * renames, the complete previous folder (`.old`) is put back. Call it only while no other process writes `dir`.
 * Returns what it did, for a message.
 */
export function recoverDirAtomic(dir: string): { restored: boolean; removed: string[] } {
  const target = path.resolve(dir);
  const parent = path.dirname(target);
  if (!fs.existsSync(parent)) return { restored: false, removed: [] };
  const mine = new RegExp(`^\\.${path.basename(target).replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}\\.\\d+\\.[0-9a-f]{8}\\.(tmp|old)$`);
  const found = fs.readdirSync(parent).filter((n) => mine.test(n));
  let restored = false;
  const olds = found.filter((n) => n.endsWith('.old'));
  if (!fs.existsSync(target) && olds.length === 1) {
    fs.renameSync(path.join(parent, olds[0]), target);
    fsyncDir(parent);
    restored = true;
  }
  const removed = found.filter((n) => !(restored && n === olds[0]));
  for (const n of removed) fs.rmSync(path.join(parent, n), { recursive: true, force: true });
  return { restored, removed };
}

/**
 * Build a whole folder atomically: `fill(tmpDir)` writes into a fresh sibling temp folder; when it
 * resolves, the temp folder is renamed to `dir`. If `dir` already exists it is first renamed to a
 * backup name, the new folder is renamed in, and only then is the backup deleted; if the second
 * rename fails the backup is restored. If `fill` throws, the temp folder is removed and `dir` is untouched.
 *
 * NOTE: POSIX cannot atomically replace a non-empty directory, so between the two renames (microseconds)
 * `dir` does not exist. A crash exactly there leaves the complete old folder at `.<name>.<pid>.<rand>.old`
 * and the complete new one at `.<name>.<pid>.<rand>.tmp`: never a half-written folder at `dir`.
 *
 * @example
 * await writeDirAtomic('ckpt/step-100', async (tmp) => {
 *   writeFileAtomic(path.join(tmp, 'spec.json'), JSON.stringify(spec));
 *   writeSafetensors(path.join(tmp, 'model.safetensors'), tensors);
 * });
 */
export async function writeDirAtomic(dir: string, fill: (tmpDir: string) => Promise<void> | void): Promise<void> {
  const target = path.resolve(dir);
  fs.mkdirSync(path.dirname(target), { recursive: true });
  const tmp = siblingName(target, 'tmp');
  fs.mkdirSync(tmp);
  try {
    await fill(tmp);
  } catch (err) {
    fs.rmSync(tmp, { recursive: true, force: true });
    throw err;
  }

  let backup: string | undefined;
  if (fs.existsSync(target)) {
    backup = siblingName(target, 'old');
    try {
      fs.renameSync(target, backup);
    } catch (err) {
      fs.rmSync(tmp, { recursive: true, force: true });
      throw err;
    }
  }
  try {
    fs.renameSync(tmp, target);
  } catch (err) {
    if (backup !== undefined) fs.renameSync(backup, target);
    fs.rmSync(tmp, { recursive: true, force: true });
    throw err;
  }
  fsyncDir(path.dirname(target));
  // The new folder is in place; a failure to delete the backup only leaves a hidden leftover.
  if (backup !== undefined) {
    try { fs.rmSync(backup, { recursive: true, force: true }); } catch { /* leftover backup is harmless */ }
  }
}
