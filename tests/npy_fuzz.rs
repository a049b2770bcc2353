//! Property-based fuzzing of the `.npy` reader: random bytes, and valid files truncated,
//! corrupted or given hostile headers, never panic, and whatever is accepted has as many
//! values as its shape says. (The reader checks a header's claims against the file's size
//! before allocating, so a hostile header cannot make it allocate more than the file holds.)

mod common;

use common::npy_bytes;
use proptest::prelude::*;

/// Cases per property: 2000 in the test suite, `XENT_FUZZ_CASES` for a longer run.
fn cases() -> u32 {
    std::env::var("XENT_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000)
}

fn check(bytes: &[u8]) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fuzz.npy");
    std::fs::write(&path, bytes).unwrap();
    if let Ok((shape, values)) = xent::npy::read_values(&path) {
        let n: usize = shape.iter().product();
        let len = match values {
            xent::npy::Values::Float(v, _) => v.len(),
            xent::npy::Values::Int(v) => v.len(),
        };
        assert_eq!(len, n, "shape {shape:?}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    #[test]
    fn random_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        check(&bytes);
    }

    #[test]
    fn random_bytes_after_the_magic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let mut b = b"\x93NUMPY".to_vec();
        b.extend(bytes);
        check(&b);
    }

    #[test]
    fn hostile_headers(
        descr in prop_oneof![
            Just("<f4".to_string()), Just("<f8".to_string()), Just("<f2".to_string()),
            Just("<i4".to_string()), Just("<i8".to_string()), Just(">f4".to_string()),
            Just("|u1".to_string()), "[<>|][a-z][0-9]{1,2}",
        ],
        dims in proptest::collection::vec(0u64..u64::MAX, 0..4),
        data in proptest::collection::vec(any::<u8>(), 0..256),
    ) {
        check(&npy_bytes(&descr, false, &dims, &data));
    }

    #[test]
    fn corrupted_valid_files(
        rows in 1usize..20,
        cols in 1usize..20,
        flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..8),
        cut in any::<usize>(),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("valid.npy");
        let data: Vec<f32> = (0..rows * cols).map(|i| i as f32).collect();
        xent::npy::write(&path, &[rows, cols], &data).unwrap();
        let mut b = std::fs::read(&path).unwrap();
        for (at, v) in flips {
            let i = at % b.len();
            b[i] ^= v;
        }
        b.truncate(cut % (b.len() + 1));
        check(&b);
    }
}
