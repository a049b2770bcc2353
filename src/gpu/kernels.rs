//! Every pipeline and layout, built once per device on first use; WGSL assembly (`#import`);
//! binding and dispatch helpers shared by the op modules.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::{DType, Error, Result};

/// How the lanes of a workgroup combine their values in the row kernels' reductions (not
/// to be confused with a loss's [`LossReduction`](crate::LossReduction)).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum CrossLane {
    /// `XENT_CROSS_LANE=subgroup|workgroup` if set; else subgroup operations where the device
    /// has `SUBGROUP`, is a real GPU and numbers its lanes as the reductions need (a probe
    /// dispatch at construction checks: full subgroups of one size), workgroup memory
    /// otherwise (on lavapipe, a CPU adapter, workgroup memory measured faster).
    #[default]
    Auto,
    /// Subgroup operations (an error at construction if the device lacks `SUBGROUP` or its
    /// lane numbering fails the probe).
    Subgroup,
    /// Workgroup memory only: the portable fallback (GL has no subgroups).
    Workgroup,
}

/// Whether row kernels split rows into segments spread over several workgroups.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum RowSplit {
    /// Where a row is too long for one workgroup's loops, or too few rows would leave the
    /// device idle.
    #[default]
    Auto,
    /// Only where a row is too long for one workgroup's loops.
    Never,
    /// Every row into as many segments as it has lanes' worth of vectors (for testing the
    /// split path on any shape).
    Always,
}

/// Invocations per workgroup. Twin: `WG` in shaders/shared/reduce_*.wgsl.
pub(crate) const WORKGROUP_SIZE: u32 = 256;

/// How the row kernels spread work, per kind of adapter (see `RowPlan` in src/gpu/rows.rs).
/// The one home of these constants.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Tuning {
    /// Vectors one lane reads before its row is given more lanes.
    pub(crate) vecs_per_lane: usize,
    /// Fewest workgroups a dispatch should have before rows are given more lanes (and then
    /// long rows more segments).
    pub(crate) min_workgroups: usize,
    /// When rows are split ([`GpuOptions::row_split`](crate::GpuOptions::row_split)).
    pub(crate) split: RowSplit,
    /// Whether a whole row of up to `KEPT_VECS` vectors per lane stays in registers between
    /// its statistics and its write, so that it is read once (`RowPlan::kept`).
    pub(crate) keep_rows: bool,
    /// Whether matrix products go through workgroup-memory tiles (`gemm`) rather than each
    /// invocation reading its operands itself (`gemm_direct`; shaders/gemm.wgsl).
    pub(crate) tiled_products: bool,
}

impl Tuning {
    pub(crate) fn for_adapter(device_type: wgpu::DeviceType) -> Self {
        match device_type {
            // lavapipe, `xent bench --quick` (2026-11-24, 2-core EPYC), softmax GB/s at
            // 65536×10 / 32×1000 / 4096×4096 for vecs_per_lane 4, 16, 32, 64 with no floor:
            // 0.29/0.54/0.66, 0.62/0.72/0.78, 0.62/0.41/0.92, 0.62/0.41/0.98. Long lanes win
            // (each lane is a CPU SIMD loop, and every reduction step a barrier) until too few
            // workgroups are left to spread over the cores. The floor is one workgroup per
            // core (llvmpipe runs a thread per core and a workgroup whole on one thread), no
            // more: extra workgroups only add reductions and imbalance (2026-11-25, 2 cores:
            // one row of 262 144 in 2, 4 or 8 segments, 0.62, 0.68, 0.78 ms against 1.02 ms
            // whole), and a row of one lane needs no barrier while giving it a second lane to
            // make more workgroups cost more than it gained (the example's cross-entropy over
            // 1279 × 6 without reduction, 5 workgroups of one-lane rows against 10 of two-lane
            // rows: 0.27 against 0.35 ms per step).
            wgpu::DeviceType::Cpu => Tuning {
                vecs_per_lane: 64,
                min_workgroups: std::thread::available_parallelism().map_or(1, usize::from),
                split: RowSplit::Auto,
                // Measured slower here: softmax over 65 536 × 512 with the GPU layout
                // 111–115 ms read twice, 134–155 ms kept (2026-11-26): llvmpipe keeps the
                // array in memory, and its second read hits the cache anyway.
                keep_rows: false,
                // Workgroup memory is plain memory to llvmpipe and each barrier a switch of
                // every invocation's coroutine: linear cross-entropy 257 × 64 × 50 257 with
                // the three products, 2.8–3.8 s tiled, 1.4–1.5 s direct (2026-11-26).
                tiled_products: false,
            },
            // GPUs: up to 8 vectors per lane, i.e. a 32-lane subgroup per row of up to 1024
            // floats (PyTorch's and OneFlow's warp-per-row rule), and enough workgroups to
            // fill a large GPU's SMs several times over. Not yet measured on a GPU.
            _ => Tuning {
                vecs_per_lane: 8,
                min_workgroups: 1024,
                split: RowSplit::Auto,
                // One read of the row from memory instead of two. Not yet measured on a GPU.
                keep_rows: true,
                // Each operand loaded once per tile and used 16 times from workgroup memory.
                // Not yet measured on a GPU.
                tiled_products: true,
            },
        }
    }
}

/// The WGSL files, embedded at build time.
const SOFTMAX_WGSL: &str = include_str!("../../shaders/softmax.wgsl");
const REDUCE_WGSL: &str = include_str!("../../shaders/reduce.wgsl");
const CROSS_ENTROPY_WGSL: &str = include_str!("../../shaders/cross_entropy.wgsl");
const BCE_WGSL: &str = include_str!("../../shaders/bce.wgsl");
const INFO_WGSL: &str = include_str!("../../shaders/info.wgsl");
const JOINT_WGSL: &str = include_str!("../../shaders/joint.wgsl");
const PROBE_WGSL: &str = include_str!("../../shaders/probe.wgsl");
const GEMM_WGSL: &str = include_str!("../../shaders/gemm.wgsl");
const LOGS_WGSL: &str = include_str!("../../shaders/shared/logs.wgsl");
const VEC1_WGSL: &str = include_str!("../../shaders/shared/vec1.wgsl");
const VEC4_WGSL: &str = include_str!("../../shaders/shared/vec4.wgsl");
const MD_WGSL: &str = include_str!("../../shaders/shared/md.wgsl");
const GRID_WGSL: &str = include_str!("../../shaders/shared/grid.wgsl");
const LAYOUT_ALIGNED_WGSL: &str = include_str!("../../shaders/shared/layout_aligned.wgsl");
const LAYOUT_GATHERED_WGSL: &str = include_str!("../../shaders/shared/layout_gathered.wgsl");
const LAYOUT_PACKED_WGSL: &str = include_str!("../../shaders/shared/layout_packed.wgsl");
const HALF_WGSL: &str = include_str!("../../shaders/shared/half.wgsl");
const ROWS_WGSL: &str = include_str!("../../shaders/shared/rows.wgsl");
const SUM_WGSL: &str = include_str!("../../shaders/shared/sum.wgsl");
const ACTIVATIONS_WGSL: &str = include_str!("../../shaders/shared/activations.wgsl");
const SOFTCAP_WGSL: &str = include_str!("../../shaders/shared/softcap.wgsl");
const LOGITS_READ_WGSL: &str = include_str!("../../shaders/shared/logits_read.wgsl");
const LOGITS_INPLACE_WGSL: &str = include_str!("../../shaders/shared/logits_inplace.wgsl");
const REDUCE_SUBGROUP_WGSL: &str = include_str!("../../shaders/shared/reduce_subgroup.wgsl");
const REDUCE_WORKGROUP_WGSL: &str = include_str!("../../shaders/shared/reduce_workgroup.wgsl");

/// One op-family shader file (in one of its variants).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Shader {
    Softmax,
    Reduce,
    /// Cross-entropy with the gradient in its own buffer (or none).
    CrossEntropy,
    /// Cross-entropy writing the gradient over the logits.
    CrossEntropyInPlace,
    Bce,
    Info,
    Joint,
    /// The subgroup lane probe (src/gpu/probe.rs).
    Probe,
    /// Linear cross-entropy's matrix products (src/gpu/linear.rs).
    Gemm,
}

impl Shader {
    const ALL: [Shader; 9] = [
        Shader::Softmax,
        Shader::Reduce,
        Shader::CrossEntropy,
        Shader::CrossEntropyInPlace,
        Shader::Bce,
        Shader::Info,
        Shader::Joint,
        Shader::Probe,
        Shader::Gemm,
    ];

    pub(crate) fn file(self) -> &'static str {
        match self {
            Shader::Softmax => "shaders/softmax.wgsl",
            Shader::Reduce => "shaders/reduce.wgsl",
            Shader::CrossEntropy | Shader::CrossEntropyInPlace => "shaders/cross_entropy.wgsl",
            Shader::Bce => "shaders/bce.wgsl",
            Shader::Info => "shaders/info.wgsl",
            Shader::Joint => "shaders/joint.wgsl",
            Shader::Probe => "shaders/probe.wgsl",
            Shader::Gemm => "shaders/gemm.wgsl",
        }
    }

    /// The vector widths the shader is built at: joint tables are read one f32 at a time
    /// (their sums stride across rows and columns); the row ops and the binary cross-entropy
    /// read half precision too.
    fn widths(self) -> &'static [VecWidth] {
        match self {
            Shader::Joint | Shader::Probe | Shader::Gemm => &[VecWidth::One],
            Shader::Softmax | Shader::CrossEntropy | Shader::CrossEntropyInPlace | Shader::Info => {
                &[
                    VecWidth::One,
                    VecWidth::Four,
                    VecWidth::Gathered,
                    VecWidth::F16,
                    VecWidth::Bf16,
                ]
            }
            Shader::Bce => &[VecWidth::One, VecWidth::Four, VecWidth::F16, VecWidth::Bf16],
            Shader::Reduce => &[VecWidth::One, VecWidth::Four],
        }
    }

    /// Whether the shader reads tensors of `dtype`: f32 everywhere, f16 and bf16 in the row
    /// ops (softmax and the activations, cross-entropy, the information rows) and the binary
    /// cross-entropy.
    pub(crate) fn reads(self, dtype: DType) -> bool {
        match dtype {
            DType::F32 => true,
            DType::F16 => self.widths().contains(&VecWidth::F16),
            DType::Bf16 => self.widths().contains(&VecWidth::Bf16),
        }
    }

    /// The cross-lane code the shader is built with: both, but the probe, which tests the
    /// subgroup numbering, and the matrix products, which have no cross-lane reductions.
    fn cross_lanes(self) -> &'static [CrossLane] {
        match self {
            Shader::Probe => &[CrossLane::Subgroup],
            Shader::Gemm => &[CrossLane::Workgroup],
            _ => &[CrossLane::Subgroup, CrossLane::Workgroup],
        }
    }

    fn source(self) -> &'static str {
        match self {
            Shader::Softmax => SOFTMAX_WGSL,
            Shader::Reduce => REDUCE_WGSL,
            Shader::CrossEntropy | Shader::CrossEntropyInPlace => CROSS_ENTROPY_WGSL,
            Shader::Bce => BCE_WGSL,
            Shader::Info => INFO_WGSL,
            Shader::Joint => JOINT_WGSL,
            Shader::Probe => PROBE_WGSL,
            Shader::Gemm => GEMM_WGSL,
        }
    }
}

/// Elements per vector, how rows are laid out, and their element type. Twin:
/// shaders/shared/vec1.wgsl and vec4.wgsl (`V`, `W`), layout_aligned.wgsl,
/// layout_gathered.wgsl and layout_packed.wgsl.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum VecWidth {
    /// One f32 per load.
    One,
    /// One aligned 128-bit load per vector: rows a multiple of 4 long.
    Four,
    /// vec4 arithmetic on rows of any length, each vector gathered by four scalar loads.
    Gathered,
    /// Four f16 elements per 8-byte load (two u32 words, unpacked in the shader) from rows
    /// padded to a multiple of 4 elements (`Tensor::stride`).
    F16,
    /// [`VecWidth::F16`] for bf16 elements.
    Bf16,
}

impl VecWidth {
    /// `Four` when every row (or the whole run of elements) is a multiple of 4 long, else
    /// `One`.
    pub(crate) fn for_len(len: usize) -> Self {
        if len.is_multiple_of(4) {
            VecWidth::Four
        } else {
            VecWidth::One
        }
    }

    /// The width of `shader`'s row kernels for rows of `cols` elements of `dtype`: the
    /// half types' own; for f32 `Four` for a multiple of 4, else `Gathered` where the
    /// shader is built so, else `One`. The caller has checked that the shader
    /// [reads](Shader::reads) `dtype`.
    pub(crate) fn for_rows(shader: Shader, cols: usize, dtype: DType) -> Self {
        match (dtype, Self::for_len(cols)) {
            (DType::F16, _) => VecWidth::F16,
            (DType::Bf16, _) => VecWidth::Bf16,
            (DType::F32, VecWidth::One) if shader.widths().contains(&VecWidth::Gathered) => {
                VecWidth::Gathered
            }
            (DType::F32, w) => w,
        }
    }

    pub(crate) fn lanes(self) -> usize {
        match self {
            VecWidth::One => 1,
            VecWidth::Four | VecWidth::Gathered | VecWidth::F16 | VecWidth::Bf16 => 4,
        }
    }

    /// The half type's name in shaders/shared/half.wgsl's functions (`unpack_f16`, ...).
    fn half(self) -> Option<&'static str> {
        match self {
            VecWidth::F16 => Some("f16"),
            VecWidth::Bf16 => Some("bf16"),
            VecWidth::One | VecWidth::Four | VecWidth::Gathered => None,
        }
    }

    /// Vectors in a row of `cols` (the last one partial when gathered).
    pub(crate) fn vecs(self, cols: usize) -> usize {
        cols.div_ceil(self.lanes())
    }
}

/// The functions a `#load NAME` or `#store NAME` line stands for, at `width`: `load_NAME(base,
/// i, pad) -> V` reads vector i of the row starting at storage element `base` (missing
/// elements of a gathered row's last vector, or a half row's padding, are `pad`),
/// `store_NAME(base, i, v)` writes it (a gathered row's missing elements are not written).
/// `#load NAME FN` passes the elements it reads (not the pad) through the shader's function
/// `FN(V) -> V` (`through`; empty: none). `#load_f32 NAME` reads an f32 array whatever the
/// width's type (`FS` in the layouts), from element `base`.
fn row_access(directive: &str, name: &str, through: &str, width: VecWidth) -> String {
    match (directive, width.half()) {
        ("load", Some(t)) => format!(
            "fn load_{name}(base: u32, i: u32, pad: f32) -> V {{
    let v = unpack_{t}({name}[base + i]);
    return select(V(pad), {through}(v), vec_elems(i) < vec4<u32>(P.cols));
}}"
        ),
        // Four scalar loads, as a gathered row's (at the elements the layout's `vec_elems`
        // names).
        ("load_f32", Some(_)) => row_access_f32("load", name, through, VecWidth::Gathered),
        ("store", Some(t)) => format!(
            "fn store_{name}(base: u32, i: u32, v: V) {{
    {name}[base + i] = pack_{t}(v);
}}"
        ),
        ("load_f32", None) => row_access("load", name, through, width),
        _ => row_access_f32(directive, name, through, width),
    }
}

/// [`row_access`] at the f32 widths.
fn row_access_f32(directive: &str, name: &str, through: &str, width: VecWidth) -> String {
    match (directive, width) {
        ("load", VecWidth::Gathered) => format!(
            "fn load_{name}(base: u32, i: u32, pad: f32) -> V {{
    let e = vec_elems(i);
    let j = vec4<u32>(base) + min(e, vec4<u32>(P.cols - 1u));
    let v = V({name}[j.x], {name}[j.y], {name}[j.z], {name}[j.w]);
    return select(V(pad), {through}(v), e < vec4<u32>(P.cols));
}}"
        ),
        ("load", _) => format!(
            "fn load_{name}(base: u32, i: u32, pad: f32) -> V {{
    return {through}({name}[base + i]);
}}"
        ),
        // Four scalar stores, none in a branch: a missing element's store writes the
        // vector's first element again, to its own place (element e.x is always inside the
        // row). Branches around the stores cost lavapipe's in-place cross-entropy a third
        // (1024 × 50 257: 331–468 ms a call with them, 259–280 without; 50 256: 257–333).
        ("store", VecWidth::Gathered) => format!(
            "fn store_{name}(base: u32, i: u32, v: V) {{
    let e = vec_elems(i);
    let inside = e < vec4<u32>(P.cols);
    let j = vec4<u32>(base) + select(vec4<u32>(e.x), e, inside);
    let u = select(V(v.x), v, inside);
    {name}[j.x] = u.x;
    {name}[j.y] = u.y;
    {name}[j.z] = u.z;
    {name}[j.w] = u.w;
}}"
        ),
        ("store", _) => format!(
            "fn store_{name}(base: u32, i: u32, v: V) {{
    {name}[base + i] = v;
}}"
        ),
        _ => unreachable!("row_access is called for #load and #store only"),
    }
}

/// Resolves `#import NAME` lines: `vec` and `layout` (by width), `reduce` (by cross-lane path; the
/// subgroup one with `SHUFFLE_UNIT = subgroup_min`, the device's smallest subgroup size),
/// `logits` (by shader variant: in place or not) and the shared files `md`, `grid`, `rows`,
/// `sum`, `activations`, `logs`, `softcap`, `half`; and writes the functions of `#load NAME`,
/// `#load_f32 NAME` and `#store NAME` lines (`row_access`).
pub(crate) fn assemble(
    shader: Shader,
    width: VecWidth,
    cross_lane: CrossLane,
    subgroup_min: u32,
) -> String {
    let subgroup = format!("{REDUCE_SUBGROUP_WGSL}\nconst SHUFFLE_UNIT: u32 = {subgroup_min}u;");
    let mut out = String::new();
    expand(
        shader.source(),
        shader,
        width,
        cross_lane,
        &subgroup,
        &mut out,
    );
    out
}

/// [`assemble`]'s work on one text: the shader's own, or an imported file's (whose own
/// `#load` and `#store` lines are resolved too).
fn expand(
    source: &str,
    shader: Shader,
    width: VecWidth,
    cross_lane: CrossLane,
    subgroup: &str,
    out: &mut String,
) {
    for line in source.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        // `#load NAME`, `#load NAME FN` or `#store NAME`; anything else stays as written (and
        // fails to compile).
        let access = match words[..] {
            ["#load", name] => Some(("load", name, "")),
            ["#load", name, through] => Some(("load", name, through)),
            ["#load_f32", name] => Some(("load_f32", name, "")),
            ["#store", name] => Some(("store", name, "")),
            _ => None,
        };
        if let Some((directive, name, through)) = access {
            out.push_str(&row_access(directive, name, through, width));
            out.push('\n');
            continue;
        }
        let import = line.trim().strip_prefix("#import ").map(str::trim);
        let text = match import {
            Some("vec") => match width {
                VecWidth::One => VEC1_WGSL,
                VecWidth::Four | VecWidth::Gathered | VecWidth::F16 | VecWidth::Bf16 => VEC4_WGSL,
            },
            Some("layout") => match width {
                VecWidth::Gathered => LAYOUT_GATHERED_WGSL,
                VecWidth::F16 | VecWidth::Bf16 => LAYOUT_PACKED_WGSL,
                VecWidth::One | VecWidth::Four => LAYOUT_ALIGNED_WGSL,
            },
            Some("half") => HALF_WGSL,
            Some("md") => MD_WGSL,
            Some("grid") => GRID_WGSL,
            Some("rows") => ROWS_WGSL,
            Some("sum") => SUM_WGSL,
            Some("activations") => ACTIVATIONS_WGSL,
            Some("softcap") => SOFTCAP_WGSL,
            Some("logs") => LOGS_WGSL,
            Some("logits") => match shader {
                Shader::CrossEntropyInPlace => LOGITS_INPLACE_WGSL,
                _ => LOGITS_READ_WGSL,
            },
            Some("reduce") => match cross_lane {
                CrossLane::Subgroup => subgroup,
                CrossLane::Workgroup | CrossLane::Auto => REDUCE_WORKGROUP_WGSL,
            },
            Some(other) => panic!("{}: unknown #import {other}", shader.file()),
            None => {
                out.push_str(line);
                out.push('\n');
                continue;
            }
        };
        expand(text, shader, width, cross_lane, subgroup, out);
    }
}

/// Every WGSL source the crate can build, labelled: for validating them all (with naga, in
/// the tests) without a GPU.
pub fn shader_variants() -> Vec<(String, String)> {
    let mut all = Vec::new();
    for shader in Shader::ALL {
        for &width in shader.widths() {
            for &cross_lane in shader.cross_lanes() {
                all.push((
                    format!("{} ({shader:?}, {width:?}, {cross_lane:?})", shader.file()),
                    assemble(shader, width, cross_lane, wgpu::MINIMUM_SUBGROUP_MIN_SIZE),
                ));
            }
        }
    }
    all
}

/// What a binding slot holds.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Slot {
    Uniform,
    Read,
    ReadWrite,
}

/// An entry point with its ordered binding list, from which its layout is made.
#[derive(Clone, Copy, Debug)]
pub(crate) struct KernelDef {
    pub(crate) shader: Shader,
    pub(crate) entry: &'static str,
    pub(crate) bindings: &'static [(u32, Slot)],
}

/// A compiled pipeline and the layout its bind groups use.
pub(crate) struct Kernel {
    pub(crate) name: &'static str,
    pub(crate) pipeline: wgpu::ComputePipeline,
    pub(crate) layout: wgpu::BindGroupLayout,
}

/// Values for a shader's pipeline-overridable constants (WGSL `override` declarations, up
/// to six), fixed when its pipeline is built so that the compiler drops the branches they
/// decide: a mode tested in a hot loop costs even when it is off (cross-entropy's softcap
/// test in every load cost lavapipe 20 %, 4096 × 32 000: 607–742 → 815–885 ms). Unnamed ones
/// keep their defaults. A seventh is not kept: it marks the set `overflowed`, and
/// [`Kernels::get_or_compile`] refuses it with an [`Error::Internal`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Consts {
    slots: [Option<(&'static str, u32)>; 6],
    overflowed: bool,
}

impl Consts {
    /// No constant set: every one at its default.
    pub(crate) const NONE: Consts = Consts {
        slots: [None; 6],
        overflowed: false,
    };

    /// These constants and `name = value` (a bool override takes 0 or 1).
    pub(crate) fn with(mut self, name: &'static str, value: u32) -> Self {
        match self.slots.iter_mut().find(|slot| slot.is_none()) {
            Some(free) => *free = Some((name, value)),
            None => self.overflowed = true,
        }
        self
    }

    /// These constants and `SOFTCAP` (shared/softcap.wgsl) when `on`: without it the softcap's
    /// branches are specialised away.
    pub(crate) fn softcap(self, on: bool) -> Self {
        if on { self.with("SOFTCAP", 1) } else { self }
    }

    /// The values as wgpu takes them.
    fn values(&self) -> Vec<(&'static str, f64)> {
        self.slots
            .iter()
            .flatten()
            .map(|&(name, v)| (name, f64::from(v)))
            .collect()
    }
}

/// A pipeline's identity: shader variant, entry point, vector width, constants.
type KernelKey = (Shader, &'static str, VecWidth, Consts);

/// The pipeline cache of one device: each (entry point, width, constants) is compiled once.
#[derive(Default)]
pub(crate) struct Kernels {
    cache: Mutex<HashMap<KernelKey, Arc<Kernel>>>,
}

impl Kernels {
    /// The kernel for `def` at `width` with `consts`, made by `compile` on first use.
    pub(crate) fn get_or_compile(
        &self,
        def: &KernelDef,
        (width, consts): (VecWidth, Consts),
        compile: impl FnOnce() -> Result<Kernel>,
    ) -> Result<Arc<Kernel>> {
        if consts.overflowed {
            return Err(Error::Internal(format!(
                "{} asks for more than six pipeline constants",
                def.entry
            )));
        }
        let key = (def.shader, def.entry, width, consts);
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(k) = cache.get(&key) {
            return Ok(Arc::clone(k));
        }
        let kernel = Arc::new(compile()?);
        cache.insert(key, Arc::clone(&kernel));
        Ok(kernel)
    }
}

/// Compiles `def` at `width` with `consts` and the `cross_lane` reductions (shuffles alone in
/// segments of up to `subgroup_min` lanes): module (without naga's runtime checks when
/// `unchecked`), bind-group layout (from its binding list), pipeline. With `shared`
/// ([`GpuOptions::shared_buffers`](crate::GpuOptions::shared_buffers)) every storage binding
/// is read-write, in the shader and the layout.
pub(crate) fn compile(
    (device, unchecked, shared): (&wgpu::Device, bool, bool),
    def: &KernelDef,
    (width, consts): (VecWidth, Consts),
    (cross_lane, subgroup_min): (CrossLane, u32),
) -> Kernel {
    let mut source = assemble(def.shader, width, cross_lane, subgroup_min);
    if shared {
        source = source.replace("var<storage, read>", "var<storage, read_write>");
    }
    let desc = wgpu::ShaderModuleDescriptor {
        label: Some(def.shader.file()),
        source: wgpu::ShaderSource::Wgsl(source.into()),
    };
    let module = if unchecked {
        // SAFETY: every storage index these shaders form is bounded by its launch (windows
        // sized to their rows, gathers clamped, invalid rows masked) and every loop by a
        // count `Workspace::dispatch` checks against MAX_LANE_ITERS before the dispatch
        // (GpuOptions::unchecked_shaders; tests/recording.rs compares the bits with the
        // checked build's).
        unsafe { device.create_shader_module_trusted(desc, wgpu::ShaderRuntimeChecks::unchecked()) }
    } else {
        device.create_shader_module(desc)
    };
    let entries: Vec<wgpu::BindGroupLayoutEntry> = def
        .bindings
        .iter()
        .map(|&(binding, slot)| wgpu::BindGroupLayoutEntry {
            binding,
            visibility: wgpu::ShaderStages::COMPUTE,
            ty: wgpu::BindingType::Buffer {
                ty: match slot {
                    Slot::Uniform => wgpu::BufferBindingType::Uniform,
                    Slot::Read => wgpu::BufferBindingType::Storage { read_only: !shared },
                    Slot::ReadWrite => wgpu::BufferBindingType::Storage { read_only: false },
                },
                has_dynamic_offset: false,
                min_binding_size: None,
            },
            count: None,
        })
        .collect();
    let layout = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
        label: Some(def.entry),
        entries: &entries,
    });
    let pipeline_layout = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
        label: Some(def.entry),
        bind_group_layouts: &[Some(&layout)],
        immediate_size: 0,
    });
    let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
        label: Some(def.entry),
        layout: Some(&pipeline_layout),
        module: &module,
        entry_point: Some(def.entry),
        compilation_options: wgpu::PipelineCompilationOptions {
            constants: &consts.values(),
            ..Default::default()
        },
        cache: None,
    });
    Kernel {
        name: def.entry,
        pipeline,
        layout,
    }
}

/// One dispatch of a kernel whose workgroups each write one partial result: the items it
/// covers and the partials it writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Chunk {
    /// First item.
    pub(crate) start: usize,
    /// Items in this dispatch.
    pub(crate) count: usize,
    /// Workgroups (and partials) of this dispatch.
    pub(crate) groups: usize,
    /// Index of its first partial: partials are numbered across dispatches, since a
    /// dispatch's start need not be a multiple of a workgroup's span.
    pub(crate) first_partial: usize,
}

/// Splits `total` items into dispatches of at most `per` items, each workgroup covering
/// `span` items; returns the dispatches and the number of partials they write.
pub(crate) fn partial_chunks(total: usize, per: usize, span: usize) -> (Vec<Chunk>, usize) {
    let mut chunks = Vec::new();
    let mut partials = 0;
    for start in (0..total).step_by(per) {
        let count = per.min(total - start);
        let groups = count.div_ceil(span);
        chunks.push(Chunk {
            start,
            count,
            groups,
            first_partial: partials,
        });
        partials += groups;
    }
    (chunks, partials)
}

/// The byte size and member names of the `Params` struct of `shader`, for the tests that
/// hold each Rust twin to its WGSL struct.
#[cfg(test)]
pub(crate) fn wgsl_params(shader: Shader) -> (usize, Vec<String>) {
    let source = assemble(shader, shader.widths()[0], CrossLane::Workgroup, 0);
    let module = naga::front::wgsl::parse_str(&source).expect("the shader parses");
    let (_, params) = module
        .types
        .iter()
        .find(|(_, t)| t.name.as_deref() == Some("Params"))
        .expect("struct Params");
    let naga::TypeInner::Struct { members, span } = &params.inner else {
        panic!("Params is not a struct");
    };
    let names = members.iter().filter_map(|m| m.name.clone()).collect();
    (*span as usize, names)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seventh_pipeline_constant_is_an_error_not_a_panic() {
        let six = (0..6).fold(Consts::NONE, |c, i| c.with("SIX", i));
        assert_eq!(six.values().len(), 6);
        let seven = six.with("SEVENTH", 1);
        let def = KernelDef {
            shader: Shader::Softmax,
            entry: "softmax_rows",
            bindings: &[],
        };
        let compiled = Kernels::default().get_or_compile(&def, (VecWidth::Four, seven), || {
            panic!("an overflowed set is never compiled")
        });
        assert!(matches!(compiled, Err(Error::Internal(_))));
    }

    #[test]
    fn partials_are_numbered_across_dispatches() {
        let (chunks, partials) = partial_chunks(10, 4, 3);
        assert_eq!(partials, 5);
        let firsts: Vec<_> = chunks
            .iter()
            .map(|c| (c.start, c.count, c.groups, c.first_partial))
            .collect();
        assert_eq!(firsts, [(0, 4, 2, 0), (4, 4, 2, 2), (8, 2, 1, 4)]);
    }

    #[test]
    fn rows_of_any_length_get_vec4_where_the_shader_gathers() {
        for shader in [
            Shader::Softmax,
            Shader::CrossEntropy,
            Shader::CrossEntropyInPlace,
        ] {
            let f32_rows = |cols| VecWidth::for_rows(shader, cols, DType::F32);
            assert_eq!(f32_rows(50_256), VecWidth::Four);
            assert_eq!(f32_rows(50_257), VecWidth::Gathered);
            assert_eq!(f32_rows(1), VecWidth::Gathered);
            assert_eq!(VecWidth::for_rows(shader, 3, DType::Bf16), VecWidth::Bf16);
            assert!(shader.reads(DType::F16) && shader.reads(DType::Bf16));
        }
        assert_eq!(
            VecWidth::for_rows(Shader::Bce, 50_257, DType::F32),
            VecWidth::One
        );
        assert!(Shader::Bce.reads(DType::Bf16) && !Shader::Joint.reads(DType::F16));
        assert_eq!(VecWidth::Gathered.vecs(50_257), 12_565);
        assert_eq!(VecWidth::Four.vecs(50_256), 12_564);
        assert_eq!(VecWidth::One.vecs(7), 7);
        // Directives become functions at each width; imported files' own directives too
        // (logits_read.wgsl's `#store grad`).
        let gathered = assemble(
            Shader::CrossEntropy,
            VecWidth::Gathered,
            CrossLane::Workgroup,
            0,
        );
        assert!(gathered.contains("fn load_x(") && gathered.contains("fn store_grad("));
        assert!(
            gathered
                .lines()
                .all(|l| !l.trim().starts_with("#load") && !l.trim().starts_with("#store"))
        );
    }
}
