//! NumPy `.npy` input and output for the CLI: f32, f64 and f16 arrays in C order are read as
//! f32 (an f16 array's values, with its type noted), i32 and i64 arrays (class indices) as
//! i64; results are written as f32 or f16, atomically (a temporary file renamed on success).
//!
//! Nothing is allocated from a header's claims before they are checked against the file's
//! actual size, so a hostile header cannot make the reader allocate more than the file holds.

use std::fs::File;
use std::io::{BufReader, Read, Write};
use std::path::Path;

use npyz::{DType, NpyFile, Order, TypeChar, WriterBuilder};

use crate::{Error, Result};

/// A float array with its shape (row-major), its values as f32.
#[derive(Clone, Debug, PartialEq)]
pub struct Array {
    /// The dimensions; empty for a 0-d (scalar) array.
    pub shape: Vec<usize>,
    /// `shape.iter().product()` values, row-major.
    pub data: Vec<f32>,
    /// The file's element type: [`crate::DType::F16`] for float16 data (every value is one),
    /// else [`crate::DType::F32`] (float64 data rounded to it).
    pub dtype: crate::DType,
}

/// Largest header accepted: NumPy itself refuses headers over 10 000 bytes by default.
const MAX_HEADER: u64 = 1 << 16;

fn file_err(path: &Path, message: impl std::fmt::Display) -> Error {
    Error::File {
        path: path.display().to_string(),
        message: message.to_string(),
    }
}

/// The values of a `.npy` file: floating-point (as f32) or integer (as i64).
#[derive(Clone, Debug, PartialEq)]
pub enum Values {
    /// f32, f64 or f16 data, and which type it was (f16 or, for the other two, f32).
    Float(Vec<f32>, crate::DType),
    /// i32 or i64 data.
    Int(Vec<i64>),
}

/// Reads a `.npy` file of f32, f64 or f16 values into an f32 [`Array`]; integer data is an
/// error.
pub fn read(path: &Path) -> Result<Array> {
    match read_values(path)? {
        (shape, Values::Float(data, dtype)) => Ok(Array { shape, data, dtype }),
        (_, Values::Int(_)) => Err(file_err(
            path,
            "integer data where floats are expected (float32, float64 or float16)",
        )),
    }
}

/// Reads a `.npy` file of floats (f32, f64, f16) or integers (i32, i64): its shape and values.
pub fn read_values(path: &Path) -> Result<(Vec<usize>, Values)> {
    let file = File::open(path).map_err(|e| file_err(path, e))?;
    let size = file.metadata().map_err(|e| file_err(path, e))?.len();
    let mut reader = BufReader::new(file);
    // Magic (6 bytes), version (2), header length (2 bytes in v1, 4 in v2/v3).
    let mut prefix = [0u8; 12];
    reader
        .read_exact(&mut prefix[..10])
        .map_err(|_| file_err(path, "not a .npy file (too short)"))?;
    if &prefix[..6] != b"\x93NUMPY" {
        return Err(file_err(path, "not a .npy file (bad magic)"));
    }
    let (header_len, prefix_len) = match prefix[6] {
        1 => (u64::from(u16::from_le_bytes([prefix[8], prefix[9]])), 10),
        2 | 3 => {
            reader
                .read_exact(&mut prefix[10..12])
                .map_err(|_| file_err(path, "truncated .npy header"))?;
            (
                u64::from(u32::from_le_bytes([
                    prefix[8], prefix[9], prefix[10], prefix[11],
                ])),
                12,
            )
        }
        v => return Err(file_err(path, format!("unsupported .npy version {v}"))),
    };
    if header_len > MAX_HEADER || prefix_len + header_len > size {
        return Err(file_err(
            path,
            format!("header of {header_len} bytes does not fit a {size}-byte .npy file"),
        ));
    }
    let rest = reader;
    let npy =
        NpyFile::new(std::io::Cursor::new(prefix[..prefix_len as usize].to_vec()).chain(rest))
            .map_err(|e| file_err(path, format!("bad .npy header: {e}")))?;
    if npy.order() == Order::Fortran {
        return Err(file_err(
            path,
            "Fortran-order arrays are not supported (save in C order)",
        ));
    }
    let shape: Vec<usize> = npy.shape().iter().map(|&d| d as usize).collect();
    let DType::Plain(ts) = npy.dtype() else {
        return Err(file_err(path, "structured dtypes are not supported"));
    };
    let item = ts.num_bytes().unwrap_or(0) as u64;
    let count = npy
        .shape()
        .iter()
        .try_fold(1u64, |n, &d| n.checked_mul(d))
        .ok_or_else(|| file_err(path, "shape overflows"))?;
    let needed = count.saturating_mul(item);
    if needed > size - prefix_len - header_len {
        return Err(file_err(
            path,
            format!(
                "truncated: shape {shape:?} of {} needs {needed} data bytes, the file has {}",
                ts,
                size - prefix_len - header_len
            ),
        ));
    }
    let floats = |v: Vec<f32>| Values::Float(v, crate::DType::F32);
    let values = match (ts.type_char(), item) {
        (TypeChar::Float, 4) => npy.into_vec::<f32>().map(floats),
        (TypeChar::Float, 8) => npy
            .into_vec::<f64>()
            .map(|v| floats(v.into_iter().map(|x| x as f32).collect())),
        (TypeChar::Float, 2) => npy
            .into_vec::<half::f16>()
            .map(|v| Values::Float(v.into_iter().map(f32::from).collect(), crate::DType::F16)),
        (TypeChar::Int, 4) => npy
            .into_vec::<i32>()
            .map(|v| Values::Int(v.into_iter().map(i64::from).collect())),
        (TypeChar::Int, 8) => npy.into_vec::<i64>().map(Values::Int),
        _ => {
            return Err(file_err(
                path,
                format!(
                    "dtype {ts} is not supported (expected float32, float64, float16, int32 or int64)"
                ),
            ));
        }
    }
    .map_err(|e| file_err(path, format!("bad data: {e}")))?;
    Ok((shape, values))
}

/// Writes `data` with `shape` as an f32 `.npy` file. The file appears only when complete
/// (see [`write_atomically`]).
pub fn write(path: &Path, shape: &[usize], data: &[f32]) -> Result<()> {
    write_all(&[(path, shape, data, crate::DType::F32)])
}

/// Writes `values` to `file` as a `.npy` array of `shape` and element type `T`.
fn write_npy<T: npyz::AutoSerialize>(
    file: &mut File,
    shape: &[usize],
    values: impl Iterator<Item = T>,
) -> std::io::Result<()> {
    let shape: Vec<u64> = shape.iter().map(|&d| d as u64).collect();
    let mut w = npyz::WriteOptions::new()
        .default_dtype()
        .shape(&shape)
        .writer(std::io::BufWriter::new(file))
        .begin_nd()?;
    w.extend(values)?;
    w.finish()
}

/// Writes several `.npy` files (path, shape, data, and the type to write: f32, or f16 for
/// values that are f16 already), all of them or none: each is written whole to a temporary
/// file beside it, and only when every one is complete are they renamed into place (should a
/// rename still fail, those already renamed are removed). bf16 has no NumPy type: an error.
pub fn write_all(files: &[(&Path, &[usize], &[f32], crate::DType)]) -> Result<()> {
    let staged = files
        .iter()
        .map(|&(path, shape, data, dtype)| match dtype {
            crate::DType::F32 => stage(path, |file| write_npy(file, shape, data.iter().copied())),
            crate::DType::F16 => stage(path, |file| {
                write_npy(file, shape, data.iter().map(|&v| half::f16::from_f32(v)))
            }),
            crate::DType::Bf16 => Err(file_err(path, "NumPy has no bfloat16 type")),
        })
        .collect::<Result<Vec<_>>>()?;
    let mut placed: Vec<&Path> = Vec::new();
    for (tmp, &(path, ..)) in staged.into_iter().zip(files) {
        if let Err(e) = tmp.persist(path) {
            for done in placed {
                // Best effort: the error below is what the caller needs to see.
                let _ = std::fs::remove_file(done);
            }
            return Err(file_err(path, e.error));
        }
        placed.push(path);
    }
    Ok(())
}

/// Writes `bytes` to `path`, atomically (see [`write_atomically`]).
pub fn write_bytes(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomically(path, |file| file.write_all(bytes))
}

/// Creates `path` only when `fill` succeeds: `fill` writes a temporary file in the same
/// directory, which is then renamed; on any error nothing is left behind. On Unix the file
/// is created with mode 0644.
pub fn write_atomically(
    path: &Path,
    fill: impl FnOnce(&mut File) -> std::io::Result<()>,
) -> Result<()> {
    stage(path, fill)?
        .persist(path)
        .map_err(|e| file_err(path, e.error))?;
    Ok(())
}

/// A complete temporary file in `path`'s directory, filled by `fill`, to be renamed to
/// `path`; removed if dropped instead.
fn stage(
    path: &Path,
    fill: impl FnOnce(&mut File) -> std::io::Result<()>,
) -> Result<tempfile::NamedTempFile> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let mut builder = tempfile::Builder::new();
    // A temporary file is private (0600); the result gets the usual 0644.
    #[cfg(unix)]
    builder.permissions(std::os::unix::fs::PermissionsExt::from_mode(0o644));
    let mut tmp = builder.tempfile_in(dir).map_err(|e| file_err(path, e))?;
    fill(tmp.as_file_mut()).map_err(|e| file_err(path, e))?;
    tmp.as_file_mut().flush().map_err(|e| file_err(path, e))?;
    Ok(tmp)
}
