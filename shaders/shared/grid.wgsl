// The grid is 2-D when a dispatch needs more workgroups than one dimension allows (x up to
// the per-dimension limit, then y); this is the workgroup's index in the flattened grid.
// Twin: `Gpu::dispatch` in src/gpu/kernels.rs.
fn group_index(wid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return wid.y * nwg.x + wid.x;
}
