//! Host side of shaders/probe.wgsl: before a context trusts subgroup reductions, one
//! workgroup reports how its lanes are numbered, and a layout the reductions cannot use makes
//! the context fall back to workgroup memory (or, where subgroups were asked for explicitly,
//! fail) instead of returning wrong rows.

use crate::Result;
use crate::gpu::context::Gpu;
use crate::gpu::kernels::{KernelDef, Shader, Slot, VecWidth, WORKGROUP_SIZE};
use crate::gpu::workspace::{Workspace, begin_pass};

const LANE_PROBE: KernelDef = KernelDef {
    shader: Shader::Probe,
    entry: "lane_probe",
    bindings: &[(0, Slot::Uniform), (2, Slot::ReadWrite)],
};

impl Gpu {
    /// Runs the lane probe with this context's subgroup reductions: `Ok(None)` when the
    /// layout is one they can use, `Ok(Some(why))` when not.
    pub(crate) fn probe_lanes(&self) -> Result<Option<String>> {
        let wg = WORKGROUP_SIZE as usize;
        let out = self.scoped("the lane probe", || {
            Ok(self.storage("xent lane probe", 8 * wg as u64))
        })?;
        let kernel = self.kernel(&LANE_PROBE, VecWidth::One)?;
        let mut ws = Workspace::new(self);
        let mut encoder = self.encoder();
        {
            let mut pass = begin_pass(&mut encoder, "xent lane probe");
            let bindings = [(2, out.as_entire_buffer_binding())];
            ws.dispatch(&mut pass, &kernel, &[0u32; 4], &bindings, 1, 0)?;
        }
        self.submit("the lane probe", encoder)?;
        let words: Vec<u32> = self.read(&out, 0, 2 * wg)?;
        let (lanes, sizes): (Vec<u32>, Vec<u32>) = words.chunks(2).map(|w| (w[0], w[1])).unzip();
        Ok(lane_layout_problem(
            &lanes,
            &sizes,
            self.inner.info.subgroup_min_size,
        ))
    }
}

/// What is wrong with a workgroup's lane numbering (`lanes[i]`: the number invocation `i`
/// got; `sizes[i]`: its subgroup's size) for the subgroup reductions, which need every
/// number in `0..lanes.len()` exactly once and no subgroup below `min_size` lanes.
fn lane_layout_problem(lanes: &[u32], sizes: &[u32], min_size: u32) -> Option<String> {
    if let Some(&size) = sizes.iter().find(|&&s| s < min_size || s == 0) {
        return Some(format!(
            "a subgroup of {size} lanes, below the adapter's minimum of {min_size}"
        ));
    }
    let mut seen = vec![false; lanes.len()];
    for &lane in lanes {
        match seen.get_mut(lane as usize) {
            Some(s) if !*s => *s = true,
            _ => {
                return Some(format!(
                    "lane number {lane} out of range or repeated (subgroups not all full and of one size)"
                ));
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_full_subgroups_of_one_size_pass() {
        let wg = 256u32;
        // 8 subgroups of 32: the numbering the reductions assume.
        let lanes: Vec<u32> = (0..wg).collect();
        assert_eq!(lane_layout_problem(&lanes, &vec![32; 256], 32), None);
        // Two invocations with one number, as subgroups of varying size would give.
        let mut partial: Vec<u32> = (0..wg).collect();
        partial[200] = 199;
        let problem = lane_layout_problem(&partial, &vec![32; 256], 32);
        assert!(problem.is_some_and(|p| p.contains("repeated")));
        let mut beyond: Vec<u32> = (0..wg).collect();
        beyond[5] = 300;
        assert!(lane_layout_problem(&beyond, &vec![32; 256], 32).is_some());
        // A subgroup smaller than the adapter's stated minimum.
        let mut sizes = vec![32; 256];
        sizes[17] = 16;
        let problem = lane_layout_problem(&lanes, &sizes, 32);
        assert!(problem.is_some_and(|p| p.contains("below")));
    }
}
