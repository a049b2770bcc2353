//! Every WGSL variant the crate can build parses and validates with naga, without a GPU.
//! The workgroup-memory variants validate without the subgroup capability: proof that the
//! fallback needs none.

#[test]
fn every_shader_variant_validates() {
    let variants = xent::gpu::shader_variants();
    assert!(!variants.is_empty());
    for (name, source) in variants {
        let module = naga::front::wgsl::parse_str(&source)
            .unwrap_or_else(|e| panic!("{name}: {}", e.emit_to_string(&source)));
        let caps = if name.contains("Subgroup") {
            naga::valid::Capabilities::SUBGROUP
        } else {
            naga::valid::Capabilities::empty()
        };
        naga::valid::Validator::new(naga::valid::ValidationFlags::all(), caps)
            .subgroup_stages(naga::valid::ShaderStages::COMPUTE)
            .subgroup_operations(naga::valid::SubgroupOperationSet::all())
            .validate(&module)
            .unwrap_or_else(|e| panic!("{name}: {}", e.emit_to_string(&source)));
    }
}
