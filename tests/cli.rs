//! The `xent` binary against SPEC.md §6: results, shapes, dtypes, and every error a
//! one-line message with a non-zero exit and no output file.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{assert_close, assert_half, normal, npy_bytes, reference, rng, rounded};
use xent::DType;

fn xent(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_xent"))
        .args(args)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    (out.status.code().unwrap_or(-1), stderr)
}

fn tmp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("xent-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

fn path_str(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// The error lines xent itself printed: not the device announcement, and not the chatter
/// some drivers add on stderr.
fn own_lines(stderr: &str) -> Vec<&str> {
    stderr
        .lines()
        .filter(|l| l.starts_with("xent:") || l.contains("panicked"))
        .filter(|l| !l.starts_with("xent: using") && !l.starts_with("xent: no usable GPU"))
        .collect()
}

#[test]
fn softmax_logsumexp_and_elementwise_round_trip() {
    let (rows, cols) = (6, 37);
    let x = normal(&mut rng(1), rows * cols, 5.0);
    let input = tmp("x.npy");
    // Saved as 3-D: the last axis is the row.
    xent::npy::write(&input, &[2, 3, cols], &x).unwrap();
    for device in ["cpu", "auto"] {
        let out = tmp(&format!("p-{device}.npy"));
        let (code, err) = xent(&[
            "softmax",
            "--input",
            path_str(&input),
            "--output",
            path_str(&out),
            "--device",
            device,
        ]);
        assert_eq!(code, 0, "{err}");
        let y = xent::npy::read(&out).unwrap();
        assert_eq!(y.shape, vec![2, 3, cols]);
        assert_close(
            &format!("cli softmax {device}"),
            &y.data,
            &reference::softmax(&x, cols, 1.0),
            1e-5,
            1e-7,
        );

        let (code, err) = xent(&[
            "softmax",
            "--input",
            path_str(&input),
            "--output",
            path_str(&out),
            "--log",
            "--temperature",
            "2.5",
            "--device",
            device,
        ]);
        assert_eq!(code, 0, "{err}");
        let y = xent::npy::read(&out).unwrap();
        assert_close(
            "cli log_softmax T",
            &y.data,
            &reference::log_softmax(&x, cols, 2.5),
            1e-5,
            1e-6,
        );

        let (code, err) = xent(&[
            "logsumexp",
            "--input",
            path_str(&input),
            "--output",
            path_str(&out),
            "--device",
            device,
        ]);
        assert_eq!(code, 0, "{err}");
        let y = xent::npy::read(&out).unwrap();
        assert_eq!(y.shape, vec![2, 3]);
        assert_close(
            "cli logsumexp",
            &y.data,
            &reference::logsumexp(&x, cols, 1.0),
            1e-5,
            1e-6,
        );

        let (code, err) = xent(&[
            "sigmoid",
            "--input",
            path_str(&input),
            "--output",
            path_str(&out),
            "--log",
            "--device",
            device,
        ]);
        assert_eq!(code, 0, "{err}");
        let want: Vec<f64> = x.iter().map(|&v| -(-f64::from(v)).exp().ln_1p()).collect();
        assert_close(
            "cli log-sigmoid",
            &xent::npy::read(&out).unwrap().data,
            &want,
            1e-5,
            1e-30,
        );
    }
}

#[test]
fn f64_and_f16_inputs_and_a_scalar_result() {
    let vals = [0.25f64, 0.5, 0.9, 1e-3];
    let f64_bytes: Vec<u8> = vals.iter().flat_map(|v| v.to_le_bytes()).collect();
    let input = tmp("p64.npy");
    std::fs::write(&input, npy_bytes("<f8", false, &[4], &f64_bytes)).unwrap();
    let out = tmp("logit.npy");
    let (code, err) = xent(&[
        "logit",
        "--input",
        path_str(&input),
        "--output",
        path_str(&out),
    ]);
    assert_eq!(code, 0, "{err}");
    let want: Vec<f64> = vals.iter().map(|&p| (p / (1.0 - p)).ln()).collect();
    assert_close(
        "logit f64 input",
        &xent::npy::read(&out).unwrap().data,
        &want,
        1e-5,
        1e-7,
    );

    let halves: Vec<u8> = [1.0f32, 2.0, 3.0]
        .iter()
        .flat_map(|&v| half::f16::from_f32(v).to_le_bytes())
        .collect();
    std::fs::write(&input, npy_bytes("<f2", false, &[3], &halves)).unwrap();
    let (code, err) = xent(&[
        "logsumexp",
        "--input",
        path_str(&input),
        "--output",
        path_str(&out),
    ]);
    assert_eq!(code, 0, "{err}");
    let y = xent::npy::read(&out).unwrap();
    assert!(
        y.shape.is_empty(),
        "a scalar result is a 0-d array, got {:?}",
        y.shape
    );
    let want = (1f64.exp() + 2f64.exp() + 3f64.exp()).ln();
    assert_close("logsumexp f16", &y.data, &[want], 1e-5, 0.0);
}

#[test]
fn every_error_is_one_line_a_nonzero_exit_and_no_output() {
    let good = tmp("good.npy");
    xent::npy::write(&good, &[2, 3], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]).unwrap();
    let garbage = tmp("garbage.npy");
    std::fs::write(&garbage, b"this is not numpy at all").unwrap();
    let truncated = tmp("truncated.npy");
    let full = npy_bytes("<f4", false, &[1000, 1000], &[0u8; 64]);
    std::fs::write(&truncated, &full).unwrap();
    let ints = tmp("ints.npy");
    std::fs::write(&ints, npy_bytes("<i8", false, &[2], &[0u8; 16])).unwrap();
    let fortran = tmp("fortran.npy");
    std::fs::write(&fortran, npy_bytes("<f4", true, &[2, 2], &[0u8; 16])).unwrap();
    let empty = tmp("empty.npy");
    std::fs::write(&empty, npy_bytes("<f4", false, &[0, 3], &[])).unwrap();
    let scalar = tmp("scalar.npy");
    std::fs::write(&scalar, npy_bytes("<f4", false, &[], &1f32.to_le_bytes())).unwrap();
    let huge_header = tmp("huge_header.npy");
    let mut bytes = b"\x93NUMPY\x02\x00".to_vec();
    bytes.extend(u32::MAX.to_le_bytes());
    std::fs::write(&huge_header, bytes).unwrap();

    let out = tmp("never.npy");
    let o = path_str(&out);
    let missing = Path::new("/nonexistent/x.npy");
    let bad_inputs = [
        (missing, "missing file"),
        (garbage.as_path(), "garbage"),
        (truncated.as_path(), "truncated"),
        (ints.as_path(), "integer dtype"),
        (fortran.as_path(), "fortran order"),
        (empty.as_path(), "empty"),
        (scalar.as_path(), "0-d for a row op"),
        (huge_header.as_path(), "huge header"),
    ];
    let mut cases: Vec<(Vec<&str>, &str)> = bad_inputs
        .iter()
        .map(|(input, what)| {
            (
                vec!["softmax", "--input", path_str(input), "--output", o],
                *what,
            )
        })
        .collect();
    let g = path_str(&good);
    cases.extend([
        (
            vec!["softmax", "--input", g, "--output", o, "--temperature", "0"],
            "zero temperature",
        ),
        (
            vec![
                "softmax",
                "--input",
                g,
                "--output",
                o,
                "--temperature",
                "-1",
            ],
            "negative temperature",
        ),
        (
            vec![
                "softmax",
                "--input",
                g,
                "--output",
                o,
                "--temperature",
                "1e-40",
            ],
            "subnormal temperature (its reciprocal overflows)",
        ),
        (
            vec!["softmax", "--input", g, "--output", o, "--bogus"],
            "unknown option",
        ),
        (vec!["softmax", "--input", g], "missing --output"),
        (vec!["frobnicate"], "unknown command"),
        (
            vec!["softmax", "--input", g, "--output", o, "--device", "tpu"],
            "bad device",
        ),
        (
            vec![
                "softmax",
                "--input",
                g,
                "--output",
                "/nonexistent/dir/y.npy",
            ],
            "unwritable output",
        ),
        (
            vec!["sigmoid", "--input", path_str(&empty), "--output", o],
            "empty elementwise",
        ),
        (
            vec!["bench", "--quick", "--json", "/nonexistent/dir/b.json"],
            "unwritable bench JSON (checked before the run)",
        ),
    ]);
    for (args, what) in cases {
        let (code, err) = xent(&args);
        assert!(code == 1 || code == 2, "{what}: exit {code}, stderr {err}");
        let lines = own_lines(&err);
        assert_eq!(lines.len(), 1, "{what}: expected one line, got {err:?}");
        assert!(!err.contains("panicked"), "{what}: {err}");
        assert!(!out.exists(), "{what}: left an output file");
    }
}

/// An i64 .npy file of class indices.
fn write_i64(path: &Path, shape: &[usize], data: &[i64]) {
    let bytes: Vec<u8> = data.iter().flat_map(|v| v.to_le_bytes()).collect();
    let shape: Vec<u64> = shape.iter().map(|&d| d as u64).collect();
    std::fs::write(path, npy_bytes("<i8", false, &shape, &bytes)).unwrap();
}

#[test]
fn cross_entropy_and_bce_commands() {
    let (rows, cols) = (5, 4);
    let x = normal(&mut rng(7), rows * cols, 2.0);
    let logits = tmp("ce-x.npy");
    xent::npy::write(&logits, &[rows, cols], &x).unwrap();
    let targets = tmp("ce-t.npy");
    let t = [0i64, 3, -100, 1, 2];
    write_i64(&targets, &[rows], &t);
    let weight = tmp("ce-w.npy");
    let w = [1.0f32, 0.5, 2.0, 1.5];
    xent::npy::write(&weight, &[cols], &w).unwrap();
    let soft = tmp("ce-q.npy");
    let q = reference::softmax(&normal(&mut rng(8), rows * cols, 1.0), cols, 1.0);
    let q: Vec<f32> = q.iter().map(|&v| v as f32).collect();
    xent::npy::write(&soft, &[rows, cols], &q).unwrap();
    let (loss, grad) = (tmp("ce-l.npy"), tmp("ce-g.npy"));
    let opts = xent::CrossEntropyOptions::default()
        .with_label_smoothing(0.1)
        .with_softcap(3.0);
    for device in ["cpu", "auto"] {
        let (code, err) = xent(&[
            "cross-entropy",
            "--logits",
            path_str(&logits),
            "--target",
            path_str(&targets),
            "--weight",
            path_str(&weight),
            "--label-smoothing",
            "0.1",
            "--softcap",
            "3",
            "--output",
            path_str(&loss),
            "--grad-output",
            path_str(&grad),
            "--device",
            device,
        ]);
        assert_eq!(code, 0, "{err}");
        let want = xent::Backend::cross_entropy(
            &xent::Cpu,
            &x,
            cols,
            xent::Target::I64(&t),
            Some(&w),
            &opts,
            xent::Grad::New,
        )
        .unwrap();
        let l = xent::npy::read(&loss).unwrap();
        assert_eq!(l.shape, Vec::<usize>::new(), "mean is a 0-d array");
        assert!((l.data[0] - want.loss[0]).abs() <= 1e-5 * want.loss[0].abs());
        let g = xent::npy::read(&grad).unwrap();
        assert_eq!(g.shape, vec![rows, cols]);
        let gw: Vec<f64> = want.grad.unwrap().iter().map(|&v| f64::from(v)).collect();
        assert_close("cli ce grad", &g.data, &gw, 1e-4, 1e-6);

        // Float targets of the logits' shape are probabilities; `none` keeps one per row.
        let (code, err) = xent(&[
            "cross-entropy",
            "--logits",
            path_str(&logits),
            "--target",
            path_str(&soft),
            "--reduction",
            "none",
            "--output",
            path_str(&loss),
            "--device",
            device,
        ]);
        assert_eq!(code, 0, "{err}");
        let l = xent::npy::read(&loss).unwrap();
        assert_eq!(l.shape, vec![rows]);
        let lp = reference::log_softmax(&x, cols, 1.0);
        let want: Vec<f64> = (0..rows)
            .map(|r| {
                -(0..cols)
                    .map(|c| f64::from(q[r * cols + c]) * lp[r * cols + c])
                    .sum::<f64>()
            })
            .collect();
        assert_close("cli soft ce", &l.data, &want, 1e-5, 1e-6);

        let (code, err) = xent(&[
            "bce",
            "--logits",
            path_str(&logits),
            "--target",
            path_str(&soft),
            "--pos-weight",
            path_str(&weight),
            "--reduction",
            "sum",
            "--output",
            path_str(&loss),
            "--device",
            device,
        ]);
        assert_eq!(code, 0, "{err}");
        let l = xent::npy::read(&loss).unwrap();
        let log_sigmoid = |v: f64| v.min(0.0) - (-v.abs()).exp().ln_1p();
        let want: f64 = (0..rows * cols)
            .map(|i| {
                let (v, t, pw) = (f64::from(x[i]), f64::from(q[i]), f64::from(w[i % cols]));
                -(pw * t * log_sigmoid(v) + (1.0 - t) * log_sigmoid(-v))
            })
            .sum();
        assert_close("cli bce", &l.data, &[want], 1e-5, 1e-6);
    }

    // Errors: one line, non-zero exit, neither output written.
    let bad_t = tmp("ce-bad-t.npy");
    write_i64(&bad_t, &[rows], &[0, 1, 9, 1, 2]);
    let short_t = tmp("ce-short-t.npy");
    write_i64(&short_t, &[rows - 1], &[0, 1, 2, 3]);
    let (out, gout) = (tmp("ce-never.npy"), tmp("ce-never-g.npy"));
    let (lx, o, go) = (path_str(&logits), path_str(&out), path_str(&gout));
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["--target", path_str(&bad_t)], "target out of range"),
        (
            vec!["--target", path_str(&short_t)],
            "targets of the wrong shape",
        ),
        (
            vec!["--target", path_str(&targets), "--weight", path_str(&soft)],
            "weight shape",
        ),
        (
            vec!["--target", path_str(&targets), "--label-smoothing", "1.5"],
            "smoothing",
        ),
        (
            vec!["--target", path_str(&targets), "--reduction", "max"],
            "reduction",
        ),
        (
            vec!["--target", path_str(&soft), "--z-loss", "0.1"],
            "soft z-loss",
        ),
        (
            vec!["--target", path_str(&targets), "--softcap", "-1"],
            "softcap",
        ),
    ];
    for (extra, what) in cases {
        let mut args = vec![
            "cross-entropy",
            "--logits",
            lx,
            "--output",
            o,
            "--grad-output",
            go,
        ];
        args.extend(extra);
        let (code, err) = xent(&args);
        assert!(code == 1 || code == 2, "{what}: exit {code}, stderr {err}");
        assert_eq!(own_lines(&err).len(), 1, "{what}: {err:?}");
        assert!(
            !out.exists() && !gout.exists(),
            "{what}: left an output file"
        );
    }
    let (code, err) = xent(&[
        "bce",
        "--logits",
        lx,
        "--target",
        path_str(&targets),
        "--output",
        o,
    ]);
    assert!(code == 1 || code == 2, "bce int target: {err}");
    assert_eq!(own_lines(&err).len(), 1, "{err:?}");
    assert!(!out.exists());
}

#[test]
fn entropy_divergence_and_joint_commands() {
    let p_path = tmp("it-p.npy");
    let q_path = tmp("it-q.npy");
    xent::npy::write(&p_path, &[1, 2], &[0.8, 0.2]).unwrap();
    xent::npy::write(&q_path, &[1, 2], &[0.7, 0.3]).unwrap();
    let j_path = tmp("it-j.npy");
    // Two 2×3 tables of counts: one independent, one deterministic.
    let j = [
        2.0f32, 4.0, 6.0, 1.0, 2.0, 3.0, 0.0, 5.0, 0.0, 3.0, 0.0, 0.0,
    ];
    xent::npy::write(&j_path, &[2, 2, 3], &j).unwrap();
    let out = tmp("it-out.npy");
    let (p, q, o) = (path_str(&p_path), path_str(&q_path), path_str(&out));
    let ln = f64::ln;
    for device in ["cpu", "auto"] {
        let (code, err) = xent(&[
            "entropy", "--input", p, "--output", o, "--base", "2", "--device", device,
        ]);
        assert_eq!(code, 0, "{err}");
        let h = xent::npy::read(&out).unwrap();
        assert_eq!(h.shape, vec![1]);
        assert_close(
            "cli entropy bits",
            &h.data,
            &[-(0.8 * ln(0.8) + 0.2 * ln(0.2)) / ln(2.0)],
            0.0,
            1e-6,
        );

        let (code, err) = xent(&[
            "divergence",
            "--kind",
            "kl",
            "--p",
            p,
            "--q",
            q,
            "--output",
            o,
            "--device",
            device,
        ]);
        assert_eq!(code, 0, "{err}");
        let d = xent::npy::read(&out).unwrap();
        assert_close(
            "cli kl",
            &d.data,
            &[0.8 * ln(0.8 / 0.7) + 0.2 * ln(0.2 / 0.3)],
            0.0,
            1e-6,
        );

        let (code, err) = xent(&[
            "divergence",
            "--kind",
            "cross-entropy",
            "--p",
            p,
            "--q",
            q,
            "--output",
            o,
            "--reduction",
            "sum",
            "--device",
            device,
        ]);
        assert_eq!(code, 0, "{err}");
        let d = xent::npy::read(&out).unwrap();
        assert_eq!(d.shape, Vec::<usize>::new());
        assert_close(
            "cli cross-entropy",
            &d.data,
            &[-(0.8 * ln(0.7) + 0.2 * ln(0.3))],
            0.0,
            1e-6,
        );

        // From logits, softcapped at 1 and at temperature 2: P and Q are softmax(tanh(x) / 2).
        let (code, err) = xent(&[
            "divergence",
            "--kind",
            "kl",
            "--p",
            p,
            "--q",
            q,
            "--from",
            "logits",
            "--softcap",
            "1",
            "--temperature",
            "2",
            "--output",
            o,
            "--device",
            device,
        ]);
        assert_eq!(code, 0, "{err}");
        let d = xent::npy::read(&out).unwrap();
        let sm = |a: f64, b: f64| {
            let (a, b) = (a.tanh() / 2.0, b.tanh() / 2.0);
            a.exp() / (a.exp() + b.exp())
        };
        let (p0, q0) = (sm(0.8, 0.2), sm(0.7, 0.3));
        let want = p0 * ln(p0 / q0) + (1.0 - p0) * ln((1.0 - p0) / (1.0 - q0));
        assert_close("cli kl softcap", &d.data, &[want], 1e-4, 2e-6);

        let (code, err) = xent(&[
            "joint",
            "--input",
            path_str(&j_path),
            "--output",
            o,
            "--device",
            device,
        ]);
        assert_eq!(code, 0, "{err}");
        let s = xent::npy::read(&out).unwrap();
        assert_eq!(s.shape, vec![2, 5]);
        assert!(
            s.data[4].abs() < 1e-6,
            "independent: I = 0, got {}",
            s.data[4]
        );
        assert!(
            (s.data[9] - s.data[5]).abs() < 1e-6,
            "deterministic: I = H(X)"
        );
    }
    let bad = tmp("it-bad.npy");
    xent::npy::write(&bad, &[2, 2], &[0.5, 0.5, 0.9, 0.3]).unwrap();
    let neg = tmp("it-neg.npy");
    xent::npy::write(&neg, &[1, 2], &[1.5, -0.5]).unwrap();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["entropy", "--input", path_str(&bad), "--output", o],
            "row not summing to 1",
        ),
        (
            vec!["entropy", "--input", path_str(&neg), "--output", o],
            "negative probability",
        ),
        (
            vec!["entropy", "--input", p, "--output", o, "--base", "1"],
            "base 1",
        ),
        (
            vec!["entropy", "--input", p, "--output", o, "--base", "ten"],
            "base not a number",
        ),
        (
            vec!["entropy", "--input", p, "--output", o, "--from", "odds"],
            "bad --from",
        ),
        (
            vec![
                "divergence",
                "--kind",
                "hellinger",
                "--p",
                p,
                "--q",
                q,
                "--output",
                o,
            ],
            "bad kind",
        ),
        (
            vec![
                "divergence",
                "--kind",
                "kl",
                "--p",
                p,
                "--q",
                q,
                "--softcap",
                "2",
                "--output",
                o,
            ],
            "softcap on probabilities",
        ),
        (
            vec![
                "divergence",
                "--kind",
                "kl",
                "--p",
                p,
                "--q",
                path_str(&bad),
                "--output",
                o,
            ],
            "Q shape",
        ),
        (
            vec!["joint", "--input", p, "--output", o, "--base", "0.5"],
            "joint base",
        ),
        (
            vec!["joint", "--input", path_str(&neg), "--output", o],
            "negative count",
        ),
    ];
    let _ = std::fs::remove_file(&out);
    for (args, what) in cases {
        let (code, err) = xent(&args);
        assert!(code == 1 || code == 2, "{what}: exit {code}, stderr {err}");
        assert_eq!(own_lines(&err).len(), 1, "{what}: {err:?}");
        assert!(!out.exists(), "{what}: left an output file");
    }
}

#[test]
fn info_lists_adapters() {
    let (code, err) = xent(&["info"]);
    assert_eq!(code, 0, "{err}");
}

#[test]
fn outputs_are_all_written_or_none() {
    let x = tmp("ce-all-or-none-x.npy");
    xent::npy::write(&x, &[2, 3], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]).unwrap();
    let t = tmp("ce-all-or-none-t.npy");
    write_i64(&t, &[2], &[0, 2]);
    let loss = tmp("ce-all-or-none-loss.npy");
    let dir = tmp("ce-grad-is-a-dir");
    std::fs::create_dir_all(&dir).unwrap();
    let ce = |output: &Path, grad: &Path| {
        xent(&[
            "cross-entropy",
            "--logits",
            path_str(&x),
            "--target",
            path_str(&t),
            "--output",
            path_str(output),
            "--grad-output",
            path_str(grad),
        ])
    };
    // The gradient's path is a directory: nothing is computed, the loss is not written.
    let (code, err) = ce(&loss, &dir);
    assert_eq!(code, 1, "{err}");
    assert_eq!(own_lines(&err).len(), 1, "{err}");
    assert!(err.contains("is a directory"), "{err}");
    assert!(
        !loss.exists(),
        "the loss was written although the gradient could not be"
    );
    // One path for both outputs (also spelled differently): an argument error, no file.
    let respelled = loss
        .parent()
        .unwrap()
        .join(".")
        .join(loss.file_name().unwrap());
    for grad in [&loss, &respelled] {
        let (code, err) = ce(&loss, grad);
        assert_eq!(code, 1, "{err}");
        assert!(err.contains("named as two outputs"), "{err}");
        assert!(!loss.exists(), "{err}");
    }
    // Both writable: both written.
    let grad = tmp("ce-all-or-none-grad.npy");
    let (code, err) = ce(&loss, &grad);
    assert_eq!(code, 0, "{err}");
    assert_eq!(xent::npy::read(&loss).unwrap().shape, Vec::<usize>::new());
    assert_eq!(xent::npy::read(&grad).unwrap().shape, vec![2, 3]);
}

#[test]
fn negative_numbers_are_values() {
    let p = tmp("neg-p.npy");
    xent::npy::write(&p, &[1, 2], &[0.25, 0.75]).unwrap();
    let out = tmp("neg-h.npy");
    let o = path_str(&out);
    // A negative base is read as the option's value and refused as a base, not taken for a
    // stray flag.
    for base in [["--base", "-2"], ["--base=-2", ""]] {
        let args: Vec<&str> = ["entropy", "--input", path_str(&p), "--output", o]
            .into_iter()
            .chain(base.into_iter().filter(|a| !a.is_empty()))
            .collect();
        let (code, err) = xent(&args);
        assert!(code == 1 || code == 2, "{err}");
        let lines = own_lines(&err);
        assert_eq!(lines.len(), 1, "{err}");
        assert!(lines[0].contains("base"), "{err}");
        assert!(!lines[0].contains("unexpected argument"), "{err}");
        assert!(!out.exists());
    }
}

#[test]
fn long_rows_and_lopsided_tables_through_the_cli() {
    // Past llvmpipe's 65 535 loop iterations per invocation (see tests/long_rows.rs).
    let cols = 8_388_609;
    let x = normal(&mut rng(8), cols, 3.0);
    let input = tmp("long-x.npy");
    xent::npy::write(&input, &[1, cols], &x).unwrap();
    let target = tmp("long-t.npy");
    let y = cols - 3;
    write_i64(&target, &[1], &[y as i64]);
    let p = reference::softmax(&x, cols, 1.0);
    let mut j: Vec<f32> = normal(&mut rng(9), 2 * 70_000, 1.0)
        .iter()
        .map(|v| v.abs().floor())
        .collect();
    j[5] = 7.0;
    let table = tmp("long-j.npy");
    xent::npy::write(&table, &[2, 70_000], &j).unwrap();
    let total: f64 = j.iter().map(|&v| f64::from(v)).sum();
    let h = |v: f64| if v == 0.0 { 0.0 } else { -v * v.ln() };
    let hxy: f64 = j.iter().map(|&v| h(f64::from(v) / total)).sum();
    let hx: f64 = j
        .chunks(70_000)
        .map(|r| h(r.iter().map(|&v| f64::from(v)).sum::<f64>() / total))
        .sum();
    let hy: f64 = (0..70_000)
        .map(|c| h((f64::from(j[c]) + f64::from(j[70_000 + c])) / total))
        .sum();
    let joint_want = [hx, hy, hxy, hxy - hx, hx + hy - hxy];
    for device in ["cpu", "auto"] {
        let out = tmp(&format!("long-p-{device}.npy"));
        let (code, err) = xent(&[
            "softmax",
            "--input",
            path_str(&input),
            "--output",
            path_str(&out),
            "--device",
            device,
        ]);
        assert_eq!(code, 0, "{err}");
        assert_close(
            &format!("cli long softmax {device}"),
            &xent::npy::read(&out).unwrap().data,
            &p,
            1e-4,
            0.0,
        );

        let (loss, grad) = (
            tmp(&format!("long-l-{device}.npy")),
            tmp(&format!("long-g-{device}.npy")),
        );
        let (code, err) = xent(&[
            "cross-entropy",
            "--logits",
            path_str(&input),
            "--target",
            path_str(&target),
            "--output",
            path_str(&loss),
            "--grad-output",
            path_str(&grad),
            "--device",
            device,
        ]);
        assert_eq!(code, 0, "{err}");
        let l = xent::npy::read(&loss).unwrap().data;
        assert_close(
            &format!("cli long loss {device}"),
            &l,
            &[-p[y].ln()],
            1e-5,
            0.0,
        );
        let g = xent::npy::read(&grad).unwrap().data;
        assert_close(
            &format!("cli long grad[y] {device}"),
            &g[y..=y],
            &[p[y] - 1.0],
            1e-6,
            1e-7,
        );

        let stats = tmp(&format!("long-s-{device}.npy"));
        let (code, err) = xent(&[
            "joint",
            "--input",
            path_str(&table),
            "--output",
            path_str(&stats),
            "--device",
            device,
        ]);
        assert_eq!(code, 0, "{err}");
        assert_close(
            &format!("cli 2×70 000 joint {device}"),
            &xent::npy::read(&stats).unwrap().data,
            &joint_want,
            1e-5,
            1e-5,
        );
    }
}

#[test]
fn bench_runs_the_rows_asked_for() {
    let json = tmp("bench-one-row.json");
    let out = Command::new(env!("CARGO_BIN_EXE_xent"))
        .args([
            "bench", "--ops", "softmax", "--shapes", "1x262144", "--json",
        ])
        .arg(&json)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with("softmax "))
        .collect();
    assert_eq!(rows.len(), 1, "{stdout}");
    assert!(rows[0].contains("1x262144"), "{stdout}");
    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let row = &report["rows"][0];
    assert_eq!(report["rows"].as_array().unwrap().len(), 1);
    assert!(row["reps"]["cpu"].as_u64().unwrap() >= 3, "{row}");
    assert!(row["spread"]["cpu"].as_f64().unwrap() >= 0.0, "{row}");
    // The CPU side only.
    let (code, err) = xent(&[
        "bench",
        "--ops",
        "logsumexp,kl",
        "--shapes",
        "3x5",
        "--device",
        "cpu",
        "--json",
        path_str(&json),
    ]);
    assert_eq!(code, 0, "{err}");
    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let ops: Vec<&str> = report["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            assert!(
                r["gpu_ms"].is_null() && r["cpu_ms"].as_f64().is_some(),
                "{r}"
            );
            r["op"].as_str().unwrap()
        })
        .collect();
    assert_eq!(ops, ["logsumexp", "kl"]);
    for (args, what) in [
        (["bench", "--ops", "softmax,nope"], "unknown op"),
        (["bench", "--shapes", "0x4"], "empty shape"),
        (["bench", "--shapes", "3by4"], "malformed shape"),
    ] {
        let (code, err) = xent(&args);
        assert_eq!(code, 2, "{what}: {err}");
        assert_eq!(own_lines(&err).len(), 1, "{what}: {err}");
    }
}

#[test]
fn f16_files_stay_f16_and_row_shaped_results_are_written_in_f16() {
    let (rows, cols) = (5, 333);
    let (x, bits) = rounded(&normal(&mut rng(9), rows * cols, 4.0), DType::F16);
    let bytes: Vec<u8> = bits.iter().flat_map(|b| b.to_le_bytes()).collect();
    let input = tmp("x16.npy");
    std::fs::write(
        &input,
        npy_bytes("<f2", false, &[rows as u64, cols as u64], &bytes),
    )
    .unwrap();
    let targets = tmp("t16.npy");
    let t: Vec<i64> = (0..rows as i64).map(|r| r * 61 % cols as i64).collect();
    let t_bytes: Vec<u8> = t.iter().flat_map(|v| v.to_le_bytes()).collect();
    std::fs::write(&targets, npy_bytes("<i8", false, &[rows as u64], &t_bytes)).unwrap();
    let lp = reference::log_softmax(&x, cols, 1.0);
    for device in ["cpu", "auto"] {
        let out = tmp(&format!("p16-{device}.npy"));
        let args = [
            "softmax",
            "--input",
            path_str(&input),
            "--output",
            path_str(&out),
        ];
        let (code, err) = xent(&[&args[..], &["--device", device]].concat());
        assert_eq!(code, 0, "{err}");
        let y = xent::npy::read(&out).unwrap();
        assert_eq!((y.dtype, &y.shape[..]), (DType::F16, &[rows, cols][..]));
        let want: Vec<f64> = lp.iter().map(|v| v.exp()).collect();
        assert_half(
            &format!("{device} softmax"),
            &y.data,
            &want,
            DType::F16,
            0.0,
        );

        let (loss, grad) = (
            tmp(&format!("l16-{device}.npy")),
            tmp(&format!("g16-{device}.npy")),
        );
        let entropy = tmp(&format!("h16-{device}.npy"));
        let (code, err) = xent(&[
            "cross-entropy",
            "--logits",
            path_str(&input),
            "--target",
            path_str(&targets),
            "--output",
            path_str(&loss),
            "--grad-output",
            path_str(&grad),
            "--entropy-output",
            path_str(&entropy),
            "--reduction",
            "sum",
            "--device",
            device,
        ]);
        assert_eq!(code, 0, "{err}");
        let h = xent::npy::read(&entropy).unwrap();
        let want: Vec<f64> = lp
            .chunks(cols)
            .map(|row| -row.iter().map(|l| l.exp() * l).sum::<f64>())
            .collect();
        assert_close(&format!("{device} entropy"), &h.data, &want, 1e-5, 1e-6);
        let l = xent::npy::read(&loss).unwrap();
        let g = xent::npy::read(&grad).unwrap();
        assert_eq!((l.dtype, g.dtype), (DType::F32, DType::F16));
        let total: f64 = t
            .iter()
            .enumerate()
            .map(|(r, &y)| -lp[r * cols + y as usize])
            .sum();
        assert_close(&format!("{device} loss"), &l.data, &[total], 1e-5, 0.0);
        let want: Vec<f64> = (0..rows * cols)
            .map(|i| lp[i].exp() - f64::from(u8::from(t[i / cols] as usize == i % cols)))
            .collect();
        assert_half(
            &format!("{device} gradient"),
            &g.data,
            &want,
            DType::F16,
            1e-6,
        );

        // bce of f16 logits against themselves as f16 targets (x is not in [0, 1]: the
        // formula holds anyway): the gradient f16 too.
        let (loss, grad) = (
            tmp(&format!("lb16-{device}.npy")),
            tmp(&format!("gb16-{device}.npy")),
        );
        let (code, err) = xent(&[
            "bce",
            "--logits",
            path_str(&input),
            "--target",
            path_str(&input),
            "--output",
            path_str(&loss),
            "--grad-output",
            path_str(&grad),
            "--device",
            device,
        ]);
        assert_eq!(code, 0, "{err}");
        let g = xent::npy::read(&grad).unwrap();
        assert_eq!(g.dtype, DType::F16);
        let n = (rows * cols) as f64;
        let want: Vec<f64> = x
            .iter()
            .map(|&v| {
                let v = f64::from(v);
                (1.0 / (1.0 + (-v).exp()) - v) / n
            })
            .collect();
        assert_half(
            &format!("{device} bce gradient"),
            &g.data,
            &want,
            DType::F16,
            1e-7,
        );
    }
}

#[test]
fn cross_entropy_writes_the_z_loss_terms_and_entropies_per_row() {
    let (rows, cols) = (4, 9);
    let x = normal(&mut rng(11), rows * cols, 3.0);
    let input = tmp("xe.npy");
    xent::npy::write(&input, &[rows, cols], &x).unwrap();
    let targets = tmp("te.npy");
    let t_bytes: Vec<u8> = [0i64, 3, 8, -100]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    std::fs::write(&targets, npy_bytes("<i8", false, &[rows as u64], &t_bytes)).unwrap();
    let lp = reference::log_softmax(&x, cols, 1.0);
    let lse = reference::logsumexp(&x, cols, 1.0);
    let live = |r: usize, v: f64| if r == 3 { 0.0 } else { v };
    let want_z: Vec<f64> = (0..rows).map(|r| live(r, 0.01 * lse[r] * lse[r])).collect();
    let want_h: Vec<f64> = (0..rows)
        .map(|r| {
            live(
                r,
                -lp[r * cols..(r + 1) * cols]
                    .iter()
                    .map(|l| l.exp() * l)
                    .sum::<f64>(),
            )
        })
        .collect();
    for device in ["cpu", "auto"] {
        let [loss, z, h] = ["l", "z", "h"].map(|n| tmp(&format!("{n}e-{device}.npy")));
        let (code, err) = xent(&[
            "cross-entropy",
            "--logits",
            path_str(&input),
            "--target",
            path_str(&targets),
            "--output",
            path_str(&loss),
            "--z-loss",
            "0.01",
            "--z-loss-output",
            path_str(&z),
            "--entropy-output",
            path_str(&h),
            "--device",
            device,
        ]);
        assert_eq!(code, 0, "{err}");
        let (z, h) = (xent::npy::read(&z).unwrap(), xent::npy::read(&h).unwrap());
        assert_eq!((&z.shape[..], &h.shape[..]), (&[rows][..], &[rows][..]));
        assert_close(&format!("{device} z-loss"), &z.data, &want_z, 1e-5, 1e-7);
        assert_close(&format!("{device} entropy"), &h.data, &want_h, 1e-5, 1e-6);
    }
    // Soft targets have no z-loss: an error, and no file written.
    let q = tmp("qe.npy");
    xent::npy::write(&q, &[rows, cols], &vec![1.0 / cols as f32; rows * cols]).unwrap();
    let z = tmp("ze-soft.npy");
    let (code, err) = xent(&[
        "cross-entropy",
        "--logits",
        path_str(&input),
        "--target",
        path_str(&q),
        "--output",
        path_str(&tmp("le-soft.npy")),
        "--z-loss-output",
        path_str(&z),
    ]);
    assert_ne!(code, 0);
    assert_eq!(own_lines(&err).len(), 1, "{err}");
    assert!(!z.exists());
}

#[test]
fn linear_cross_entropy_command() {
    // Hidden states [2, 3, 5] (six rows), weight [7, 5], bias, one ignored target.
    let (lead, hs, v) = ([2usize, 3], 5, 7);
    let n = lead[0] * lead[1];
    let h = normal(&mut rng(21), n * hs, 1.0);
    let w = normal(&mut rng(22), v * hs, 0.5);
    let b = normal(&mut rng(23), v, 0.5);
    let t = [0i64, 6, -100, 3, 3, 1];
    let (hp, wp, bp, tp) = (
        tmp("lin-h.npy"),
        tmp("lin-w.npy"),
        tmp("lin-b.npy"),
        tmp("lin-t.npy"),
    );
    xent::npy::write(&hp, &[lead[0], lead[1], hs], &h).unwrap();
    xent::npy::write(&wp, &[v, hs], &w).unwrap();
    xent::npy::write(&bp, &[v], &b).unwrap();
    write_i64(&tp, &lead, &t);
    // The float64 logits, loss and ∂L/∂b (the column sums of the logits' gradient).
    let x: Vec<f64> = (0..n * v)
        .map(|i| {
            let (r, c) = (i / v, i % v);
            f64::from(b[c])
                + (0..hs)
                    .map(|k| f64::from(h[r * hs + k]) * f64::from(w[c * hs + k]))
                    .sum::<f64>()
        })
        .collect();
    let opts = xent::CrossEntropyOptions::default().with_label_smoothing(0.1);
    let (losses, den, g) = reference::cross_entropy(&x, v, &t, None, &opts);
    let want_loss = losses.iter().sum::<f64>() / den;
    let want_db: Vec<f64> = (0..v)
        .map(|c| (0..n).map(|r| g[r * v + c]).sum::<f64>() / den)
        .collect();
    let files = [
        tmp("lin-l.npy"),
        tmp("lin-gh.npy"),
        tmp("lin-gw.npy"),
        tmp("lin-gb.npy"),
    ];
    for device in ["cpu", "auto"] {
        let (code, err) = xent(&[
            "linear-cross-entropy",
            "--input",
            path_str(&hp),
            "--weight",
            path_str(&wp),
            "--bias",
            path_str(&bp),
            "--target",
            path_str(&tp),
            "--label-smoothing",
            "0.1",
            "--chunk-rows",
            "4",
            "--output",
            path_str(&files[0]),
            "--grad-input",
            path_str(&files[1]),
            "--grad-weight",
            path_str(&files[2]),
            "--grad-bias",
            path_str(&files[3]),
            "--device",
            device,
        ]);
        assert_eq!(code, 0, "{err}");
        let read = |p: &Path| xent::npy::read(p).unwrap();
        let l = read(&files[0]);
        assert_eq!(l.shape, Vec::<usize>::new());
        assert_close("cli linear loss", &l.data, &[want_loss], 1e-5, 1e-6);
        assert_eq!(read(&files[1]).shape, vec![2, 3, 5]);
        assert_eq!(read(&files[2]).shape, vec![7, 5]);
        let db = read(&files[3]);
        assert_eq!(db.shape, vec![7]);
        assert_close("cli linear ∂L/∂b", &db.data, &want_db, 1e-4, 1e-6);
    }
    // f16 hidden states and weight stay f16, and so do their gradients (∂L/∂b stays f32).
    let (h16, w16) = (tmp("lin-h16.npy"), tmp("lin-w16.npy"));
    xent::npy::write_all(&[
        (
            h16.as_path(),
            &[lead[0], lead[1], hs][..],
            &h[..],
            DType::F16,
        ),
        (w16.as_path(), &[v, hs][..], &w[..], DType::F16),
    ])
    .unwrap();
    for device in ["cpu", "auto"] {
        let (code, err) = xent(&[
            "linear-cross-entropy",
            "--input",
            path_str(&h16),
            "--weight",
            path_str(&w16),
            "--target",
            path_str(&tp),
            "--output",
            path_str(&files[0]),
            "--grad-input",
            path_str(&files[1]),
            "--grad-weight",
            path_str(&files[2]),
            "--grad-bias",
            path_str(&files[3]),
            "--device",
            device,
        ]);
        assert_eq!(code, 0, "{err}");
        let types: Vec<DType> = files
            .iter()
            .map(|f| xent::npy::read(f).unwrap().dtype)
            .collect();
        assert_eq!(
            types,
            [DType::F32, DType::F16, DType::F16, DType::F32],
            "{device}"
        );
    }
    // Float targets, a weight of the wrong width, chunks of 0 rows: one line, exit 1 or 2, no file.
    let floats = tmp("lin-tf.npy");
    xent::npy::write(&floats, &lead, &[0.0; 6]).unwrap();
    let out = tmp("lin-never.npy");
    let bad: [&[&str]; 3] = [
        &["--target", path_str(&floats), "--weight", path_str(&wp)],
        &["--target", path_str(&tp), "--weight", path_str(&hp)],
        &[
            "--target",
            path_str(&tp),
            "--weight",
            path_str(&wp),
            "--chunk-rows",
            "0",
        ],
    ];
    for extra in bad {
        let mut args = vec![
            "linear-cross-entropy",
            "--input",
            path_str(&hp),
            "--output",
            path_str(&out),
        ];
        args.extend_from_slice(extra);
        let (code, err) = xent(&args);
        assert!(code == 1 || code == 2, "{extra:?}: exit {code}");
        assert_eq!(own_lines(&err).len(), 1, "{extra:?}: {err}");
        assert!(!out.exists(), "{extra:?} wrote its output");
    }
}
