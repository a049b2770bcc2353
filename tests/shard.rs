//! Cross-entropy over a vocabulary split across devices (SPEC.md §2): for 1, 2, 3 and 7
//! shards of uneven widths (a shard of one column among them) and targets on the shards'
//! boundaries, the loss, gradient and extras equal the unsharded op's to 1e-6 relative and a
//! float64 reference, with every option, on GPU shards, CPU shards and both mixed (every
//! adapter wgpu finds: lavapipe and GL in CI).

mod common;

use common::{
    HALVES, assert_close, assert_half, awkward_logits, gpu, gpus_with, poison, reference, rng,
    rounded,
};
use rand::RngExt;
use xent::{
    Backend, CeExtras, Cpu, CrossEntropyOptions, Error, Gpu, GpuOptions, Grad, GradOut, Loss,
    LossOut, LossReduction, RowSplit, SHARD_STATS, Shard, ShardBatch, Target, Targets, Tensor,
    Workspace, cross_entropy_split, merge_shard_stats,
};

/// Shard widths of a vocabulary of `k`: 1, 2, 3 and 7 shards, uneven, one of width 1.
fn splits(k: usize) -> Vec<Vec<usize>> {
    let mut all = vec![vec![k]];
    if k >= 3 {
        all.push(vec![k / 3, k - k / 3]);
        all.push(vec![1, k / 2, k - 1 - k / 2]);
    }
    if k >= 40 {
        let mut seven: Vec<usize> = (0..6).map(|i| [1, k / 5, 3, k / 7, 2, k / 4][i]).collect();
        seven.push(k - seven.iter().sum::<usize>());
        all.push(seven);
    }
    all
}

/// Targets of `rows` rows: every shard's first and last column in turn, some ignored, the
/// rest anywhere.
fn targets(
    rows: usize,
    k: usize,
    widths: &[usize],
    ignore: i64,
    rng: &mut rand::rngs::StdRng,
) -> Vec<i64> {
    let mut bounds = Vec::new();
    let mut first = 0;
    for &w in widths {
        bounds.push(first as i64);
        bounds.push((first + w - 1) as i64);
        first += w;
    }
    (0..rows)
        .map(|r| match r % 5 {
            1 => ignore,
            3 => rng.random_range(0..k as i64),
            _ => bounds[(r * 7) % bounds.len()],
        })
        .collect()
}

/// The option sets every split runs with. Smoothing over the rows with -inf logits gives
/// an infinite loss, so those sets either keep the rows' losses apart or cap the logits.
fn option_sets() -> Vec<(&'static str, CrossEntropyOptions, bool)> {
    let base = CrossEntropyOptions::default();
    vec![
        ("mean", base, false),
        (
            "weights, ignore -1, smoothing, z-loss, none",
            base.with_ignore_index(-1)
                .with_label_smoothing(0.1)
                .with_z_loss(1e-3)
                .with_reduction(LossReduction::None),
            true,
        ),
        (
            "softcap, z-loss, extras, sum",
            CrossEntropyOptions {
                softcap: Some(30.0),
                z_loss: 1e-4,
                z_loss_output: true,
                entropy_output: true,
                ..base.with_reduction(LossReduction::Sum)
            },
            false,
        ),
        (
            "weights, smoothing, softcap, entropy, mean",
            CrossEntropyOptions {
                softcap: Some(20.0),
                entropy_output: true,
                ..base.with_label_smoothing(0.2)
            },
            true,
        ),
    ]
}

/// The float64 reference of the whole rows, reduced: (loss, gradient, z-loss, entropy).
fn want(
    x: &[f32],
    k: usize,
    t: &[i64],
    w: Option<&[f32]>,
    o: &CrossEntropyOptions,
) -> (Vec<f64>, Vec<f64>, Vec<f64>, Vec<f64>) {
    let x64 = reference::widen(x);
    let (losses, den, grad) = reference::cross_entropy(&x64, k, t, w, o);
    let (lp, lse, _) = reference::read_logits(&x64, k, o.softcap);
    let (loss, scale) = match o.reduction {
        LossReduction::None => (losses, 1.0),
        LossReduction::Sum => (vec![losses.iter().sum()], 1.0),
        LossReduction::Mean => (vec![losses.iter().sum::<f64>() / den], 1.0 / den),
    };
    let kept = |r: usize, v: f64| if t[r] == o.ignore_index { 0.0 } else { v };
    let z = (0..t.len())
        .map(|r| kept(r, f64::from(o.z_loss) * lse[r] * lse[r]))
        .collect();
    let h = lp
        .chunks(k)
        .enumerate()
        .map(|(r, lp)| {
            let s: f64 = lp
                .iter()
                .filter(|v| v.is_finite())
                .map(|v| -v.exp() * v)
                .sum();
            kept(r, s)
        })
        .collect();
    (loss, grad.iter().map(|g| g * scale).collect(), z, h)
}

/// Sharded results against the unsharded ones (1e-6 relative, gradients scaled by the
/// largest of their row) and against float64.
#[track_caller]
fn check(what: &str, got: &Loss<Vec<f32>>, whole: &Loss<Vec<f32>>, want: &[Vec<f64>; 4], k: usize) {
    let widen = |v: &[f32]| v.iter().map(|&x| f64::from(x)).collect::<Vec<_>>();
    assert_close(
        &format!("{what}: loss vs unsharded"),
        &got.loss,
        &widen(&whole.loss),
        1e-6,
        0.0,
    );
    assert_close(&format!("{what}: loss"), &got.loss, &want[0], 1e-5, 1e-6);
    let g = got.grad.as_ref().expect("a gradient");
    let g_whole = whole.grad.as_ref().expect("a gradient");
    // Per row: within 1e-6 of the row's largest element (an element near 0 has no relative
    // precision of its own: it is a difference p - q of numbers of the row's size).
    for (r, ((a, b), c)) in g
        .chunks(k)
        .zip(g_whole.chunks(k))
        .zip(want[1].chunks(k))
        .enumerate()
    {
        let top = c.iter().fold(0.0f64, |m, v| m.max(v.abs())).max(1e-30);
        assert_close(
            &format!("{what}: gradient row {r} vs unsharded"),
            a,
            &widen(b),
            0.0,
            1e-6 * top,
        );
        assert_close(&format!("{what}: gradient row {r}"), a, c, 0.0, 1e-5 * top);
    }
    for (name, got, whole, want) in [
        ("z-loss", &got.z_loss, &whole.z_loss, &want[2]),
        ("entropy", &got.entropy, &whole.entropy, &want[3]),
    ] {
        assert_eq!(got.is_some(), whole.is_some(), "{what}: {name} given");
        if let (Some(a), Some(b)) = (got, whole) {
            assert_close(
                &format!("{what}: {name} vs unsharded"),
                a,
                &widen(b),
                1e-6,
                1e-7,
            );
            assert_close(&format!("{what}: {name}"), a, want, 1e-5, 1e-6);
        }
    }
}

/// A part of a split: its backend, and whether that is a GPU.
type Part<'a> = (&'a (dyn Backend + Sync), bool);

/// A recorded run's results: the loss, each shard's gradient, the z-loss and entropy.
type Run = (Vec<f32>, Vec<Vec<f32>>, [Vec<f32>; 2]);

/// The backends to split over: the CPU, the default GPU, every adapter wgpu finds.
fn devices() -> (Option<Gpu>, Vec<Gpu>) {
    let all = gpu().map(|_| Gpu::all(GpuOptions::default()).expect("every adapter"));
    (gpu(), all.unwrap_or_default())
}

#[test]
fn any_split_over_any_backends_equals_the_whole_vocabulary() {
    let mut rng = rng(12);
    let (default, all) = devices();
    for g in &all {
        eprintln!("adapter: {}", g.describe());
    }
    for (rows, k) in [(1, 3), (33, 1000), (3, 33_333)] {
        let x = awkward_logits(&mut rng, rows, k);
        let cw: Vec<f32> = (0..k).map(|_| rng.random_range(0.25f32..2.0)).collect();
        for widths in splits(k) {
            for (name, opts, weighted) in option_sets() {
                let t = targets(rows, k, &widths, opts.ignore_index, &mut rng);
                let w = weighted.then_some(&cw[..]);
                let r = want(&x, k, &t, w, &opts);
                let want = [r.0, r.1, r.2, r.3];
                let target = Target::I64(&t);
                let whole_cpu = Cpu
                    .cross_entropy(&x, k, target, w, &opts, Grad::New)
                    .unwrap();
                let whole_gpu = default
                    .as_ref()
                    .map(|g| g.cross_entropy(&x, k, target, w, &opts, Grad::New).unwrap());
                // CPU shards, GPU shards (the default adapter), and the shards dealt over the
                // CPU and every adapter in turn; each compared with the unsharded result of
                // the kind of backend that computed it.
                let mut runs: Vec<(&str, Vec<Part>)> =
                    vec![("cpu", vec![(&Cpu, false); widths.len()])];
                if let Some(g) = &default {
                    runs.push(("gpu", vec![(g, true); widths.len()]));
                    let mut deal: Vec<Part> = vec![(&Cpu, false)];
                    deal.extend(all.iter().map(|g| (g as &(dyn Backend + Sync), true)));
                    let mixed = (0..widths.len())
                        .map(|i| deal[(i + 1) % deal.len()])
                        .collect();
                    runs.push(("mixed", mixed));
                }
                for (kind, parts) in runs {
                    let on_gpu: Vec<bool> = parts.iter().map(|p| p.1).collect();
                    let parts: Vec<_> = parts
                        .iter()
                        .map(|p| p.0)
                        .zip(widths.iter().copied())
                        .collect();
                    let what = format!("{rows}×{k} split {widths:?} on {kind}, {name}");
                    let got = cross_entropy_split(&parts, &x, k, target, w, &opts, Grad::New)
                        .unwrap_or_else(|e| panic!("{what}: {e}"));
                    let of = |gpu: bool| {
                        if gpu {
                            whole_gpu.as_ref().unwrap()
                        } else {
                            &whole_cpu
                        }
                    };
                    let mut whole = of(on_gpu[0]).clone();
                    let mut first = 0;
                    for (&wd, &gpu) in widths.iter().zip(&on_gpu) {
                        let src = of(gpu).grad.as_ref().unwrap();
                        for (dst, src) in whole
                            .grad
                            .as_mut()
                            .unwrap()
                            .chunks_mut(k)
                            .zip(src.chunks(k))
                        {
                            dst[first..first + wd].copy_from_slice(&src[first..first + wd]);
                        }
                        first += wd;
                    }
                    check(&what, &got, &whole, &want, k);
                }
            }
        }
    }
}

#[test]
fn half_precision_shards_on_both_paths() {
    let mut rng = rng(13);
    let (rows, k) = (9, 1001);
    let widths = [500, 1, 500];
    let x = awkward_logits(&mut rng, rows, k);
    let opts = CrossEntropyOptions::default().with_label_smoothing(0.1);
    let t = targets(rows, k, &widths, opts.ignore_index, &mut rng);
    for dtype in HALVES {
        let (xr, _) = rounded(&x, dtype);
        let (loss, grad, ..) = want(&xr, k, &t, None, &opts);
        let cpu = Cpu.typed(dtype);
        let gpu = gpu();
        let gpu = gpu.as_ref().map(|g| g.typed(dtype));
        let mut parts: Vec<(&(dyn Backend + Sync), usize)> = vec![(&*cpu, widths[0])];
        let other = gpu.as_deref().unwrap_or(&*cpu);
        parts.push((other, widths[1]));
        parts.push((other, widths[2]));
        let got =
            cross_entropy_split(&parts, &x, k, Target::I64(&t), None, &opts, Grad::New).unwrap();
        assert_close(&format!("{dtype}: loss"), &got.loss, &loss, 1e-5, 1e-6);
        assert_half(
            &format!("{dtype}: gradient"),
            &got.grad.unwrap(),
            &grad,
            dtype,
            1e-7,
        );
    }
}

/// One shard's columns of `x` (rows of `k`), contiguous.
fn columns(x: &[f32], k: usize, (first, width): (usize, usize)) -> Vec<f32> {
    x.chunks(k)
        .flat_map(|r| &r[first..first + width])
        .copied()
        .collect()
}

/// The recording forms on one device: rows split into segments and bindings chunked (a
/// 64 KiB binding cap), the gradient into a NaN-poisoned tensor on one shard and in place on
/// the other, bit-identical on a second run; a bad target returns the error and writes
/// nothing.
#[test]
fn recorded_passes_in_chunks_in_place_and_bad_targets() {
    let mut rng = rng(14);
    let (rows, k) = (70, 3001);
    let widths = [1000, 2001];
    let shards = Shard::split(k, &widths).unwrap();
    let x = awkward_logits(&mut rng, rows, k);
    let cw: Vec<f32> = (0..k).map(|_| rng.random_range(0.25f32..2.0)).collect();
    let opts = CrossEntropyOptions {
        entropy_output: true,
        z_loss_output: true,
        ..CrossEntropyOptions::default()
            .with_label_smoothing(0.1)
            .with_z_loss(1e-3)
            .with_reduction(LossReduction::None)
    };
    let t = targets(rows, k, &widths, opts.ignore_index, &mut rng);
    let r = want(&x, k, &t, Some(&cw), &opts);
    let options = GpuOptions {
        row_split: RowSplit::Always,
        max_binding_bytes: Some(64 << 10),
        ..GpuOptions::default()
    };
    for (lane, gpu) in gpus_with(options) {
        let run = |t: &[i64]| -> xent::Result<Run> {
            let targets = Targets::from_i64(&gpu, t)?;
            let logits: Vec<Tensor> = shards
                .iter()
                .map(|s| {
                    Tensor::from_slice(&gpu, &columns(&x, k, (s.first, s.width)), rows, s.width)
                })
                .collect::<xent::Result<_>>()?;
            let weights: Vec<Tensor> = shards
                .iter()
                .map(|s| Tensor::from_slice(&gpu, &cw[s.first..s.first + s.width], 1, s.width))
                .collect::<xent::Result<_>>()?;
            let batch = |i: usize| ShardBatch {
                shard: shards[i],
                targets: &targets,
                weight: Some(&weights[i]),
            };
            let mut ws = Workspace::new(&gpu);
            let stats: Vec<Tensor> = (0..2)
                .map(|_| Tensor::from_slice(&gpu, &poison(rows * SHARD_STATS), rows, SHARD_STATS))
                .collect::<xent::Result<_>>()?;
            let mut enc = gpu.encoder();
            for i in 0..2 {
                logits[i].record_shard_stats(&mut ws, &mut enc, batch(i), &opts, &stats[i])?;
            }
            gpu.queue().submit([enc.finish()]);
            ws.check_targets()?;
            let mut merged = stats[0].to_vec()?;
            merge_shard_stats(&mut merged, &stats[1].to_vec()?)?;
            let merged = Tensor::from_slice(&gpu, &merged, rows, SHARD_STATS)?;
            let loss = Tensor::from_slice(&gpu, &poison(rows), rows, 1)?;
            let per_row = || Tensor::from_slice(&gpu, &poison(rows), rows, 1);
            let (z, h) = (per_row()?, per_row()?);
            let g0 = Tensor::from_slice(&gpu, &poison(rows * widths[0]), rows, widths[0])?;
            let mut enc = gpu.encoder();
            let extras = CeExtras {
                z_loss: Some(&z),
                entropy: Some(&h),
            };
            let into = LossOut {
                loss: &loss,
                grad: GradOut::Into(&g0),
            };
            logits[0].record_shard_backward(
                &mut ws,
                &mut enc,
                batch(0),
                &merged,
                &opts,
                (into, extras),
            )?;
            let in_place = LossOut {
                loss: &loss,
                grad: GradOut::InPlace,
            };
            let none = CeExtras {
                z_loss: Some(&z),
                entropy: Some(&h),
            };
            logits[1].record_shard_backward(
                &mut ws,
                &mut enc,
                batch(1),
                &merged,
                &opts,
                (in_place, none),
            )?;
            gpu.queue().submit([enc.finish()]);
            ws.check_targets()?;
            Ok((
                loss.to_vec()?,
                vec![g0.to_vec()?, logits[1].to_vec()?],
                [z.to_vec()?, h.to_vec()?],
            ))
        };
        let what = format!("{lane:?}");
        let (loss, grads, [z, h]) = run(&t).unwrap();
        let mut grad = vec![0.0f32; rows * k];
        for (s, g) in shards.iter().zip(&grads) {
            for (dst, src) in grad.chunks_mut(k).zip(g.chunks(s.width)) {
                dst[s.first..s.first + s.width].copy_from_slice(src);
            }
        }
        assert_close(&format!("{what}: loss"), &loss, &r.0, 1e-5, 1e-6);
        for (row, (a, b)) in grad.chunks(k).zip(r.1.chunks(k)).enumerate() {
            let top = b.iter().fold(0.0f64, |m, v| m.max(v.abs())).max(1e-30);
            assert_close(
                &format!("{what}: gradient row {row}"),
                a,
                b,
                0.0,
                1e-5 * top,
            );
        }
        assert_close(&format!("{what}: z-loss"), &z, &r.2, 1e-5, 1e-6);
        assert_close(&format!("{what}: entropy"), &h, &r.3, 1e-5, 1e-6);
        let again = run(&t).unwrap();
        assert_eq!(
            (
                loss.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                grads
                    .concat()
                    .iter()
                    .map(|v| v.to_bits())
                    .collect::<Vec<_>>()
            ),
            (
                again.0.iter().map(|v| v.to_bits()).collect(),
                again.1.concat().iter().map(|v| v.to_bits()).collect()
            ),
            "{what}: the same bits on a second run"
        );
        // A target past the vocabulary (in no shard) in row 40: pass 1 reports it.
        let mut bad = t.clone();
        bad[40] = k as i64 + 5;
        match run(&bad) {
            Err(Error::Target {
                row,
                value,
                classes,
                ..
            }) => {
                assert_eq!((row, value, classes), (40, k as i64 + 5, k), "{what}");
            }
            other => panic!("{what}: {:?}", other.map(|o| o.0)),
        }
    }
}

/// Pass 2 checks the targets again: a bad one returns the error and writes nothing, neither
/// the loss nor the gradient (NaN-poisoned here), nor the logits in place.
#[test]
fn a_bad_target_in_pass_two_writes_nothing() {
    let Some(gpu) = gpu() else { return };
    let mut rng = rng(15);
    let (rows, k) = (5, 37);
    let x = awkward_logits(&mut rng, rows, k);
    let shard = Shard::split(k, &[k]).unwrap()[0];
    let opts = CrossEntropyOptions::default();
    let good = Targets::from_i64(&gpu, &[0, 36, 5, -100, 2]).unwrap();
    let bad = Targets::from_i64(&gpu, &[0, 36, 5, -7, 2]).unwrap();
    let logits = Tensor::from_slice(&gpu, &x, rows, k).unwrap();
    let batch = |targets| ShardBatch {
        shard,
        targets,
        weight: None,
    };
    let merged = logits.shard_stats(batch(&good), &opts).unwrap();
    for grad in [Grad::New, Grad::InPlace] {
        let loss = Tensor::from_slice(&gpu, &[f32::NAN], 1, 1).unwrap();
        let g = Tensor::from_slice(&gpu, &poison(rows * k), rows, k).unwrap();
        let out = LossOut {
            loss: &loss,
            grad: match grad {
                Grad::New => GradOut::Into(&g),
                _ => GradOut::InPlace,
            },
        };
        let mut ws = Workspace::new(&gpu);
        let mut enc = gpu.encoder();
        logits
            .record_shard_backward(
                &mut ws,
                &mut enc,
                batch(&bad),
                &merged,
                &opts,
                (out, CeExtras::default()),
            )
            .unwrap();
        gpu.queue().submit([enc.finish()]);
        match ws.check_targets() {
            Err(Error::Target {
                row: 3,
                value: -7,
                classes: 37,
                ..
            }) => {}
            other => panic!("{grad:?}: {other:?}"),
        }
        assert!(
            loss.to_vec().unwrap()[0].is_nan(),
            "{grad:?}: a loss was written"
        );
        assert!(
            g.to_vec().unwrap().iter().all(|v| v.is_nan()),
            "{grad:?}: a gradient was written"
        );
        assert_eq!(logits.to_vec().unwrap(), x, "{grad:?}: the logits changed");
    }
    // The convenience forms return the error.
    assert!(matches!(
        logits.shard_backward(batch(&bad), &merged, &opts, Grad::New),
        Err(Error::Target { row: 3, .. })
    ));
    assert!(matches!(
        logits.shard_stats(batch(&bad), &opts),
        Err(Error::Target { row: 3, .. })
    ));
}

#[test]
fn bad_shards_and_statistics_are_errors() {
    assert!(Shard::split(10, &[3, 6]).is_err());
    assert!(Shard::split(10, &[0, 10]).is_err());
    let mut a = vec![0.0f32; 16];
    assert!(merge_shard_stats(&mut a, &[0.0; 8]).is_err());
    assert!(merge_shard_stats(&mut a[..12], &[0.0; 12]).is_err());
    let shard = Shard::split(4, &[2, 2]).unwrap()[1];
    let opts = CrossEntropyOptions::default();
    let x = [1.0f32, 2.0, 3.0, 4.0];
    let batch = |t| ShardBatch {
        shard,
        targets: t,
        weight: None,
    };
    // Targets index the whole vocabulary: 3 is fine, 4 is not.
    assert!(
        Cpu.shard_stats(&x, batch(Target::I64(&[3, 0])), &opts)
            .is_ok()
    );
    assert!(matches!(
        Cpu.shard_stats(&x, batch(Target::I64(&[4, 0])), &opts),
        Err(Error::Target {
            row: 0,
            value: 4,
            classes: 4,
            ..
        })
    ));
    assert!(
        Cpu.shard_stats(&x, batch(Target::Probs(&x)), &opts)
            .is_err()
    );
    assert!(
        Cpu.shard_stats(&x[..3], batch(Target::I64(&[3, 0])), &opts)
            .is_err()
    );
    let merged = [0.0f32; 8];
    assert!(matches!(
        Cpu.shard_backward(&x, batch(Target::I64(&[3, 0])), &merged, &opts, Grad::New),
        Err(Error::Shape(_))
    ));
    if let Some(gpu) = gpu() {
        assert!(matches!(
            gpu.shard_backward(&x, batch(Target::I64(&[3, 0])), &merged, &opts, Grad::New),
            Err(Error::Shape(_))
        ));
        let t = Targets::from_i64(&gpu, &[3, 0]).unwrap();
        let wide = Tensor::from_slice(&gpu, &[0.0; 6], 2, 3).unwrap();
        let gb = ShardBatch {
            shard,
            targets: &t,
            weight: None,
        };
        assert!(matches!(wide.shard_stats(gb, &opts), Err(Error::Shape(_))));
    }
}
