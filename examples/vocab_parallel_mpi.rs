//! Cross-entropy over a vocabulary split across processes: each MPI rank holds one shard of
//! the logits' columns on its own device, the shards exchange only their row statistics
//! (`xent::SHARD_STATS` f32 per row) through one MPI all-reduce with xent's merge as the
//! operation, and rank 0 gathers the gradient and checks it, and the loss, against the whole
//! vocabulary on one device.
//!
//! ```text
//! cargo build --release --features mpi --example vocab_parallel_mpi
//! mpirun -np 3 target/release/examples/vocab_parallel_mpi
//! ```
//!
//! Each rank opens the default adapter (`Gpu::new`), or the CPU path where there is none
//! (outside CI: with `CI=true` a missing adapter is an error). Exit status 1 when a result
//! differs from the single-device one by more than 1e-6 relative.

use std::os::raw::{c_int, c_void};
use std::time::Instant;

use mpi::collective::UnsafeUserOperation;
use mpi::datatype::{MutView, UserDatatype, View};
use mpi::traits::*;
use xent::{
    Backend, Cpu, CrossEntropyOptions, Gpu, Grad, SHARD_STATS, Shard, ShardBatch, Target,
    merge_shard_stats,
};

/// The MPI operation: `inout = in ⊕ inout`, rows of `SHARD_STATS` f32 (one element of the
/// row datatype each). MPI calls it with the lower ranks' rows in `invec` for an operation
/// that is not commutative, so the merge runs in rank order: the same bits every run.
unsafe extern "C" fn merge_rows(
    invec: *mut c_void,
    inoutvec: *mut c_void,
    len: *mut c_int,
    _datatype: *mut mpi::ffi::MPI_Datatype,
) {
    // SAFETY: MPI passes `len` elements of the row datatype, SHARD_STATS f32 each, in both.
    let (earlier, later) = unsafe {
        let n = *len as usize * SHARD_STATS;
        (
            std::slice::from_raw_parts(invec as *const f32, n),
            std::slice::from_raw_parts_mut(inoutvec as *mut f32, n),
        )
    };
    // The merge is symmetric to the last bit: `later ⊕ earlier` is `earlier ⊕ later`.
    merge_shard_stats(later, earlier).expect("rows of equal length");
}

/// A deterministic pseudo-random stream (the same on every rank: each builds the whole batch
/// and keeps its columns).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> f32 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 40) as f32 / (1u64 << 24) as f32
    }
}

fn main() {
    let universe = mpi::initialize().expect("MPI initialises");
    let world = universe.world();
    let (rank, size) = (world.rank() as usize, world.size() as usize);

    // GPT-2's vocabulary, 257 rows, every option that needs a statistic.
    let (rows, classes) = (257usize, 50_257usize);
    let mut rng = Lcg(2026);
    let x: Vec<f32> = (0..rows * classes)
        .map(|_| 8.0 * rng.next() - 4.0)
        .collect();
    let class_weight: Vec<f32> = (0..classes).map(|_| 0.5 + rng.next()).collect();
    let targets: Vec<i64> = (0..rows)
        .map(|r| {
            if r % 9 == 4 {
                -100
            } else {
                (rng.next() * classes as f32) as i64 % classes as i64
            }
        })
        .collect();
    let opts = CrossEntropyOptions {
        z_loss: 1e-4,
        entropy_output: true,
        ..CrossEntropyOptions::default().with_label_smoothing(0.1)
    };

    // Uneven shards: rank r holds a share proportional to r + 1.
    let parts: usize = (1..=size).sum();
    let mut widths: Vec<usize> = (0..size).map(|r| classes * (r + 1) / parts).collect();
    widths[size - 1] = classes - widths[..size - 1].iter().sum::<usize>();
    let shard: Shard = Shard::split(classes, &widths).expect("shards")[rank];
    let columns: Vec<f32> = x
        .chunks(classes)
        .flat_map(|row| &row[shard.first..shard.first + shard.width])
        .copied()
        .collect();
    let batch = ShardBatch {
        shard,
        targets: Target::I64(&targets),
        weight: Some(&class_weight[shard.first..shard.first + shard.width]),
    };

    let device: Box<dyn Backend> = match Gpu::new() {
        Ok(gpu) => {
            println!(
                "rank {rank}: {} columns {}..{} on {}",
                shard.width,
                shard.first,
                shard.first + shard.width,
                gpu.describe()
            );
            Box::new(gpu)
        }
        Err(e) if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!("rank {rank}: CI=true but no GPU adapter: {e}")
        }
        Err(e) => {
            println!(
                "rank {rank}: no GPU ({e}); {} columns on the CPU",
                shard.width
            );
            Box::new(Cpu)
        }
    };

    // Pass 1, the exchange, pass 2.
    let stats = device.shard_stats(&columns, batch, &opts).expect("pass 1");
    let mut merged = vec![0.0f32; stats.len()];
    let row_type = UserDatatype::contiguous(SHARD_STATS as i32, &f32::equivalent_datatype());
    // SAFETY: `merge_rows` reads and writes whole rows of the row datatype, as MPI gives them.
    let op = unsafe { UnsafeUserOperation::associative(merge_rows) };
    world.barrier();
    let start = Instant::now();
    {
        // SAFETY: both buffers hold `rows` rows of SHARD_STATS f32, the row datatype's layout.
        let send = unsafe { View::with_count_and_datatype(&stats[..], rows as i32, &row_type) };
        let mut recv =
            unsafe { MutView::with_count_and_datatype(&mut merged[..], rows as i32, &row_type) };
        world.all_reduce_into(&send, &mut recv, &op);
    }
    let exchange = start.elapsed();
    let out = device
        .shard_backward(&columns, batch, &merged, &opts, Grad::New)
        .expect("pass 2");
    let grad = out.grad.expect("a gradient");

    // Rank 0 gathers every shard's gradient columns and checks against one device.
    let root = world.process_at_rank(0);
    if rank != 0 {
        root.gather_varcount_into(&grad[..]);
        return;
    }
    let counts: Vec<i32> = widths.iter().map(|w| (w * rows) as i32).collect();
    let displs: Vec<i32> = counts
        .iter()
        .scan(0, |at, &c| {
            let d = *at;
            *at += c;
            Some(d)
        })
        .collect();
    let mut all = vec![0.0f32; rows * classes];
    {
        let mut partition = mpi::datatype::PartitionMut::new(&mut all[..], counts, &displs[..]);
        root.gather_varcount_into_root(&grad[..], &mut partition);
    }
    let mut gathered = vec![0.0f32; rows * classes];
    let shards = Shard::split(classes, &widths).expect("shards");
    for (s, &d) in shards.iter().zip(&displs) {
        let part = &all[d as usize..d as usize + rows * s.width];
        for (row, src) in gathered.chunks_mut(classes).zip(part.chunks(s.width)) {
            row[s.first..s.first + s.width].copy_from_slice(src);
        }
    }
    let whole = device
        .cross_entropy(
            &x,
            classes,
            Target::I64(&targets),
            Some(&class_weight),
            &opts,
            Grad::New,
        )
        .expect("the whole vocabulary on one device");
    let whole_grad = whole.grad.expect("a gradient");
    let loss_err = ((out.loss[0] - whole.loss[0]) / whole.loss[0]).abs();
    // Each gradient row against its largest element.
    let grad_err = gathered
        .chunks(classes)
        .zip(whole_grad.chunks(classes))
        .map(|(a, b)| {
            let top = b
                .iter()
                .fold(0.0f32, |m, v| m.max(v.abs()))
                .max(f32::MIN_POSITIVE);
            a.iter()
                .zip(b)
                .fold(0.0f32, |m, (a, b)| m.max((a - b).abs() / top))
        })
        .fold(0.0f32, f32::max);
    let entropy_err = out
        .entropy
        .iter()
        .flatten()
        .zip(whole.entropy.iter().flatten())
        .fold(0.0f32, |m, (a, b)| {
            m.max(((a - b) / b.abs().max(1e-6)).abs())
        });
    println!(
        "{size} ranks, {rows} rows × {classes} classes in shards of {widths:?}: \
         {} bytes per row exchanged ({} in all), all-reduce {:.3} ms",
        SHARD_STATS * 4,
        SHARD_STATS * 4 * rows,
        exchange.as_secs_f64() * 1e3
    );
    println!(
        "loss sharded {:.7} vs one device {:.7} (relative {loss_err:.1e}); \
         gradient within {grad_err:.1e} of each row's largest; entropy within {entropy_err:.1e}",
        out.loss[0], whole.loss[0]
    );
    if !(loss_err <= 1e-6 && grad_err <= 1e-6 && entropy_err <= 1e-6) {
        eprintln!("vocab_parallel_mpi: the sharded result differs from one device's");
        std::process::exit(1);
    }
    println!("ok");
}
