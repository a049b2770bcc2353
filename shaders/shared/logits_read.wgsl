// The logits read-only and the gradient in a buffer of its own, laid out like x from element
// P.out_off. Twin of logits_inplace.wgsl (same names); the host picks one per launch.
@group(0) @binding(1) var<storage, read> x: array<XS>;
@group(0) @binding(2) var<storage, read_write> grad: array<XS>;
#load x cap
#store grad

// Writes vector i of the lane's row of the gradient.
fn write_grad(r: RowLane, i: u32, v: V) {
    store_grad(row_at(r, P.out_off), i, v);
}

// Nothing to order: the logits are never written.
fn grad_fence() {}
