//! Giving the heap's free memory back to the operating system after a storm: a background task
//! that, once a second, looks at the process's resident memory and, when it has grown by
//! [`RELEASE_STEP`] since it last looked low while the allocator holds at least that much free,
//! asks the allocator to return its free pages (glibc's `malloc_trim`).
//!
//! Why: a login storm sends each newcomer a `welcome` listing everyone (a megabyte at 10,000
//! online) and everyone else batches of `joined` lines, and a burst leaves each receiver owed
//! kilobytes. Those buffers are freed once written, but glibc keeps what is freed in its arenas
//! for reuse, and releases on its own only the free memory at the very top of a heap: the holes
//! left under the long-lived connections stay resident. After a 2,000-client storm that was 16 MiB
//! of free memory resident beside 8 MiB in use. Go's scavenger and tcmalloc's background release
//! do the same for their allocators; the alternative, another allocator (jemalloc, mimalloc), is
//! a C dependency for one effect.
//!
//! The trigger is the resident size, not the allocator's count of free bytes: pages given back
//! and then reused and freed again within a second leave that count unchanged, yet are resident
//! again. A release costs 2–15 ms on the heap of 10,000 clients; it happens at most once a second,
//! and only while memory grows.
//!
//! It never frees anything itself and changes no allocation: it only reads the allocator's
//! statistics and the process's resident size, and tells the allocator to hand back pages it holds
//! free. Off glibc on Linux it does nothing.

use std::time::Duration;

/// How often memory is looked at. Reading the allocator's statistics walks its free lists
/// (microseconds) and the resident size is one read of `/proc/self/statm`: an idle server pays
/// that once a second.
pub const SCAVENGE_INTERVAL: Duration = Duration::from_secs(1);

/// Resident memory may grow by this much (with as much held free) before free pages are given
/// back: 1 MiB is 0.1 KiB per client at 10,000 clients, and a busy server's ordinary churn still
/// triggers at most one release a second.
pub const RELEASE_STEP: usize = 1024 * 1024;

/// Decides when to give free memory back.
#[derive(Debug, Default)]
pub struct Scavenger {
    /// The resident size right after the last release, or the lowest seen since.
    low: usize,
}

impl Scavenger {
    /// Given the resident size and the allocator's free bytes now, whether to release the free
    /// pages; remembers what it saw.
    pub fn should_release(&mut self, resident: usize, free: usize) -> bool {
        if resident >= self.low.saturating_add(RELEASE_STEP) && free >= RELEASE_STEP {
            true
        } else {
            self.low = self.low.min(resident);
            false
        }
    }

    /// Remembers the resident size right after a release.
    pub fn released(&mut self, resident_after: usize) {
        self.low = resident_after;
    }
}

/// Looks at memory every [`SCAVENGE_INTERVAL`] and gives free pages back when it has grown;
/// returns only off glibc (the server drops it at shutdown). The look and the release run on
/// the blocking pool: both walk the allocator's free lists under its locks (a release takes
/// milliseconds after a storm), which must not hold up a thread that serves connections.
pub async fn run() {
    let mut scavenger = Scavenger::default();
    loop {
        crate::runtime::sleep(SCAVENGE_INTERVAL).await;
        let looked =
            crate::runtime::spawn_blocking(move || scavenge(&mut scavenger).then_some(scavenger))
                .await;
        match looked {
            Some(looked) => scavenger = looked,
            None => return, // Not glibc on Linux: nothing to do.
        }
    }
}

/// One look at memory, and a release if it has grown; false when the allocator cannot say.
fn scavenge(scavenger: &mut Scavenger) -> bool {
    let (Some(resident), Some(free)) = (heap::resident_bytes(), heap::free_bytes()) else {
        return false;
    };
    if scavenger.should_release(resident, free) {
        heap::release();
        scavenger.released(heap::resident_bytes().unwrap_or(resident));
    }
    true
}

// glibc's mallinfo2 and malloc_trim have no safe wrapper (rustix and nix cover system calls, not
// the C allocator's extensions), so these two calls are the crate's only `unsafe`.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
mod heap {
    /// Bytes the allocator holds free in its arenas (not counting memory mapped for big blocks,
    /// which goes back to the system as soon as it is freed).
    pub fn free_bytes() -> Option<usize> {
        // SAFETY: mallinfo2 only reads the allocator's statistics (under its own locks) and
        // returns them by value.
        let info = unsafe { libc::mallinfo2() };
        Some(info.fordblks)
    }

    /// The process's resident memory (the second field of `/proc/self/statm`, in pages).
    pub fn resident_bytes() -> Option<usize> {
        let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
        let pages: usize = statm.split_whitespace().nth(1)?.parse().ok()?;
        Some(pages * rustix::param::page_size())
    }

    /// Returns every whole free page of every arena to the system.
    pub fn release() {
        // SAFETY: malloc_trim takes the allocator's locks itself and only advises the kernel that
        // free pages are unused; no live allocation moves.
        unsafe {
            libc::malloc_trim(0);
        }
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
mod heap {
    pub fn free_bytes() -> Option<usize> {
        None
    }

    pub fn resident_bytes() -> Option<usize> {
        None
    }

    pub fn release() {}
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: usize = 1024 * 1024;

    #[test]
    fn free_memory_is_released_once_resident_memory_has_grown_by_a_step() {
        let mut scavenger = Scavenger::default();
        assert!(!scavenger.should_release(RELEASE_STEP - 1, 10 * MIB));
        assert!(scavenger.should_release(RELEASE_STEP, 10 * MIB));
        scavenger.released(RELEASE_STEP / 2);
        // Not again until resident memory grows by another step from there.
        assert!(!scavenger.should_release(RELEASE_STEP, 10 * MIB));
        assert!(scavenger.should_release(RELEASE_STEP / 2 + RELEASE_STEP, 10 * MIB));
    }

    #[test]
    fn growth_counts_from_the_lowest_point_since_the_last_release() {
        let mut scavenger = Scavenger::default();
        scavenger.released(10 * MIB);
        // Clients left (memory shrank), then a storm grew it again.
        assert!(!scavenger.should_release(4 * MIB, 10 * MIB));
        assert!(scavenger.should_release(5 * MIB, 10 * MIB));
    }

    #[test]
    fn growth_in_use_with_little_free_releases_nothing() {
        let mut scavenger = Scavenger::default();
        // More clients, and the allocator holds almost nothing free: no release to make.
        assert!(!scavenger.should_release(50 * MIB, RELEASE_STEP - 1));
    }

    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn the_allocator_reports_free_memory_and_releases_it() {
        // Scattered frees: every other block of a few megabytes, so the free memory sits in
        // holes under live blocks, where only a trim reaches it.
        let mut blocks: Vec<Vec<u8>> = (0..2048).map(|_| vec![1u8; 4096]).collect();
        for block in blocks.iter_mut().step_by(2) {
            *block = Vec::new();
        }
        let free = heap::free_bytes().expect("glibc reports its free bytes");
        assert!(free >= 1024 * 4096, "the holes are free: {free}");
        let resident = heap::resident_bytes().expect("Linux reports the resident size");
        assert!(
            resident >= 1024 * 4096,
            "the live blocks are resident: {resident}"
        );
        heap::release();
        assert!(blocks
            .iter()
            .skip(1)
            .step_by(2)
            .all(|b| b.iter().all(|&x| x == 1)));
    }
}
