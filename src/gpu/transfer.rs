//! Host ↔ device copies through a pool of mappable staging buffers, reused across calls and
//! threads: a transfer larger than one staging buffer goes in chunks, so no full-size second
//! copy is ever made, and pages that have been touched once stay touched (on unified-memory
//! devices such as lavapipe a fresh buffer pays a page fault per page on first use).

use std::sync::Mutex;

use crate::gpu::context::Gpu;
use crate::{Error, Result};

/// Bytes of the largest pooled staging buffer: transfers above it go in chunks of it. 64 MiB
/// keeps a chunk's copy long against the fixed cost of a map round trip.
pub(crate) const STAGING_CHUNK: u64 = 64 << 20;

/// Staging buffers kept per direction once returned (the largest ones are kept).
const KEPT: usize = 4;

/// Idle staging buffers, by direction.
#[derive(Default)]
pub(crate) struct StagingPool {
    read: Mutex<Vec<wgpu::Buffer>>,
    write: Mutex<Vec<wgpu::Buffer>>,
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
        let pool = self.staging_pool(dir);
        let mut idle = pool.lock().unwrap_or_else(|p| p.into_inner());
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
        let mut idle = self
            .staging_pool(dir)
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        idle.push(buffer);
        idle.sort_by_key(|b| std::cmp::Reverse(b.size()));
        idle.truncate(KEPT);
    }

    fn staging_pool(&self, dir: Direction) -> &Mutex<Vec<wgpu::Buffer>> {
        match dir {
            Direction::Read => &self.inner.staging.read,
            Direction::Write => &self.inner.staging.write,
        }
    }

    /// Maps `len` bytes of `staging` for `mode`, waiting for the queue.
    fn map(&self, staging: &wgpu::Buffer, len: u64, mode: wgpu::MapMode) -> Result<()> {
        let (tx, rx) = futures_intrusive::channel::shared::oneshot_channel();
        staging.slice(..len).map_async(mode, move |r| {
            // The receiver outlives this callback; a failed send cannot happen.
            let _ = tx.send(r);
        });
        self.wait()?;
        match pollster::block_on(rx.receive()) {
            Some(Ok(())) => Ok(()),
            Some(Err(e)) => Err(Error::Readback(e.to_string())),
            None => Err(Error::Readback("the map callback never ran".into())),
        }
    }

    /// Copies `bytes` bytes from byte `offset` of `src` to the host, chunk by chunk through
    /// one pooled staging buffer; `sink` receives each chunk's bytes in order.
    pub(crate) fn read_chunks(
        &self,
        src: &wgpu::Buffer,
        offset: u64,
        bytes: u64,
        mut sink: impl FnMut(&[u8]),
    ) -> Result<()> {
        let chunk = bytes.min(STAGING_CHUNK);
        let staging = self.scoped("readback", || Ok(self.take_staging(Direction::Read, chunk)))?;
        let mut done = 0;
        let result = (|| {
            while done < bytes {
                let len = (bytes - done).min(chunk);
                self.scoped("readback", || {
                    let mut encoder = self.encoder();
                    encoder.copy_buffer_to_buffer(src, offset + done, &staging, 0, len);
                    self.submit_unscoped(encoder);
                    Ok(())
                })?;
                self.map(&staging, len, wgpu::MapMode::Read)?;
                {
                    let view = staging
                        .slice(..len)
                        .get_mapped_range()
                        .map_err(|e| Error::Readback(e.to_string()))?;
                    sink(&view);
                }
                staging.unmap();
                done += len;
            }
            Ok(())
        })();
        self.count(|c| &c.bytes_read_back, done);
        self.give_back(Direction::Read, staging);
        result
    }

    /// Copies `data` into `dst` from byte `offset`, chunk by chunk through one pooled staging
    /// buffer; the copies are submitted (in order, before any later submission).
    pub(crate) fn write_chunks(&self, dst: &wgpu::Buffer, offset: u64, data: &[u8]) -> Result<()> {
        let bytes = data.len() as u64;
        let chunk = bytes.min(STAGING_CHUNK);
        let staging = self.scoped("upload", || Ok(self.take_staging(Direction::Write, chunk)))?;
        let result = (|| {
            for (k, piece) in data.chunks(chunk as usize).enumerate() {
                let len = piece.len() as u64;
                // Mapping waits until the queue is done with the previous chunk's copy.
                self.map(&staging, len, wgpu::MapMode::Write)?;
                staging
                    .slice(..len)
                    .get_mapped_range_mut()
                    .map_err(|e| Error::Readback(e.to_string()))?
                    .copy_from_slice(piece);
                staging.unmap();
                self.scoped("upload", || {
                    let mut encoder = self.encoder();
                    let at = offset + k as u64 * chunk;
                    encoder.copy_buffer_to_buffer(&staging, 0, dst, at, len);
                    self.submit_unscoped(encoder);
                    Ok(())
                })?;
            }
            Ok(())
        })();
        self.give_back(Direction::Write, staging);
        result
    }
}
