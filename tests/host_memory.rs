//! A readback the host cannot hold is an `Err`, not an abort. The check runs in a child
//! process (this test binary again, one test) whose address space is capped just above what
//! it uses once the tensor and its staging copy exist, so the result's `Vec` cannot fit.

mod common;

use std::process::Command;

use xent::{Error, Tensor};

/// Set in the child process.
const CHILD: &str = "XENT_HOST_MEMORY_CHILD";

/// f32 values in the tensor read back: 256 MiB.
const LEN: usize = 64 << 20;

/// The process's virtual size in bytes, from /proc.
fn vm_size() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmSize:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmSize");
    kb * 1024
}

#[test]
fn readback_beyond_host_memory_is_an_error() {
    if std::env::var_os(CHILD).is_some() {
        return in_child();
    }
    if common::gpu().is_none() {
        return;
    }
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "readback_beyond_host_memory_is_an_error",
            "--nocapture",
        ])
        .args(["--test-threads", "1"])
        .env(CHILD, "1")
        .output()
        .unwrap();
    let log =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the child failed ({}):\n{log}",
        out.status
    );
    assert!(log.contains("host memory error returned"), "{log}");
}

/// Caps the address space at `bytes` (the soft limit, which may be raised again).
fn cap_address_space(bytes: u64) {
    let limit = libc::rlimit {
        rlim_cur: bytes,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: setrlimit with a valid pointer to an initialised struct.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_AS, &limit) }, 0);
}

fn in_child() {
    let gpu = common::gpu().expect("an adapter");
    let x = Tensor::from_slice(&gpu, &vec![0.5f32; LEN], LEN >> 10, 1 << 10).unwrap();
    gpu.wait().unwrap();
    let bytes = (LEN * 4) as u64;
    let used = vm_size();
    // Room for half the result: the host allocation fails, before any GPU work.
    cap_address_space(used + bytes / 2);
    match x.to_vec() {
        Err(Error::HostMemory { bytes: b, .. }) => assert_eq!(b, bytes),
        other => panic!(
            "expected Error::HostMemory, got {:?}",
            other.map(|v| v.len())
        ),
    }
    // Room for the result and half of it again: where the process once aborted (a full-size
    // staging copy, then the result). The staging now goes in 64 MiB chunks, so the read may
    // succeed; where the driver's own allocations do not fit, it is an error, never an abort.
    cap_address_space(used + bytes * 3 / 2);
    match x.to_vec() {
        Ok(v) => assert!(v.len() == LEN && v.iter().all(|&a| a == 0.5)),
        Err(e @ (Error::HostMemory { .. } | Error::Wgpu { .. })) => eprintln!("{e}"),
        Err(e) => panic!("expected an out-of-memory error, got {e}"),
    }
    eprintln!("host memory error returned");
}
