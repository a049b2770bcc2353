//! Tensors and targets over a caller's buffers (`Tensor::from_buffer`, `Targets::from_buffer`):
//! every op reads and writes them where they sit, with the same bits as over buffers of their
//! own, and writes nothing outside them; bad placements are errors.

mod common;

use common::{gpus, gpus_with, normal, rng};
use rand::RngExt;
use xent::{
    Activation, BceOptions, CeExtras, CrossEntropyOptions, DType, DivReduction, Divergence, Error,
    Form, Gpu, GpuOptions, Grad, GradOut, InfoOptions, Linear, LinearCrossEntropyOptions,
    LinearOut, LossOut, LossReduction, SoftmaxKind, SoftmaxOptions, Targets, Tensor, Workspace,
};

const USAGE: wgpu::BufferUsages = wgpu::BufferUsages::STORAGE
    .union(wgpu::BufferUsages::COPY_SRC)
    .union(wgpu::BufferUsages::COPY_DST);

/// One buffer of the caller's, NaN throughout, handing out places for tensors: each after a
/// gap of one alignment unit (left NaN), so that a write past a tensor's end or before its
/// start lands in a gap.
struct Arena {
    gpu: Gpu,
    buffer: wgpu::Buffer,
    align: u64,
    next: u64,
    /// The f32 elements the tensors cover.
    used: Vec<std::ops::Range<usize>>,
}

impl Arena {
    fn new(gpu: &Gpu, bytes: u64) -> Self {
        let buffer = gpu.device().create_buffer(&wgpu::BufferDescriptor {
            label: Some("a caller's buffer"),
            size: bytes,
            usage: USAGE,
            mapped_at_creation: false,
        });
        let nan = vec![f32::NAN; (bytes / 4) as usize];
        gpu.queue()
            .write_buffer(&buffer, 0, bytemuck::cast_slice(&nan));
        let align = u64::from(gpu.limits().min_storage_buffer_offset_alignment);
        Self {
            gpu: gpu.clone(),
            buffer,
            align,
            next: align,
            used: Vec::new(),
        }
    }

    /// A `rows × cols` tensor of `dtype` at the next place, holding `data`.
    fn tensor(&mut self, data: &[f32], rows: usize, cols: usize, dtype: DType) -> Tensor {
        let t = Tensor::from_buffer(&self.gpu, self.buffer.clone(), self.next, rows, cols, dtype)
            .unwrap();
        t.write(data).unwrap();
        self.take(rows as u64 * (t.stride() * dtype.bytes()) as u64);
        t
    }

    /// Targets at the next place.
    fn targets(&mut self, data: &[i32]) -> Targets {
        let at = self.next;
        self.gpu
            .queue()
            .write_buffer(&self.buffer, at, bytemuck::cast_slice(data));
        self.take(data.len() as u64 * 4);
        Targets::from_buffer(&self.gpu, self.buffer.clone(), at, data.len()).unwrap()
    }

    fn take(&mut self, bytes: u64) {
        let first = (self.next / 4) as usize;
        self.used.push(first..first + (bytes / 4) as usize);
        self.next = (self.next + bytes).next_multiple_of(self.align) + self.align;
        assert!(self.next <= self.buffer.size(), "the arena is too small");
    }

    /// Panics unless every element outside the tensors is still NaN's bits.
    fn gaps_untouched(&self, what: &str) {
        let all = (self.buffer.size() / 4) as usize;
        let whole = Tensor::from_buffer(&self.gpu, self.buffer.clone(), 0, 1, all, DType::F32)
            .unwrap()
            .to_vec()
            .unwrap();
        let nan = f32::NAN.to_bits();
        for (i, v) in whole.iter().enumerate() {
            if !self.used.iter().any(|r| r.contains(&i)) {
                assert_eq!(
                    v.to_bits(),
                    nan,
                    "{what}: element {i} outside every tensor written"
                );
            }
        }
    }
}

fn bits(t: &Tensor) -> Vec<u32> {
    t.to_vec().unwrap().iter().map(|v| v.to_bits()).collect()
}

#[test]
fn every_op_over_a_callers_buffers_equals_its_own_buffers() {
    for (path, gpu) in gpus() {
        every_op_over_views(path, &gpu, false);
    }
}

/// With `GpuOptions::shared_buffers`, the inputs, outputs and the logits in place all in one
/// buffer, as a memory pool places them.
#[test]
fn every_op_over_views_of_one_shared_buffer() {
    let options = GpuOptions {
        shared_buffers: true,
        ..Default::default()
    };
    for (lane, gpu) in gpus_with(options) {
        every_op_over_views(&format!("{lane:?} shared"), &gpu, true);
    }
}

/// Every op over tensors placed in arenas (one for the inputs, one for the outputs, one for
/// the logits the gradient overwrites; or one for all when `shared`) against the same ops over
/// tensors of their own.
fn every_op_over_views(path: &str, gpu: &Gpu, shared: bool) {
    for (rows, cols) in [(37, 1001), (5, 4096)] {
        let at = |what: &str| format!("{path} {rows}×{cols} {what}");
        let mut r = rng(cols as u64);
        let x = normal(&mut r, rows * cols, 4.0);
        let q = normal(&mut r, rows * cols, 2.0);
        let t01: Vec<f32> = (0..rows * cols).map(|_| r.random::<f32>()).collect();
        let counts: Vec<f32> = x.iter().map(|v| v.abs()).collect();
        let class_w: Vec<f32> = (0..cols).map(|_| r.random_range(0.5..2.0)).collect();
        let elem_w: Vec<f32> = (0..rows * cols).map(|_| r.random::<f32>()).collect();
        let targets: Vec<i32> = (0..rows).map(|_| r.random_range(0..cols as i32)).collect();
        let own = |v: &[f32], c: usize| Tensor::from_slice(gpu, v, v.len() / c, c).unwrap();
        let probs = own(&x, cols)
            .softmax(&SoftmaxOptions::default())
            .unwrap()
            .to_vec()
            .unwrap();

        // Inputs in one buffer (all read-only), outputs in another; the logits the
        // gradient overwrites in a third. Or all in one.
        let bytes = 64 * (rows * cols * 4) as u64;
        let mut arenas: Vec<Arena> = (0..if shared { 1 } else { 3 })
            .map(|_| Arena::new(gpu, bytes))
            .collect();
        let (o, l) = if shared { (0, 0) } else { (1, 2) };
        let in_place = arenas[l].tensor(&x, rows, cols, DType::F32);
        let ins = &mut arenas[0];
        let vx = ins.tensor(&x, rows, cols, DType::F32);
        let vq = ins.tensor(&q, rows, cols, DType::F32);
        let vt01 = ins.tensor(&t01, rows, cols, DType::F32);
        let vcounts = ins.tensor(&counts, rows, cols, DType::F32);
        let vprobs = ins.tensor(&probs, rows, cols, DType::F32);
        let vclass_w = ins.tensor(&class_w, 1, cols, DType::F32);
        let velem_w = ins.tensor(&elem_w, rows, cols, DType::F32);
        let vpos_w = ins.tensor(&class_w, 1, cols, DType::F32);
        let vhalf = ins.tensor(&x, rows, cols, DType::Bf16);
        let vtargets = ins.targets(&targets);
        let mut out =
            |r: usize, c: usize, dtype: DType| arenas[o].tensor(&vec![0.0; r * c], r, c, dtype);
        let (p, lp, lse, sig) = (
            out(rows, cols, DType::F32),
            out(rows, cols, DType::F32),
            out(rows, 1, DType::F32),
            out(rows, cols, DType::F32),
        );
        let half_p = out(rows, cols, DType::Bf16);
        let (ce_loss, ce_grad, ce_h) = (
            out(1, 1, DType::F32),
            out(rows, cols, DType::F32),
            out(rows, 1, DType::F32),
        );
        let ip_loss = out(rows, 1, DType::F32);
        let (soft_loss, soft_grad) = (out(1, 1, DType::F32), out(rows, cols, DType::F32));
        let (bce_loss, bce_grad) = (out(1, 1, DType::F32), out(rows, cols, DType::F32));
        let (h, selfinfo) = (out(rows, 1, DType::F32), out(rows, cols, DType::F32));
        let (kl_loss, kl_grad) = (out(1, 1, DType::F32), out(rows, cols, DType::F32));
        let js_rows = out(rows, 1, DType::F32);
        let tables = out(rows, 5, DType::F32);

        let sm = SoftmaxOptions::default().with_temperature(1.5);
        let ce = CrossEntropyOptions::default()
            .with_label_smoothing(0.1)
            .with_z_loss(1e-3);
        let none = ce.with_reduction(LossReduction::None);
        let logits = InfoOptions::default().with_form(Form::Logits);
        let kl = logits
            .with_reduction(DivReduction::BatchMean)
            .with_temperature(2.0);
        let js = logits.with_reduction(DivReduction::None);
        let bce = BceOptions::default();
        let xs = if cols % 7 == 0 { 7 } else { 1 };

        let mut ws = Workspace::new(gpu);
        let mut enc = gpu.encoder();
        vx.record_softmax(&mut ws, &mut enc, &p, SoftmaxKind::Softmax, &sm)
            .unwrap();
        vx.record_softmax(&mut ws, &mut enc, &lp, SoftmaxKind::LogSoftmax, &sm)
            .unwrap();
        vx.record_logsumexp(&mut ws, &mut enc, &lse, &sm).unwrap();
        vx.record_activation(&mut ws, &mut enc, &sig, Activation::Sigmoid)
            .unwrap();
        vhalf
            .record_softmax(&mut ws, &mut enc, &half_p, SoftmaxKind::Softmax, &sm)
            .unwrap();
        let extras = CeExtras {
            entropy: Some(&ce_h),
            ..Default::default()
        };
        let o = LossOut {
            loss: &ce_loss,
            grad: GradOut::Into(&ce_grad),
        };
        let ce_opts = ce.with_entropy_output();
        vx.record_cross_entropy_extras(
            &mut ws,
            &mut enc,
            xent::CeTarget::Indices(&vtargets),
            Some(&vclass_w),
            &ce_opts,
            (o, extras),
        )
        .unwrap();
        let o = LossOut {
            loss: &ip_loss,
            grad: GradOut::InPlace,
        };
        in_place
            .record_cross_entropy(&mut ws, &mut enc, &vtargets, None, &none, o)
            .unwrap();
        let o = LossOut {
            loss: &soft_loss,
            grad: GradOut::Into(&soft_grad),
        };
        let soft = CrossEntropyOptions::default().with_label_smoothing(0.05);
        vq.record_cross_entropy_soft(&mut ws, &mut enc, &vprobs, Some(&vclass_w), &soft, o)
            .unwrap();
        let o = LossOut {
            loss: &bce_loss,
            grad: GradOut::Into(&bce_grad),
        };
        let weights = (Some(&vpos_w), Some(&velem_w));
        vx.record_bce_with_logits(&mut ws, &mut enc, &vt01, weights, &bce, o)
            .unwrap();
        vx.record_entropy(&mut ws, &mut enc, &logits, &h).unwrap();
        vx.record_self_information(&mut ws, &mut enc, &logits, &selfinfo)
            .unwrap();
        let o = LossOut {
            loss: &kl_loss,
            grad: GradOut::Into(&kl_grad),
        };
        vx.record_divergence(&mut ws, &mut enc, &vq, Divergence::Kl, &kl, o)
            .unwrap();
        let o = LossOut {
            loss: &js_rows,
            grad: GradOut::None,
        };
        vx.record_divergence(&mut ws, &mut enc, &vq, Divergence::Js, &js, o)
            .unwrap();
        let joint = InfoOptions::default();
        vcounts
            .record_joint_entropies(&mut ws, &mut enc, xs, &joint, &tables)
            .unwrap();
        gpu.queue().submit([enc.finish()]);
        ws.check_targets().unwrap();

        // The same ops over tensors of their own.
        let same = |what: &str, got: &Tensor, want: &Tensor| {
            assert_eq!(bits(got), bits(want), "{}", at(what));
        };
        let (x_own, q_own) = (own(&x, cols), own(&q, cols));
        let targets_own = Targets::from_i32(gpu, &targets).unwrap();
        let class_own = own(&class_w, cols);
        same("softmax", &p, &x_own.softmax(&sm).unwrap());
        same("log_softmax", &lp, &x_own.log_softmax(&sm).unwrap());
        same("logsumexp", &lse, &x_own.logsumexp(&sm).unwrap());
        same(
            "sigmoid",
            &sig,
            &x_own.activation(Activation::Sigmoid).unwrap(),
        );
        let half_own = Tensor::zeros_as(gpu, rows, cols, DType::Bf16).unwrap();
        half_own.write(&x).unwrap();
        assert_eq!(
            half_p.to_bits().unwrap(),
            half_own.softmax(&sm).unwrap().to_bits().unwrap(),
            "{}",
            at("bf16 softmax")
        );
        let want = x_own
            .cross_entropy(&targets_own, Some(&class_own), &ce_opts, Grad::New)
            .unwrap();
        same("cross-entropy", &ce_loss, &want.loss);
        same("cross-entropy grad", &ce_grad, want.grad.as_ref().unwrap());
        same(
            "cross-entropy entropy",
            &ce_h,
            want.entropy.as_ref().unwrap(),
        );
        let copy = own(&x, cols);
        let want = copy
            .cross_entropy(&targets_own, None, &none, Grad::InPlace)
            .unwrap();
        same("in place loss", &ip_loss, &want.loss);
        same("in place grad", &in_place, &copy);
        let want = q_own
            .cross_entropy_soft(&own(&probs, cols), Some(&class_own), &soft, Grad::New)
            .unwrap();
        same("soft", &soft_loss, &want.loss);
        same("soft grad", &soft_grad, want.grad.as_ref().unwrap());
        let want = x_own
            .bce_with_logits(
                &own(&t01, cols),
                Some(&class_own),
                Some(&own(&elem_w, cols)),
                &bce,
                Grad::New,
            )
            .unwrap();
        same("bce", &bce_loss, &want.loss);
        same("bce grad", &bce_grad, want.grad.as_ref().unwrap());
        same("entropy", &h, &x_own.entropy(&logits).unwrap());
        let want = x_own.self_information(&logits).unwrap();
        same("self-information", &selfinfo, &want);
        let want = x_own
            .divergence(&q_own, Divergence::Kl, &kl, Grad::New)
            .unwrap();
        same("kl", &kl_loss, &want.loss);
        same("kl grad", &kl_grad, want.grad.as_ref().unwrap());
        let want = x_own
            .divergence(&q_own, Divergence::Js, &js, Grad::None)
            .unwrap();
        same("js", &js_rows, &want.loss);
        let want = own(&counts, cols).joint_entropies(xs, &joint).unwrap();
        same("joint", &tables, &want);

        // The convenience forms read views too, and nothing was written outside a tensor
        // nor, but for the gradient in place, into an input.
        same("softmax of a view", &vx.softmax(&sm).unwrap(), &p);
        assert_eq!(vx.to_vec().unwrap(), x, "{}", at("inputs untouched"));
        assert_eq!(vtargets.to_vec().unwrap(), targets);
        for (k, a) in arenas.iter().enumerate() {
            a.gaps_untouched(&at(&format!("buffer {k}")));
        }
    }
}

#[test]
fn linear_cross_entropy_over_a_callers_buffers() {
    for (path, gpu) in gpus() {
        let (n, hs, v) = (17, 64, 1000);
        let mut r = rng(7);
        let h = normal(&mut r, n * hs, 1.0);
        let w = normal(&mut r, v * hs, 0.1);
        let b = normal(&mut r, v, 0.5);
        let targets: Vec<i32> = (0..n).map(|_| r.random_range(0..v as i32)).collect();
        let opts = LinearCrossEntropyOptions::default()
            .with_grads()
            .with_chunk_rows(7);
        let mut ins = Arena::new(&gpu, 4 << 20);
        let mut outs = Arena::new(&gpu, 4 << 20);
        let (vh, vw, vb) = (
            ins.tensor(&h, n, hs, DType::F32),
            ins.tensor(&w, v, hs, DType::F32),
            ins.tensor(&b, 1, v, DType::F32),
        );
        let vt = ins.targets(&targets);
        let mut out = |r: usize, c: usize| outs.tensor(&vec![0.0; r * c], r, c, DType::F32);
        let (loss, gh, gw, gb) = (out(1, 1), out(n, hs), out(v, hs), out(1, v));
        let mut ws = Workspace::new(&gpu);
        let mut enc = gpu.encoder();
        let head = Linear {
            weight: &vw,
            bias: Some(&vb),
        };
        let o = LinearOut {
            loss: &loss,
            grad_input: Some(&gh),
            grad_weight: Some(&gw),
            grad_bias: Some(&gb),
            extras: CeExtras::default(),
        };
        vh.record_linear_cross_entropy(&mut ws, &mut enc, head, &vt, None, &opts, o)
            .unwrap();
        gpu.queue().submit([enc.finish()]);
        ws.check_targets().unwrap();

        let own = |x: &[f32], c: usize| Tensor::from_slice(&gpu, x, x.len() / c, c).unwrap();
        let (wt, bt) = (own(&w, hs), own(&b, v));
        let head = Linear {
            weight: &wt,
            bias: Some(&bt),
        };
        let t = Targets::from_i32(&gpu, &targets).unwrap();
        let want = own(&h, hs)
            .linear_cross_entropy(head, &t, None, &opts)
            .unwrap();
        let same = |what: &str, got: &Tensor, want: &Tensor| {
            assert_eq!(bits(got), bits(want), "{path} linear {what}");
        };
        same("loss", &loss, &want.loss);
        same("∂L/∂h", &gh, want.grad_input.as_ref().unwrap());
        same("∂L/∂W", &gw, want.grad_weight.as_ref().unwrap());
        same("∂L/∂b", &gb, want.grad_bias.as_ref().unwrap());
        ins.gaps_untouched(&format!("{path} linear inputs"));
        outs.gaps_untouched(&format!("{path} linear outputs"));
    }
}

#[test]
fn bad_placements_are_errors() {
    let Some((_, gpu)) = gpus().into_iter().next() else {
        return;
    };
    let align = u64::from(gpu.limits().min_storage_buffer_offset_alignment);
    let make = |size: u64, usage: wgpu::BufferUsages| {
        gpu.device().create_buffer(&wgpu::BufferDescriptor {
            label: None,
            size,
            usage,
            mapped_at_creation: false,
        })
    };
    let buffer = make(4 * align, USAGE);
    let place = |offset: u64, rows: usize, cols: usize| {
        Tensor::from_buffer(&gpu, buffer.clone(), offset, rows, cols, DType::F32)
    };
    assert!(place(align, 1, 3 * align as usize / 4).is_ok());
    // Misaligned, past the end, empty.
    assert!(matches!(place(16, 1, 4), Err(Error::InvalidArgument(_))));
    assert!(matches!(
        place(align, 1, 3 * align as usize / 4 + 1),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(place(0, 0, 4), Err(Error::Shape(_))));
    // A buffer that cannot be bound or copied.
    let uniform = make(
        align,
        wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
    );
    let e = Tensor::from_buffer(&gpu, uniform.clone(), 0, 1, 4, DType::F32);
    assert!(matches!(e, Err(Error::InvalidArgument(_))));
    assert!(matches!(
        Targets::from_buffer(&gpu, uniform, 0, 4),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        Targets::from_buffer(&gpu, buffer.clone(), 4, 4),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        Targets::from_buffer(&gpu, buffer.clone(), 0, 0),
        Err(Error::Shape(_))
    ));
    // An op that writes into the buffer it reads from: wgpu's error, returned.
    let x = place(0, 1, 8).unwrap();
    x.write(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0]).unwrap();
    let y = place(align, 1, 8).unwrap();
    let r = x.softmax_into(&y, SoftmaxKind::Softmax, &SoftmaxOptions::default());
    assert!(matches!(r, Err(Error::Wgpu { .. })), "{r:?}");
    // The gradient into the logits' own place: use the in-place form.
    let t = Targets::from_i32(&gpu, &[3]).unwrap();
    let loss = Tensor::zeros(&gpu, 1, 1).unwrap();
    let same_place = place(0, 1, 8).unwrap();
    let o = LossOut {
        loss: &loss,
        grad: GradOut::Into(&same_place),
    };
    let mut ws = Workspace::new(&gpu);
    let opts = CrossEntropyOptions::default();
    let e = x.record_cross_entropy(&mut ws, &mut gpu.encoder(), &t, None, &opts, o);
    assert!(matches!(e, Err(Error::InvalidArgument(_))), "{e:?}");
}

#[test]
fn vocabulary_shards_over_a_callers_buffers() {
    for (path, gpu) in gpus() {
        let (rows, width, classes) = (9, 1003, 3000);
        let mut r = rng(11);
        let x = normal(&mut r, rows * width, 3.0);
        let w: Vec<f32> = (0..width).map(|_| r.random_range(0.5..2.0)).collect();
        // Targets inside and outside the shard (classes 1000 .. 2003).
        let targets: Vec<i32> = (0..rows)
            .map(|_| r.random_range(0..classes as i32))
            .collect();
        let shard = xent::Shard {
            first: 1000,
            width,
            classes,
        };
        let opts = CrossEntropyOptions::default()
            .with_label_smoothing(0.1)
            .with_z_loss_output();
        let mut ins = Arena::new(&gpu, 1 << 20);
        let mut outs = Arena::new(&gpu, 1 << 20);
        let (vx, vw, vt) = (
            ins.tensor(&x, rows, width, DType::F32),
            ins.tensor(&w, 1, width, DType::F32),
            ins.targets(&targets),
        );
        let mut out = |r: usize, c: usize| outs.tensor(&vec![0.0; r * c], r, c, DType::F32);
        let (stats, loss, grad, z) = (
            out(rows, xent::SHARD_STATS),
            out(1, 1),
            out(rows, width),
            out(rows, 1),
        );
        let batch = xent::ShardBatch {
            shard,
            targets: &vt,
            weight: Some(&vw),
        };
        let mut ws = Workspace::new(&gpu);
        let mut enc = gpu.encoder();
        vx.record_shard_stats(&mut ws, &mut enc, batch, &opts, &stats)
            .unwrap();
        let o = LossOut {
            loss: &loss,
            grad: GradOut::Into(&grad),
        };
        let extras = CeExtras {
            z_loss: Some(&z),
            ..Default::default()
        };
        // One shard's statistics stand for the merged rows: any rows of the right shape do.
        vx.record_shard_backward(&mut ws, &mut enc, batch, &stats, &opts, (o, extras))
            .unwrap();
        gpu.queue().submit([enc.finish()]);
        ws.check_targets().unwrap();

        let own = |v: &[f32], c: usize| Tensor::from_slice(&gpu, v, v.len() / c, c).unwrap();
        let (xo, wo) = (own(&x, width), own(&w, width));
        let to = Targets::from_i32(&gpu, &targets).unwrap();
        let batch = xent::ShardBatch {
            shard,
            targets: &to,
            weight: Some(&wo),
        };
        let want_stats = xo.shard_stats(batch, &opts).unwrap();
        let want = xo
            .shard_backward(batch, &want_stats, &opts, Grad::New)
            .unwrap();
        let same = |what: &str, got: &Tensor, want: &Tensor| {
            assert_eq!(bits(got), bits(want), "{path} shard {what}");
        };
        same("statistics", &stats, &want_stats);
        same("loss", &loss, &want.loss);
        same("gradient", &grad, want.grad.as_ref().unwrap());
        same("z-loss", &z, want.z_loss.as_ref().unwrap());
        ins.gaps_untouched(&format!("{path} shard inputs"));
        outs.gaps_untouched(&format!("{path} shard outputs"));
    }
}
