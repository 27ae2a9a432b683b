//! A provided-buffer ring (`IORING_REGISTER_PBUF_RING`): buffers the kernel picks from when a
//! multishot receive completes, so no connection owns a read buffer while it waits.

use std::io;
use std::sync::atomic::{AtomicU16, Ordering};

use io_uring::types::BufRingEntry;
use io_uring::IoUring;

/// The ring of buffer descriptors (shared with the kernel) and the buffers themselves.
pub(super) struct BufRing {
    ring: *mut BufRingEntry,
    ring_bytes: usize,
    mask: u16,
    /// Our tail: descriptors before it are the kernel's to use.
    tail: u16,
    bufs: Box<[u8]>,
    size: usize,
}

impl BufRing {
    /// Registers `count` (a power of two) buffers of `size` bytes as group `bgid`. The buffer
    /// memory is touched once here, so it is a fixed cost of the shard, not of its connections.
    pub(super) fn new(ring: &IoUring, count: u16, size: usize, bgid: u16) -> io::Result<Self> {
        assert!(count.is_power_of_two());
        let ring_bytes = count as usize * std::mem::size_of::<BufRingEntry>();
        // SAFETY: an anonymous private mapping; checked for failure below.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                ring_bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let mut br = BufRing {
            ring: ptr.cast(),
            ring_bytes,
            mask: count - 1,
            tail: 0,
            bufs: vec![1u8; count as usize * size].into_boxed_slice(),
            size,
        };
        // SAFETY: the mapping lives until `drop`, which runs after the ring that uses it is
        // gone (the shell drops its ring first).
        unsafe {
            ring.submitter()
                .register_buf_ring_with_flags(ptr as u64, count, bgid, 0)?;
        }
        for bid in 0..count {
            br.recycle(bid);
        }
        br.commit();
        Ok(br)
    }

    /// The first `len` bytes of buffer `bid`, which a completion just handed to us.
    pub(super) fn get_mut(&mut self, bid: u16, len: usize) -> &mut [u8] {
        let at = bid as usize * self.size;
        let len = len.min(self.size);
        &mut self.bufs[at..at + len]
    }

    /// Gives buffer `bid` back (visible to the kernel after [`commit`](Self::commit)).
    pub(super) fn recycle(&mut self, bid: u16) {
        let addr = self.bufs.as_ptr() as u64 + (bid as usize * self.size) as u64;
        // SAFETY: the index is masked into the mapping; the kernel reads only descriptors
        // before the published tail, and this one is past it until `commit`.
        unsafe {
            let e = &mut *self.ring.add((self.tail & self.mask) as usize);
            e.set_addr(addr);
            e.set_len(self.size as u32);
            e.set_bid(bid);
        }
        self.tail = self.tail.wrapping_add(1);
    }

    /// Publishes recycled buffers to the kernel.
    pub(super) fn commit(&mut self) {
        // SAFETY: the tail field lives inside the mapping (it overlays the first descriptor's
        // reserved field), and the kernel reads it with acquire semantics.
        unsafe {
            let tail = BufRingEntry::tail(self.ring) as *const AtomicU16;
            (*tail).store(self.tail, Ordering::Release);
        }
    }
}

impl Drop for BufRing {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping made in `new`; the ring using it is gone.
        unsafe {
            libc::munmap(self.ring.cast(), self.ring_bytes);
        }
    }
}
