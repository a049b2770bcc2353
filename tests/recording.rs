//! Recording forms: every op records into the caller's encoder with a [`Workspace`], equal bit
//! for bit to its convenience method; a warm training loop creates no buffer and reads nothing
//! back; cross-entropy's target checks are gathered and read once, a bad batch writing
//! nothing; rows split across workgroups against whole rows.

mod common;

use common::{assert_close, assert_scaled, gpus, gpus_with, normal, reference, rng};
use rand::RngExt;
use xent::{
    Activation, BceOptions, CrossEntropyOptions, DivReduction, Divergence, Error, Form, Gpu,
    GpuOptions, Grad, GradOut, InfoOptions, LossOut, LossReduction, RowSplit, SoftmaxKind,
    SoftmaxOptions, Targets, Tensor, Workspace,
};

fn bits(t: &Tensor) -> Vec<u32> {
    t.to_vec().unwrap().iter().map(|v| v.to_bits()).collect()
}

fn zeros(gpu: &Gpu, rows: usize, cols: usize) -> Tensor {
    Tensor::zeros(gpu, rows, cols).unwrap()
}

/// Inputs of every op family on one shape.
struct Inputs {
    x: Vec<f32>,
    q: Vec<f32>,
    t01: Vec<f32>,
    targets: Vec<i32>,
}

fn inputs(rows: usize, cols: usize, seed: u64) -> Inputs {
    let mut r = rng(seed);
    Inputs {
        x: normal(&mut r, rows * cols, 4.0),
        q: normal(&mut r, rows * cols, 2.0),
        t01: (0..rows * cols).map(|_| r.random::<f32>()).collect(),
        targets: (0..rows).map(|_| r.random_range(0..cols as i32)).collect(),
    }
}

#[test]
fn every_recorded_op_equals_its_convenience_method() {
    for (path, gpu) in gpus() {
        for (rows, cols) in [(37, 1001), (8, 4096), (2, 100_000)] {
            let at = |what: &str| format!("{path} {rows}×{cols} {what}");
            let i = inputs(rows, cols, cols as u64);
            let x = Tensor::from_slice(&gpu, &i.x, rows, cols).unwrap();
            let q = Tensor::from_slice(&gpu, &i.q, rows, cols).unwrap();
            let t01 = Tensor::from_slice(&gpu, &i.t01, rows, cols).unwrap();
            let abs: Vec<f32> = i.x.iter().map(|v| v.abs()).collect();
            let counts = Tensor::from_slice(&gpu, &abs, rows, cols).unwrap();
            let targets = Targets::from_i32(&gpu, &i.targets).unwrap();
            let sm = SoftmaxOptions::default().with_temperature(1.5);
            let ce = CrossEntropyOptions::default()
                .with_label_smoothing(0.1)
                .with_z_loss(1e-3);
            let logits = InfoOptions::default().with_form(Form::Logits);
            let kl = logits
                .with_reduction(DivReduction::BatchMean)
                .with_temperature(2.0);
            let bce = BceOptions::default();

            // Everything recorded into one encoder, one submission.
            let mut ws = Workspace::new(&gpu);
            let mut enc = gpu.encoder();
            let (p, lp, lse, sig) = (
                zeros(&gpu, rows, cols),
                zeros(&gpu, rows, cols),
                zeros(&gpu, rows, 1),
                zeros(&gpu, rows, cols),
            );
            x.record_softmax(&mut ws, &mut enc, &p, SoftmaxKind::Softmax, &sm)
                .unwrap();
            x.record_softmax(&mut ws, &mut enc, &lp, SoftmaxKind::LogSoftmax, &sm)
                .unwrap();
            x.record_logsumexp(&mut ws, &mut enc, &lse, &sm).unwrap();
            x.record_activation(&mut ws, &mut enc, &sig, Activation::Sigmoid)
                .unwrap();
            let (ce_loss, ce_grad) = (zeros(&gpu, 1, 1), zeros(&gpu, rows, cols));
            let out = LossOut {
                loss: &ce_loss,
                grad: GradOut::Into(&ce_grad),
            };
            x.record_cross_entropy(&mut ws, &mut enc, &targets, None, &ce, out)
                .unwrap();
            let in_place = Tensor::from_slice(&gpu, &i.x, rows, cols).unwrap();
            let ip_loss = zeros(&gpu, rows, 1);
            let none = ce.with_reduction(LossReduction::None);
            let out = LossOut {
                loss: &ip_loss,
                grad: GradOut::InPlace,
            };
            in_place
                .record_cross_entropy(&mut ws, &mut enc, &targets, None, &none, out)
                .unwrap();
            let probs = p.clone();
            let (soft_loss, soft_grad) = (zeros(&gpu, 1, 1), zeros(&gpu, rows, cols));
            let soft = CrossEntropyOptions::default().with_label_smoothing(0.05);
            let out = LossOut {
                loss: &soft_loss,
                grad: GradOut::Into(&soft_grad),
            };
            q.record_cross_entropy_soft(&mut ws, &mut enc, &probs, None, &soft, out)
                .unwrap();
            let (bce_loss, bce_grad) = (zeros(&gpu, 1, 1), zeros(&gpu, rows, cols));
            let out = LossOut {
                loss: &bce_loss,
                grad: GradOut::Into(&bce_grad),
            };
            x.record_bce_with_logits(&mut ws, &mut enc, &t01, (None, None), &bce, out)
                .unwrap();
            let (h, selfinfo) = (zeros(&gpu, rows, 1), zeros(&gpu, rows, cols));
            x.record_entropy(&mut ws, &mut enc, &logits, &h).unwrap();
            x.record_self_information(&mut ws, &mut enc, &logits, &selfinfo)
                .unwrap();
            let (kl_loss, kl_grad) = (zeros(&gpu, 1, 1), zeros(&gpu, rows, cols));
            let out = LossOut {
                loss: &kl_loss,
                grad: GradOut::Into(&kl_grad),
            };
            x.record_divergence(&mut ws, &mut enc, &q, Divergence::Kl, &kl, out)
                .unwrap();
            let tables = zeros(&gpu, rows, 5);
            let xs = if cols % 7 == 0 { 7 } else { 1 };
            let joint = InfoOptions::default();
            counts
                .record_joint_entropies(&mut ws, &mut enc, xs, &joint, &tables)
                .unwrap();
            gpu.queue().submit([enc.finish()]);
            ws.check_targets().unwrap();

            // The convenience methods, one submission each.
            let same = |what: &str, got: &Tensor, want: &Tensor| {
                assert_eq!(bits(got), bits(want), "{}", at(what));
            };
            same("softmax", &p, &x.softmax(&sm).unwrap());
            same("log_softmax", &lp, &x.log_softmax(&sm).unwrap());
            same("logsumexp", &lse, &x.logsumexp(&sm).unwrap());
            same("sigmoid", &sig, &x.activation(Activation::Sigmoid).unwrap());
            let want = x.cross_entropy(&targets, None, &ce, Grad::New).unwrap();
            same("cross-entropy", &ce_loss, &want.loss);
            same("cross-entropy grad", &ce_grad, want.grad.as_ref().unwrap());
            let copy = Tensor::from_slice(&gpu, &i.x, rows, cols).unwrap();
            let want = copy
                .cross_entropy(&targets, None, &none, Grad::InPlace)
                .unwrap();
            same("in place loss", &ip_loss, &want.loss);
            same("in place grad", &in_place, &copy);
            let want = q
                .cross_entropy_soft(&probs, None, &soft, Grad::New)
                .unwrap();
            same("soft", &soft_loss, &want.loss);
            same("soft grad", &soft_grad, want.grad.as_ref().unwrap());
            let want = x
                .bce_with_logits(&t01, None, None, &bce, Grad::New)
                .unwrap();
            same("bce", &bce_loss, &want.loss);
            same("bce grad", &bce_grad, want.grad.as_ref().unwrap());
            same("entropy", &h, &x.entropy(&logits).unwrap());
            same(
                "self-information",
                &selfinfo,
                &x.self_information(&logits).unwrap(),
            );
            let want = x.divergence(&q, Divergence::Kl, &kl, Grad::New).unwrap();
            same("kl", &kl_loss, &want.loss);
            same("kl grad", &kl_grad, want.grad.as_ref().unwrap());
            same(
                "joint",
                &tables,
                &counts.joint_entropies(xs, &joint).unwrap(),
            );
        }
    }
}

/// One training-like step: the logits reset from `x0`, the fused cross-entropy with its
/// gradient in place, a long row's softmax, a distillation KL with its gradient, BCE and
/// joint tables, all into one encoder and one submission.
struct Step {
    x0: Tensor,
    z: Tensor,
    targets: Targets,
    weight: Tensor,
    loss: Tensor,
    long: Tensor,
    long_p: Tensor,
    q: Tensor,
    kl: Tensor,
    kl_grad: Tensor,
    t01: Tensor,
    bce: Tensor,
    tables: Tensor,
    stats: Tensor,
}

impl Step {
    fn new(gpu: &Gpu) -> Self {
        let (rows, cols) = (64, 1000);
        let i = inputs(rows, cols, 5);
        let t = |data: &[f32], r, c| Tensor::from_slice(gpu, data, r, c).unwrap();
        let weight: Vec<f32> = (0..cols).map(|c| 0.5 + (c % 3) as f32).collect();
        let long = normal(&mut rng(6), 262_144, 3.0);
        let abs: Vec<f32> = i.x.iter().map(|v| v.abs()).collect();
        Self {
            x0: t(&i.x, rows, cols),
            z: zeros(gpu, rows, cols),
            targets: Targets::from_i32(gpu, &i.targets).unwrap(),
            weight: t(&weight, 1, cols),
            loss: zeros(gpu, 1, 1),
            long: t(&long, 1, long.len()),
            long_p: zeros(gpu, 1, long.len()),
            q: t(&i.q, rows, cols),
            kl: zeros(gpu, 1, 1),
            kl_grad: zeros(gpu, rows, cols),
            t01: t(&i.t01, rows, cols),
            bce: zeros(gpu, 1, 1),
            tables: t(&abs, rows, cols),
            stats: zeros(gpu, rows, 5),
        }
    }

    fn record(&self, ws: &mut Workspace, enc: &mut wgpu::CommandEncoder) {
        let bytes = self.x0.buffer().size();
        enc.copy_buffer_to_buffer(self.x0.buffer(), 0, self.z.buffer(), 0, bytes);
        let ce = CrossEntropyOptions::default().with_label_smoothing(0.1);
        let out = LossOut {
            loss: &self.loss,
            grad: GradOut::InPlace,
        };
        let w = Some(&self.weight);
        self.z
            .record_cross_entropy(ws, enc, &self.targets, w, &ce, out)
            .unwrap();
        let sm = SoftmaxOptions::default();
        self.long
            .record_softmax(ws, enc, &self.long_p, SoftmaxKind::Softmax, &sm)
            .unwrap();
        let kl = InfoOptions::default()
            .with_form(Form::Logits)
            .with_reduction(DivReduction::BatchMean);
        let out = LossOut {
            loss: &self.kl,
            grad: GradOut::Into(&self.kl_grad),
        };
        self.x0
            .record_divergence(ws, enc, &self.q, Divergence::Kl, &kl, out)
            .unwrap();
        let out = LossOut {
            loss: &self.bce,
            grad: GradOut::None,
        };
        let bce = BceOptions::default();
        self.x0
            .record_bce_with_logits(ws, enc, &self.t01, (None, None), &bce, out)
            .unwrap();
        let joint = InfoOptions::default();
        self.tables
            .record_joint_entropies(ws, enc, 10, &joint, &self.stats)
            .unwrap();
    }
}

#[test]
fn a_warm_training_loop_creates_nothing_and_reads_nothing_back() {
    // Contexts of their own: other tests' work must not reach the counters.
    for (path, gpu) in gpus_with(GpuOptions::default()) {
        let step = Step::new(&gpu);
        let mut ws = Workspace::new(&gpu);
        let run = |ws: &mut Workspace, steps: usize| {
            for _ in 0..steps {
                let mut enc = gpu.encoder();
                step.record(ws, &mut enc);
                gpu.queue().submit([enc.finish()]);
            }
        };
        // Two steps warm the workspace: scratch buffers grow to their largest request in
        // the first, and the launches of the second bind them as they will stay.
        run(&mut ws, 2);
        gpu.wait().unwrap();
        let before = gpu.stats();
        run(&mut ws, 100);
        gpu.wait().unwrap();
        let after = gpu.stats();
        assert_eq!(
            after.buffers_created, before.buffers_created,
            "{path:?}: {after:?}"
        );
        assert_eq!(
            after.bind_groups_created, before.bind_groups_created,
            "{path:?}"
        );
        assert_eq!(after.bytes_read_back, before.bytes_read_back, "{path:?}");
        assert_eq!(after.submissions, before.submissions, "{path:?}");
        ws.check_targets().unwrap();
        // The 101st step's results are those of a single convenience call.
        let ce = CrossEntropyOptions::default().with_label_smoothing(0.1);
        let z = Tensor::from_slice(&gpu, &step.x0.to_vec().unwrap(), 64, 1000).unwrap();
        let want = z
            .cross_entropy(&step.targets, Some(&step.weight), &ce, Grad::InPlace)
            .unwrap();
        assert_eq!(bits(&step.loss), bits(&want.loss), "{path:?}");
        assert_eq!(bits(&step.z), bits(&z), "{path:?}");
        let p = step.long.softmax(&SoftmaxOptions::default()).unwrap();
        assert_eq!(bits(&step.long_p), bits(&p), "{path:?}");
    }
}

#[test]
fn a_bad_batch_in_a_recorded_loop_writes_nothing_and_is_named_once() {
    for (path, gpu) in gpus() {
        let (rows, cols) = (16, 300);
        let opts = CrossEntropyOptions::default();
        let mut ws = Workspace::new(&gpu);
        // 40 batches (past the first 16 status slots, so they grow mid-loop); batches 2 and
        // 33 hold bad targets, the first at rows 3 (and 7) and 9.
        let batches: Vec<(Inputs, Tensor, Targets, Tensor)> = (0..40)
            .map(|b| {
                let mut i = inputs(rows, cols, 100 + b);
                if b == 2 {
                    i.targets[7] = -5;
                    i.targets[3] = cols as i32;
                }
                if b == 33 {
                    i.targets[9] = 1_000_000;
                }
                let x = Tensor::from_slice(&gpu, &i.x, rows, cols).unwrap();
                let t = Targets::from_i32(&gpu, &i.targets).unwrap();
                let loss = Tensor::from_slice(&gpu, &[f32::NAN], 1, 1).unwrap();
                (i, x, t, loss)
            })
            .collect();
        for (_, x, t, loss) in &batches {
            let mut enc = gpu.encoder();
            let out = LossOut {
                loss,
                grad: GradOut::InPlace,
            };
            x.record_cross_entropy(&mut ws, &mut enc, t, None, &opts, out)
                .unwrap();
            gpu.queue().submit([enc.finish()]);
        }
        match ws.check_targets() {
            Err(Error::Target {
                batch: Some(2),
                row: 3,
                value,
                classes,
            }) => assert_eq!((value, classes), (cols as i64, cols), "{path}"),
            other => panic!("{path}: {other:?}"),
        }
        for (b, (i, x, t, loss)) in batches.iter().enumerate() {
            let logits = x.to_vec().unwrap();
            if b == 2 || b == 33 {
                assert_eq!(logits, i.x, "{path}: bad batch {b} wrote its logits");
                let unwritten = f32::NAN.to_bits();
                assert_eq!(
                    bits(loss),
                    [unwritten],
                    "{path}: bad batch {b} wrote its loss"
                );
                continue;
            }
            let fresh = Tensor::from_slice(&gpu, &i.x, rows, cols).unwrap();
            let want = fresh.cross_entropy(t, None, &opts, Grad::InPlace).unwrap();
            assert_eq!(bits(loss), bits(&want.loss), "{path}: batch {b}");
            assert_eq!(bits(x), bits(&fresh), "{path}: batch {b}");
        }
        // Read once: the checks are cleared, and later batches are checked afresh.
        ws.check_targets().unwrap();
        let (_, x, t, loss) = &batches[33];
        let mut enc = gpu.encoder();
        let out = LossOut {
            loss,
            grad: GradOut::None,
        };
        x.record_cross_entropy(&mut ws, &mut enc, t, None, &opts, out)
            .unwrap();
        gpu.queue().submit([enc.finish()]);
        assert!(matches!(
            ws.check_targets(),
            Err(Error::Target {
                batch: Some(0),
                row: 9,
                value: 1_000_000,
                ..
            })
        ));
    }
}

#[test]
fn split_rows_equal_whole_rows() {
    let whole = gpus_with(GpuOptions {
        row_split: RowSplit::Never,
        ..Default::default()
    });
    let split = gpus_with(GpuOptions {
        row_split: RowSplit::Always,
        ..Default::default()
    });
    for ((cross_lane, w), (_, s)) in whole.iter().zip(&split) {
        for cols in [1, 3, 33_333, 262_144, 1_000_003] {
            let rows = 2;
            let at = |what: &str| format!("{cross_lane:?} {cols} {what}");
            let i = inputs(rows, cols, cols as u64 + 7);
            let f64s = |v: Vec<f32>| v.into_iter().map(f64::from).collect::<Vec<_>>();
            let sm = SoftmaxOptions::default();
            let logits = InfoOptions::default().with_form(Form::Logits);
            let ce = CrossEntropyOptions::default()
                .with_reduction(LossReduction::None)
                .with_label_smoothing(0.1);
            let t64: Vec<i64> = i.targets.iter().map(|&v| i64::from(v)).collect();
            use xent::Backend;
            // Past 262 144 columns a whole row's lanes each add ~4000 terms in a chain, and
            // its own rounding (3e-6 relative at 1 000 003 here) exceeds 1e-6: both paths are
            // then held to SPEC's 1e-5.
            let rtol = if cols > 262_144 { 1e-5 } else { 1e-6 };
            let check = |what: &str, f: &dyn Fn(&Gpu) -> Vec<f32>| {
                assert_close(&at(what), &f(s), &f64s(f(w)), rtol, 0.0);
            };
            check("softmax", &|g| g.softmax(&i.x, cols, &sm).unwrap());
            check("log_softmax", &|g| g.log_softmax(&i.x, cols, &sm).unwrap());
            check("logsumexp", &|g| g.logsumexp(&i.x, cols, &sm).unwrap());
            check("entropy", &|g| g.entropy(&i.x, cols, &logits).unwrap());
            let target = xent::Target::I64(&t64);
            let ce_of = |g: &Gpu| {
                g.cross_entropy(&i.x, cols, target, None, &ce, Grad::New)
                    .unwrap()
            };
            let (a, b) = (ce_of(s), ce_of(w));
            assert_close(&at("cross-entropy"), &a.loss, &f64s(b.loss), rtol, 0.0);
            let p = reference::softmax(&i.x, cols, 1.0);
            let mut scale: Vec<f64> = p.iter().map(|p| p + 1.0 / cols as f64).collect();
            for (r, &y) in i.targets.iter().enumerate() {
                scale[r * cols + y as usize] += 1.0;
            }
            let want = f64s(b.grad.unwrap());
            assert_scaled(
                &at("cross-entropy grad"),
                &a.grad.unwrap(),
                &want,
                &scale,
                rtol,
            );
            let kl_of = |g: &Gpu| {
                g.divergence(&i.x, &i.q, cols, Divergence::Kl, &logits, Grad::New)
                    .unwrap()
            };
            let (a, b) = (kl_of(s), kl_of(w));
            assert_close(&at("kl"), &a.loss, &f64s(b.loss), rtol, 1e-7);
            let q = reference::softmax(&i.q, cols, 1.0);
            let scale: Vec<f64> = p.iter().zip(&q).map(|(p, q)| p + q).collect();
            check("self-information", &|g| {
                g.self_information(&i.x, cols, &logits).unwrap()
            });
            let js_of = |g: &Gpu| {
                g.divergence(&i.x, &i.q, cols, Divergence::Js, &logits, Grad::New)
                    .unwrap()
            };
            let (c, d) = (js_of(s), js_of(w));
            assert_close(&at("js"), &c.loss, &f64s(d.loss), rtol, 1e-7);
            let want = f64s(d.grad.unwrap());
            assert_scaled(
                &at("js grad"),
                &c.grad.unwrap(),
                &want,
                &scale,
                rtol.max(4e-6),
            );
            let q32: Vec<f32> = q.iter().map(|&v| v as f32).collect();
            let soft_of = |g: &Gpu| {
                g.cross_entropy(&i.x, cols, xent::Target::Probs(&q32), None, &ce, Grad::New)
                    .unwrap()
            };
            let (c, d) = (soft_of(s), soft_of(w));
            assert_close(&at("soft cross-entropy"), &c.loss, &f64s(d.loss), rtol, 0.0);
            let soft_scale: Vec<f64> = scale.iter().map(|v| v + 1.0 / cols as f64).collect();
            let want = f64s(d.grad.unwrap());
            assert_scaled(
                &at("soft cross-entropy grad"),
                &c.grad.unwrap(),
                &want,
                &soft_scale,
                rtol.max(4e-6),
            );
            // q comes from exp of its log-probability (about -12 here, whose f32 spacing is
            // 9.5e-7): each path's rounding of it is a relative error of up to ~1e-6 in q.
            let want = f64s(b.grad.unwrap());
            assert_scaled(
                &at("kl grad"),
                &a.grad.unwrap(),
                &want,
                &scale,
                rtol.max(4e-6),
            );
        }
    }
}

/// Few rows of up to 8 vectors get a lane per vector, a unit inside one subgroup wherever
/// subgroups are at least 8 wide (lavapipe's are 8): the subgroup path reduces it by shuffles
/// alone, pairing values as workgroup memory's tree does, so the two paths agree bit for bit.
#[test]
fn rows_inside_one_subgroup_equal_workgroup_memory_bit_for_bit() {
    use xent::Backend;
    let all = gpus();
    let (Some((_, wg)), Some((_, sg))) = (all.first(), all.get(1)) else {
        eprintln!("skipping: no subgroup path on this adapter");
        return;
    };
    let rows = 3;
    for cols in [3, 5, 7, 8, 16, 32] {
        let i = inputs(rows, cols, cols as u64 + 11);
        let t64: Vec<i64> = i.targets.iter().map(|&v| i64::from(v)).collect();
        let q = reference::softmax(&i.q, cols, 1.0);
        let q32: Vec<f32> = q.iter().map(|&v| v as f32).collect();
        let sm = SoftmaxOptions::default();
        let logits = InfoOptions::default().with_form(Form::Logits);
        let ce = CrossEntropyOptions::default()
            .with_reduction(LossReduction::None)
            .with_label_smoothing(0.1);
        let run = |g: &Gpu| {
            let loss_bits = |l: xent::Loss<Vec<f32>>| {
                let grad = l.grad.unwrap_or_default();
                [l.loss, grad]
                    .concat()
                    .iter()
                    .map(|v| v.to_bits())
                    .collect()
            };
            let div = |kind| {
                loss_bits(
                    g.divergence(&i.x, &i.q, cols, kind, &logits, Grad::New)
                        .unwrap(),
                )
            };
            let ce_of = |t| {
                loss_bits(
                    g.cross_entropy(&i.x, cols, t, None, &ce, Grad::New)
                        .unwrap(),
                )
            };
            let plain = |v: Vec<f32>| v.iter().map(|v| v.to_bits()).collect::<Vec<u32>>();
            vec![
                plain(g.softmax(&i.x, cols, &sm).unwrap()),
                plain(g.log_softmax(&i.x, cols, &sm).unwrap()),
                plain(g.logsumexp(&i.x, cols, &sm).unwrap()),
                plain(g.entropy(&i.x, cols, &logits).unwrap()),
                plain(g.self_information(&i.x, cols, &logits).unwrap()),
                div(Divergence::Kl),
                div(Divergence::Js),
                ce_of(xent::Target::I64(&t64)),
                ce_of(xent::Target::Probs(&q32)),
            ]
        };
        assert_eq!(run(sg), run(wg), "{rows}×{cols}");
    }
}

#[test]
fn shaders_without_runtime_checks_give_the_same_bits() {
    use xent::{Backend, BceWeights, DType, Linear, LinearCrossEntropyOptions, Target};
    let checked = gpus_with(GpuOptions::default());
    let unchecked = gpus_with(GpuOptions {
        unchecked_shaders: true,
        ..Default::default()
    });
    for ((lane, a), (_, b)) in checked.iter().zip(&unchecked) {
        // Odd, vector-multiple, long (split) rows, f32 and bf16.
        for (rows, cols) in [(7, 1003), (64, 256), (2, 70_001)] {
            let i = inputs(rows, cols, cols as u64);
            let t64: Vec<i64> = i.targets.iter().map(|&v| i64::from(v)).collect();
            let sm = SoftmaxOptions::default();
            let logits = InfoOptions::default().with_form(Form::Logits);
            let ce = CrossEntropyOptions::default()
                .with_label_smoothing(0.1)
                .with_entropy_output();
            let run = |g: &Gpu| {
                let mut all: Vec<Vec<f32>> = Vec::new();
                for dtype in [DType::F32, DType::Bf16] {
                    let g = g.typed(dtype);
                    all.push(g.softmax(&i.x, cols, &sm).unwrap());
                    all.push(g.logsumexp(&i.x, cols, &sm).unwrap());
                    all.push(g.sigmoid(&i.x).unwrap());
                    let d = g
                        .divergence(&i.x, &i.q, cols, Divergence::Kl, &logits, Grad::New)
                        .unwrap();
                    all.extend([d.loss, d.grad.unwrap()]);
                    let l = g
                        .cross_entropy(&i.x, cols, Target::I64(&t64), None, &ce, Grad::InPlace)
                        .unwrap();
                    all.extend([l.loss, l.grad.unwrap(), l.entropy.unwrap()]);
                    let weights = BceWeights::default();
                    let l = g
                        .bce_with_logits(
                            &i.x,
                            cols,
                            &i.t01,
                            weights,
                            &BceOptions::default(),
                            Grad::New,
                        )
                        .unwrap();
                    all.extend([l.loss, l.grad.unwrap()]);
                    // Linear cross-entropy: its products, in chunks of 3 rows.
                    let h = &i.x[..rows * 8];
                    let w: Vec<f32> = i.x.iter().copied().cycle().take(cols * 8).collect();
                    let head = Linear {
                        weight: &w[..],
                        bias: Some(&i.q[..cols]),
                    };
                    let opts = LinearCrossEntropyOptions::default()
                        .with_grads()
                        .with_chunk_rows(3);
                    let l = g
                        .linear_cross_entropy(h, 8, head, Target::I64(&t64), None, &opts)
                        .unwrap();
                    all.extend([l.loss, l.grad_input.unwrap(), l.grad_weight.unwrap()]);
                    all.push(l.grad_bias.unwrap());
                    // Vocabulary-parallel cross-entropy, its shards on this device.
                    let split = [cols / 3, cols - cols / 3];
                    let parts: Vec<(&(dyn Backend + Sync), usize)> = split
                        .iter()
                        .map(|&w| (&*g as &(dyn Backend + Sync), w))
                        .collect();
                    let t = Target::I64(&t64);
                    let l = xent::cross_entropy_split(&parts, &i.x, cols, t, None, &ce, Grad::New)
                        .unwrap();
                    all.extend([l.loss, l.grad.unwrap(), l.entropy.unwrap()]);
                }
                all.concat()
                    .iter()
                    .map(|v| v.to_bits())
                    .collect::<Vec<u32>>()
            };
            assert_eq!(run(a), run(b), "{lane:?} {rows}×{cols}");
        }
    }
}
