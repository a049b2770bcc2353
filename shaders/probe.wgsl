// The lane probe, run once per context before subgroup reductions are trusted
// (src/gpu/probe.rs): every invocation of one workgroup writes the number that
// reduce_subgroup.wgsl's `lane_id` gives it and its subgroup's size. The host checks that the
// numbers are 0..WG-1, each once — full subgroups of one size, which Metal and Vulkan 1.3
// promise and Vulkan 1.1/1.2 drivers need not — and that no subgroup is smaller than the
// adapter's minimum, which the shuffle-only segments rely on. Built with the subgroup
// reductions only.
//
// Bindings (twin: src/gpu/probe.rs): 0: uniform (unused), 2: out, 2 × WG u32.

#import vec
#import md
#import reduce

@group(0) @binding(2) var<storage, read_write> out: array<u32>;

@compute @workgroup_size(WG)
fn lane_probe(@builtin(local_invocation_index) i: u32, l: Lane) {
    out[2u * i] = lane_id(l);
    out[2u * i + 1u] = l.sg_size;
}
