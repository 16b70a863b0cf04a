//! Giving the heap's free memory back to the operating system after a storm: a background task
//! that, once a second, looks at how much memory the allocator holds free and, when that has grown
//! by [`RELEASE_STEP`] since it last looked low, asks the allocator to return it (glibc's
//! `malloc_trim`).
//!
//! Why: a login storm sends each newcomer a `welcome` listing everyone (a megabyte at 10,000
//! online) and everyone else batches of `joined` lines, and a burst leaves each receiver owed
//! kilobytes. Those buffers are freed once written, but glibc keeps what is freed in its arenas
//! for reuse, and releases on its own only the free memory at the very top of a heap: the holes
//! left under the long-lived connections stay resident. After a 2,000-client storm that was 16 MiB
//! of free memory resident beside 8 MiB in use. This is what Go's scavenger and tcmalloc's
//! background release do for their allocators; the alternative, another allocator (jemalloc,
//! mimalloc), is a C dependency for one effect.
//!
//! It never frees anything itself and changes no allocation: it only reads the allocator's
//! statistics and tells it to hand back pages it holds free. Off glibc it does nothing.

use std::time::Duration;

/// How often the free memory is looked at. Reading the allocator's statistics walks its free
/// lists (microseconds); an idle server pays that once a second.
pub const SCAVENGE_INTERVAL: Duration = Duration::from_secs(1);

/// Free memory may grow by this much before it is given back: small enough that a storm's debris
/// does not stay, large enough that a busy server's ordinary churn (freed and reused within the
/// second) does not make it trim every second. A trim costs about a millisecond per hundred
/// megabytes of heap.
pub const RELEASE_STEP: usize = 1024 * 1024;

/// Decides when free memory has grown enough to give back.
#[derive(Debug, Default)]
pub struct Scavenger {
    /// The allocator's free bytes after the last release, or the lowest seen since: what is
    /// presumed given back already (released pages still count as free in the allocator's view).
    low: usize,
}

impl Scavenger {
    /// Given the allocator's free bytes now, whether to release them; remembers what it saw.
    pub fn should_release(&mut self, free: usize) -> bool {
        if free >= self.low.saturating_add(RELEASE_STEP) {
            true
        } else {
            self.low = self.low.min(free);
            false
        }
    }

    /// Remembers the free bytes right after a release.
    pub fn released(&mut self, free_after: usize) {
        self.low = free_after;
    }
}

/// Looks at the heap every [`SCAVENGE_INTERVAL`] and gives free memory back when it has grown;
/// never returns (the server drops it at shutdown).
pub async fn run() {
    let mut scavenger = Scavenger::default();
    loop {
        crate::runtime::sleep(SCAVENGE_INTERVAL).await;
        let Some(free) = heap::free_bytes() else {
            return; // Not glibc: nothing to do.
        };
        if scavenger.should_release(free) {
            heap::release();
            scavenger.released(heap::free_bytes().unwrap_or(free));
        }
    }
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
mod heap {
    /// Bytes the allocator holds free in its arenas (not counting memory mapped for big blocks,
    /// which goes back to the system as soon as it is freed).
    pub fn free_bytes() -> Option<usize> {
        // SAFETY: mallinfo2 only reads the allocator's statistics (under its own locks) and
        // returns them by value.
        let info = unsafe { libc::mallinfo2() };
        Some(info.fordblks)
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

    pub fn release() {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_memory_is_released_once_it_has_grown_by_a_step() {
        let mut scavenger = Scavenger::default();
        assert!(!scavenger.should_release(RELEASE_STEP - 1));
        assert!(scavenger.should_release(RELEASE_STEP));
        scavenger.released(RELEASE_STEP);
        // Released pages still count as free: not released again until more is freed.
        assert!(!scavenger.should_release(RELEASE_STEP));
        assert!(!scavenger.should_release(2 * RELEASE_STEP - 1));
        assert!(scavenger.should_release(2 * RELEASE_STEP));
    }

    #[test]
    fn growth_counts_from_the_lowest_point_since_the_last_release() {
        let mut scavenger = Scavenger::default();
        scavenger.released(10 * RELEASE_STEP);
        // The free memory is reused (and so resident again), then freed again.
        assert!(!scavenger.should_release(RELEASE_STEP));
        assert!(scavenger.should_release(2 * RELEASE_STEP));
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
        heap::release();
        assert!(blocks
            .iter()
            .skip(1)
            .step_by(2)
            .all(|b| b.iter().all(|&x| x == 1)));
    }
}
