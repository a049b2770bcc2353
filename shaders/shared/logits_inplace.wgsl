// The gradient written over the logits (in place: no second rows × K buffer). Twin of
// logits_read.wgsl (same names). Each element is read, then overwritten, by the same lane;
// everything a row's other lanes read before the first write is read before grad_fence().
@group(0) @binding(1) var<storage, read_write> x: array<XS>;
#load x cap
#store x

// Writes vector i of the lane's row of the gradient, over the logits.
fn write_grad(r: RowLane, i: u32, v: V) {
    store_x(row_base(r), i, v);
}

// Orders the row's reads of the first pass before any lane's writes (a row of one lane
// reads and writes in its own order). P.g is uniform: the whole workgroup takes one branch.
fn grad_fence() {
    if (P.g > 1u) {
        storageBarrier();
    }
}
