import { measureMemoryBandwidth } from '/work/main/src/backends/cpu/fast/bandwidth.ts';
console.log(measureMemoryBandwidth()); console.log(measureMemoryBandwidth());
