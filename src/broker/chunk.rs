//! The broadcast chunk under construction: room and presence lines appended once, for everyone
//! online, and sealed into one immutable, shared buffer that every client's send queue refers to
//! ([`crate::outbox::Outbox::push_shared`]) — each line held once however many receive it.
//!
//! Not everyone gets all of a chunk: a sender does not receive its own room lines, and a session
//! that logged in while the chunk was built gets only what follows its own `joined` (its
//! `welcome` already listed everyone before). The chunk remembers only these exceptions, per
//! session; everyone else gets the whole chunk as one range.
//!
//! It also remembers when it must be sent (the earliest deadline of its lines). It never decides
//! those deadlines, never knows who is online and never touches a send queue: the broker does.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::Arc;
use std::time::Instant;

use super::SessionId;

/// What one session must not receive of the chunk.
#[derive(Debug, Default)]
struct Exception {
    /// It receives nothing before this offset (it logged in during the chunk).
    start: usize,
    /// Its own room lines, in order, adjacent ones merged.
    skips: Vec<Range<usize>>,
}

/// Lines waiting to be sealed and handed out.
#[derive(Debug, Default)]
pub(super) struct Chunk {
    bytes: Vec<u8>,
    exceptions: HashMap<SessionId, Exception>,
    /// When the chunk must be sealed: the earliest deadline of its lines.
    due: Option<Instant>,
}

impl Chunk {
    /// Appends a line for everyone, to be sent by `due`.
    pub fn append(&mut self, line: &[u8], due: Instant) {
        self.bytes.extend_from_slice(line);
        self.due = Some(self.due.map_or(due, |d| d.min(due)));
    }

    /// Appends a line for everyone but `sender`.
    pub fn append_from(&mut self, sender: SessionId, line: &[u8], due: Instant) {
        let start = self.bytes.len();
        self.append(line, due);
        let skips = &mut self.exceptions.entry(sender).or_default().skips;
        match skips.last_mut() {
            Some(last) if last.end == start => last.end = self.bytes.len(),
            _ => skips.push(start..self.bytes.len()),
        }
    }

    /// `id` receives only what is appended from now on.
    pub fn starts_here(&mut self, id: SessionId) {
        let start = self.bytes.len();
        let exception = self.exceptions.entry(id).or_default();
        exception.start = start;
        exception.skips.clear();
    }

    /// `id` is gone: nothing to remember about it.
    pub fn forget(&mut self, id: SessionId) {
        self.exceptions.remove(&id);
    }

    /// When the chunk must be sealed; `None` while it is empty.
    pub fn due(&self) -> Option<Instant> {
        self.due
    }

    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Freezes what was appended into a shared buffer and starts a new chunk; `None` if nothing
    /// was appended. The builder's buffer is kept for the next chunk.
    pub fn seal(&mut self) -> Option<Sealed> {
        self.due.take()?;
        let bytes: Arc<[u8]> = Arc::from(&self.bytes[..]);
        self.bytes.clear();
        Some(Sealed {
            bytes,
            exceptions: std::mem::take(&mut self.exceptions),
        })
    }
}

/// A chunk ready to be handed out.
pub(super) struct Sealed {
    pub bytes: Arc<[u8]>,
    exceptions: HashMap<SessionId, Exception>,
}

impl Sealed {
    /// The ranges `id` receives, in order, into `out` (cleared first); possibly none.
    pub fn ranges_for(&self, id: SessionId, out: &mut Vec<Range<usize>>) {
        out.clear();
        let Some(exception) = self.exceptions.get(&id) else {
            out.push(0..self.bytes.len());
            return;
        };
        let mut from = exception.start;
        for skip in &exception.skips {
            if skip.start > from {
                out.push(from..skip.start);
            }
            from = from.max(skip.end);
        }
        if from < self.bytes.len() {
            out.push(from..self.bytes.len());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn received(sealed: &Sealed, id: SessionId) -> String {
        let mut ranges = Vec::new();
        sealed.ranges_for(id, &mut ranges);
        ranges
            .into_iter()
            .map(|r| std::str::from_utf8(&sealed.bytes[r]).unwrap())
            .collect()
    }

    #[test]
    fn each_session_gets_the_chunk_but_its_own_lines_and_what_came_before_its_login() {
        let now = Instant::now();
        let mut chunk = Chunk::default();
        assert!(chunk.seal().is_none());
        chunk.append_from(1, b"a1\n", now);
        chunk.append_from(1, b"a2\n", now);
        chunk.append_from(2, b"b1\n", now);
        chunk.append(b"joined c\n", now);
        chunk.starts_here(3);
        chunk.append_from(1, b"a3\n", now);
        chunk.append_from(3, b"c1\n", now);
        chunk.append_from(4, b"d1\n", now);
        chunk.forget(4);
        let sealed = chunk.seal().unwrap();
        assert_eq!(received(&sealed, 1), "b1\njoined c\nc1\nd1\n");
        assert_eq!(received(&sealed, 2), "a1\na2\njoined c\na3\nc1\nd1\n");
        assert_eq!(received(&sealed, 3), "a3\nd1\n");
        assert_eq!(received(&sealed, 4), "a1\na2\nb1\njoined c\na3\nc1\nd1\n");
        assert_eq!(received(&sealed, 9), received(&sealed, 4));
        // The next chunk starts empty, with no exceptions left over.
        assert!(chunk.due().is_none() && chunk.len() == 0);
        chunk.append(b"x\n", now);
        assert_eq!(received(&chunk.seal().unwrap(), 3), "x\n");
    }

    #[test]
    fn a_chunk_is_due_at_its_earliest_deadline() {
        let now = Instant::now();
        let later = now + std::time::Duration::from_millis(20);
        let mut chunk = Chunk::default();
        chunk.append(b"joined\n", later);
        assert_eq!(chunk.due(), Some(later));
        chunk.append_from(1, b"hi\n", now);
        assert_eq!(chunk.due(), Some(now));
        chunk.append(b"left\n", later);
        assert_eq!(chunk.due(), Some(now));
    }
}
