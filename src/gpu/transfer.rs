//! Host ↔ device copies through a pool of mappable staging buffers, reused across calls and
//! threads: a transfer larger than one staging buffer goes in chunks, so no full-size second
//! copy is ever made, and pages that have been touched once stay touched (on unified-memory
//! devices such as lavapipe a fresh buffer pays a page fault per page on first use). Beside
//! it, a pool of idle device buffers for the tensors of the slice-in / `Vec`-out paths
//! ([`Tensor::pooled`](crate::gpu::tensor::Tensor)). Both are bounded, and both are emptied
//! by [`Gpu::release_pooled`], which an allocation that fails calls before its one retry.

use std::sync::Mutex;

use crate::gpu::context::Gpu;
use crate::{Error, Result};

/// Bytes of the largest pooled staging buffer: transfers above it go in chunks of it. 64 MiB
/// keeps a chunk's copy long against the fixed cost of a map round trip.
pub(crate) const STAGING_CHUNK: u64 = 64 << 20;

/// Staging buffers kept per direction once returned (the largest ones are kept).
const KEPT: usize = 4;

/// Idle device buffers kept (the most recently returned): enough for the full-size tensors of
/// one slice call (BCE with element weights has four: logits, targets, weights, gradient).
const KEPT_DEVICE: usize = 4;

/// Idle staging buffers, by direction, and idle device buffers.
#[derive(Default)]
pub(crate) struct StagingPool {
    read: Mutex<Vec<wgpu::Buffer>>,
    write: Mutex<Vec<wgpu::Buffer>>,
    device: Mutex<Vec<wgpu::Buffer>>,
}

/// Which way a staging buffer copies.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Direction {
    /// Device to host: `MAP_READ | COPY_DST`.
    Read,
    /// Host to device: `MAP_WRITE | COPY_SRC`.
    Write,
}

impl Gpu {
    /// A staging buffer of at least `bytes` bytes for `dir`, from the pool or new (sized to
    /// the next power of two, at least 256 bytes). Call inside [`Gpu::scoped`].
    fn take_staging(&self, dir: Direction, bytes: u64) -> wgpu::Buffer {
        let mut idle = lock(self.staging_pool(dir));
        if let Some(i) = idle.iter().position(|b| b.size() >= bytes) {
            return idle.swap_remove(i);
        }
        drop(idle);
        let size = bytes.next_power_of_two().max(256);
        let usage = match dir {
            Direction::Read => wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            Direction::Write => wgpu::BufferUsages::MAP_WRITE | wgpu::BufferUsages::COPY_SRC,
        };
        self.buffer("xent staging", size, usage)
    }

    /// Returns a staging buffer to the pool, which keeps the [`KEPT`] largest.
    fn give_back(&self, dir: Direction, buffer: wgpu::Buffer) {
        let mut idle = lock(self.staging_pool(dir));
        idle.push(buffer);
        idle.sort_by_key(|b| std::cmp::Reverse(b.size()));
        idle.truncate(KEPT);
    }

    /// An idle pooled device buffer of exactly `bytes` bytes, if there is one.
    pub(crate) fn take_pooled(&self, bytes: u64) -> Option<wgpu::Buffer> {
        let mut idle = lock(&self.inner.staging.device);
        let i = idle.iter().rposition(|b| b.size() == bytes)?;
        Some(idle.remove(i))
    }

    /// Returns a device buffer to the pool, which keeps the [`KEPT_DEVICE`] most recent.
    pub(crate) fn give_back_pooled(&self, buffer: wgpu::Buffer) {
        let mut idle = lock(&self.inner.staging.device);
        idle.push(buffer);
        if idle.len() > KEPT_DEVICE {
            idle.remove(0);
        }
    }

    /// Drops every idle pooled buffer — the staging buffers of transfers and the device
    /// buffers the slice-in / `Vec`-out calls reuse — and returns their bytes. Those calls
    /// keep up to four full-size tensors and eight staging buffers of up to 64 MiB between
    /// calls, so that the next call of the same shape allocates nothing; call this to hand
    /// that memory back (an allocation that fails for want of memory does so itself, then
    /// tries once more).
    ///
    /// ```no_run
    /// use xent::Backend;
    /// let gpu = xent::Gpu::new()?;
    /// let p = gpu.softmax(&[1.0, 2.0, 3.0], 3, &Default::default())?;
    /// println!("{p:?}; released {} bytes", gpu.release_pooled());
    /// # Ok::<(), xent::Error>(())
    /// ```
    pub fn release_pooled(&self) -> u64 {
        let pools = &self.inner.staging;
        [&pools.read, &pools.write, &pools.device]
            .into_iter()
            .map(|pool| lock(pool).drain(..).map(|b| b.size()).sum::<u64>())
            .sum()
    }

    /// Runs `create` (a buffer creation) in an error scope named `op`; if it fails and the
    /// pools held memory, releases them and tries once more.
    pub(crate) fn allocate(
        &self,
        op: &str,
        create: impl Fn() -> wgpu::Buffer,
    ) -> Result<wgpu::Buffer> {
        match self.scoped(op, || Ok(create())) {
            Err(_) if self.release_pooled() > 0 => self.scoped(op, || Ok(create())),
            result => result,
        }
    }

    fn staging_pool(&self, dir: Direction) -> &Mutex<Vec<wgpu::Buffer>> {
        match dir {
            Direction::Read => &self.inner.staging.read,
            Direction::Write => &self.inner.staging.write,
        }
    }

    /// Maps `len` bytes of `staging` for `mode` once submission `after` (the last one that
    /// uses it) is done; later submissions may still be running.
    fn map(
        &self,
        staging: &wgpu::Buffer,
        len: u64,
        dir: Direction,
        after: Option<wgpu::SubmissionIndex>,
    ) -> Result<()> {
        let (mode, error): (_, fn(String) -> Error) = match dir {
            Direction::Read => (wgpu::MapMode::Read, Error::Readback),
            Direction::Write => (wgpu::MapMode::Write, Error::Upload),
        };
        let (tx, rx) = futures_intrusive::channel::shared::oneshot_channel();
        staging.slice(..len).map_async(mode, move |r| {
            // The receiver outlives this callback; a failed send cannot happen.
            let _ = tx.send(r);
        });
        let wait = wgpu::PollType::Wait {
            submission_index: after,
            timeout: None,
        };
        self.inner
            .device
            .poll(wait)
            .map_err(|e| error(e.to_string()))?;
        match pollster::block_on(rx.receive()) {
            Some(Ok(())) => Ok(()),
            Some(Err(e)) => Err(error(e.to_string())),
            None => Err(error("the map callback never ran".into())),
        }
    }

    /// Submits a copy of `len` bytes from byte `from` of `src` to byte `to` of `dst`.
    fn copy(
        &self,
        op: &str,
        (src, from): (&wgpu::Buffer, u64),
        (dst, to): (&wgpu::Buffer, u64),
        len: u64,
    ) -> Result<wgpu::SubmissionIndex> {
        self.scoped(op, || {
            let mut encoder = self.encoder();
            encoder.copy_buffer_to_buffer(src, from, dst, to, len);
            Ok(self.submit_unscoped(encoder))
        })
    }

    /// Copies `bytes` bytes from byte `offset` of `src` to the host in chunks through two
    /// pooled staging buffers, the device copying the next chunk while the host takes the
    /// last; `sink` receives each chunk's bytes in order.
    pub(crate) fn read_chunks(
        &self,
        src: &wgpu::Buffer,
        offset: u64,
        bytes: u64,
        mut sink: impl FnMut(&[u8]),
    ) -> Result<()> {
        let chunk = bytes.min(STAGING_CHUNK);
        let chunks = bytes.div_ceil(chunk.max(1));
        let staging = self.take_stagings(Direction::Read, chunk, chunks)?;
        let len = |k: u64| (bytes - k * chunk).min(chunk);
        let copy = |k: u64| {
            let to = &staging[(k % 2) as usize];
            self.copy("readback", (src, offset + k * chunk), (to, 0), len(k))
        };
        let mut done = 0;
        let result = (|| {
            let mut pending = (chunks > 0).then(|| copy(0)).transpose()?;
            for k in 0..chunks {
                let next = (k + 1 < chunks).then(|| copy(k + 1)).transpose()?;
                let buffer = &staging[(k % 2) as usize];
                self.map(buffer, len(k), Direction::Read, pending.take())?;
                {
                    let view = buffer
                        .slice(..len(k))
                        .get_mapped_range()
                        .map_err(|e| Error::Readback(e.to_string()))?;
                    sink(&view);
                }
                buffer.unmap();
                done += len(k);
                pending = next;
            }
            Ok(())
        })();
        self.count(|c| &c.bytes_read_back, done);
        self.give_back_all(Direction::Read, staging);
        result
    }

    /// Copies `data` into `dst` from byte `offset` in chunks through two pooled staging
    /// buffers, the host filling one while the device copies from the other; the copies are
    /// submitted (in order, before any later submission).
    pub(crate) fn write_chunks(&self, dst: &wgpu::Buffer, offset: u64, data: &[u8]) -> Result<()> {
        let bytes = data.len() as u64;
        let chunk = bytes.min(STAGING_CHUNK);
        let chunks = bytes.div_ceil(chunk.max(1));
        let staging = self.take_stagings(Direction::Write, chunk, chunks)?;
        let result = (|| {
            // The copy out of each staging buffer, which its next mapping waits for.
            let mut last: [Option<wgpu::SubmissionIndex>; 2] = [None, None];
            for (k, piece) in data.chunks(chunk as usize).enumerate() {
                let len = piece.len() as u64;
                let buffer = &staging[k % 2];
                self.map(buffer, len, Direction::Write, last[k % 2].take())?;
                buffer
                    .slice(..len)
                    .get_mapped_range_mut()
                    .map_err(|e| Error::Upload(e.to_string()))?
                    .copy_from_slice(piece);
                buffer.unmap();
                let at = offset + k as u64 * chunk;
                last[k % 2] = Some(self.copy("upload", (buffer, 0), (dst, at), len)?);
            }
            Ok(())
        })();
        self.count(|c| &c.bytes_uploaded, bytes);
        self.give_back_all(Direction::Write, staging);
        result
    }

    /// One staging buffer of `chunk` bytes for `dir`, two when the transfer has several
    /// chunks (one is filled while the other is copied).
    fn take_stagings(&self, dir: Direction, chunk: u64, chunks: u64) -> Result<Vec<wgpu::Buffer>> {
        let op = match dir {
            Direction::Read => "readback",
            Direction::Write => "upload",
        };
        self.scoped(op, || {
            Ok((0..chunks.clamp(1, 2))
                .map(|_| self.take_staging(dir, chunk))
                .collect())
        })
    }

    fn give_back_all(&self, dir: Direction, staging: Vec<wgpu::Buffer>) {
        for buffer in staging {
            self.give_back(dir, buffer);
        }
    }
}

/// A pool's list, whatever a panicking holder left (a list of idle buffers stays valid).
fn lock(pool: &Mutex<Vec<wgpu::Buffer>>) -> std::sync::MutexGuard<'_, Vec<wgpu::Buffer>> {
    pool.lock().unwrap_or_else(|p| p.into_inner())
}
