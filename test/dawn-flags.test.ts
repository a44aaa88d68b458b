// Dawn's options in Node: BRICKWORK_DAWN_FLAGS parsed and merged with Brickwork's default toggles.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { dawnFlags } from '../src/backends/webgpu/device.ts';
import { BrickworkError } from '../src/index.ts';

const DEFAULTS = ['disable-dawn-features=timestamp_quantization', 'enable-dawn-features=disable_workgroup_init'];

test('Dawn flags: the defaults without BRICKWORK_DAWN_FLAGS', () => {
  assert.deepEqual(dawnFlags(undefined), DEFAULTS);
  assert.deepEqual(dawnFlags(''), DEFAULTS);
});

test('Dawn flags: options and toggle lists are kept; a word without = continues the previous list', () => {
  assert.deepEqual(dawnFlags('backend=null'), ['backend=null', ...DEFAULTS]);
  assert.deepEqual(dawnFlags('backend=null,enable-dawn-features=dump_shaders,disable_symbol_renaming'), [
    'backend=null',
    'enable-dawn-features=dump_shaders,disable_symbol_renaming,disable_workgroup_init',
    'disable-dawn-features=timestamp_quantization',
  ]);
  // The same key twice is one list.
  assert.deepEqual(dawnFlags('enable-dawn-features=dump_shaders, enable-dawn-features=use_dxc'),
    ['enable-dawn-features=dump_shaders,use_dxc,disable_workgroup_init', 'disable-dawn-features=timestamp_quantization']);
});

test('Dawn flags: a default gives way where the flags name its toggle in either list', () => {
  // Keep Dawn's zeroing of workgroup memory; keep its timestamp rounding; drop robust buffer access.
  assert.deepEqual(dawnFlags('disable-dawn-features=disable_workgroup_init'),
    ['disable-dawn-features=disable_workgroup_init,timestamp_quantization']);
  assert.deepEqual(dawnFlags('enable-dawn-features=timestamp_quantization'),
    ['enable-dawn-features=timestamp_quantization,disable_workgroup_init']);
  assert.deepEqual(dawnFlags('enable-dawn-features=disable_robustness'),
    ['enable-dawn-features=disable_robustness,disable_workgroup_init', 'disable-dawn-features=timestamp_quantization']);
});

test('Dawn flags: a first word that is not key=value is a clear error', () => {
  assert.throws(() => dawnFlags('null'), (e: unknown) => e instanceof BrickworkError && e.code === 'E_DAWN_FLAGS'
    && /starts with 'null', which is not key=value/.test(e.message) && /backend=null/.test(e.hint ?? ''));
});
