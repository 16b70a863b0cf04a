//! The reading half of a connection: newline-delimited frames from a byte stream, with a hard cap
//! on the line length.
//!
//! [`LineReader`] never holds more than the cap plus one read: a peer that sends an endless line
//! is refused once the cap is passed, not after the whole line has arrived. It is cancel-safe, so
//! a read can be raced against a shutdown signal without losing a partial line. It reads into a
//! buffer on the stack and keeps on the heap only the bytes of a line not yet complete, so an
//! idle connection holds no read buffer at all. It never parses what a line says (that is
//! [`crate::protocol`]'s) and never writes.

use std::future::poll_fn;
use std::io;
use std::pin::Pin;

use futures::io::AsyncRead;

/// Bytes asked of the stream in one read. On the stack during the read only: an idle connection
/// keeps none of it.
pub const READ_CHUNK_BYTES: usize = 4096;

/// Why no complete line could be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The line passed `max` bytes before its newline. The stream is no longer framed: close it.
    #[error("line longer than {max} bytes")]
    TooLong { max: usize },
    /// The stream ended in the middle of a line.
    #[error("connection closed in the middle of a line")]
    Truncated,
    #[error("read failed: {0}")]
    Io(#[from] io::Error),
}

/// Reads `\n`-terminated lines (a `\r` before the newline is dropped) of at most `max` bytes.
pub struct LineReader<R> {
    reader: R,
    max: usize,
    /// Bytes read and not yet returned, from `start`: the start of the next line, and any lines
    /// after it that came in the same read. Kept here rather than in the future so that
    /// cancelling a read loses nothing; freed (no allocation) once everything is returned.
    pending: Vec<u8>,
    /// Where the bytes not yet returned begin in `pending`.
    start: usize,
    /// How much of `pending` is known to hold no newline.
    scanned: usize,
}

impl<R: AsyncRead + Unpin> LineReader<R> {
    pub fn new(reader: R, max: usize) -> Self {
        LineReader {
            reader,
            max,
            pending: Vec::new(),
            start: 0,
            scanned: 0,
        }
    }

    /// The next line without its terminator; `Ok(None)` at a clean end of stream.
    pub async fn next_line(&mut self) -> Result<Option<Vec<u8>>, ReadError> {
        loop {
            if let Some(at) = self.pending[self.scanned..]
                .iter()
                .position(|&b| b == b'\n')
            {
                let end = self.scanned + at;
                let mut line = self.pending[self.start..end].to_vec();
                self.start = end + 1;
                self.scanned = self.start;
                if self.start == self.pending.len() {
                    self.forget();
                }
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                if line.len() > self.max {
                    return Err(ReadError::TooLong { max: self.max });
                }
                return Ok(Some(line));
            }
            self.scanned = self.pending.len();
            // The cap counts the line without "\r\n", so allow one extra byte for a '\r' (which
            // may arrive in one read and its '\n' in the next); checked again once complete.
            if self.pending.len() - self.start > self.max + 1 {
                self.forget();
                return Err(ReadError::TooLong { max: self.max });
            }
            if self.start > 0 {
                // Only the start of a line is left: move it to the front before reading more.
                self.pending.drain(..self.start);
                self.scanned -= self.start;
                self.start = 0;
            }
            if self.read_more().await? == 0 {
                return if self.pending.is_empty() {
                    Ok(None)
                } else {
                    self.forget();
                    Err(ReadError::Truncated)
                };
            }
        }
    }

    /// Drops every byte read and not returned, and the buffer with them.
    fn forget(&mut self) {
        self.pending = Vec::new();
        self.start = 0;
        self.scanned = 0;
    }

    /// Reads once into a stack buffer and appends what came to `pending`; 0 at end of stream.
    async fn read_more(&mut self) -> io::Result<usize> {
        let reader = &mut self.reader;
        let pending = &mut self.pending;
        poll_fn(|cx| {
            let mut chunk = [0u8; READ_CHUNK_BYTES];
            match Pin::new(&mut *reader).poll_read(cx, &mut chunk) {
                std::task::Poll::Ready(Ok(n)) => {
                    pending.extend_from_slice(&chunk[..n]);
                    std::task::Poll::Ready(Ok(n))
                }
                other => other,
            }
        })
        .await
    }

    /// Reads and throws away whatever arrives, until end of stream or `limit` bytes. Used before
    /// closing a connection whose peer may still be sending, so that the close is not turned into
    /// a reset that destroys the error message written just before.
    pub async fn discard(&mut self, limit: usize) -> io::Result<()> {
        let mut discarded = self.pending.len() - self.start;
        self.forget();
        while discarded < limit {
            let n = self.read_more().await?;
            self.forget();
            if n == 0 {
                return Ok(());
            }
            discarded += n;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::executor::block_on;
    use futures::io::Cursor;

    fn lines(input: &[u8], max: usize) -> Vec<Result<Vec<u8>, String>> {
        block_on(async {
            let mut reader = LineReader::new(Cursor::new(input.to_vec()), max);
            let mut out = Vec::new();
            loop {
                match reader.next_line().await {
                    Ok(Some(line)) => out.push(Ok(line)),
                    Ok(None) => return out,
                    Err(e) => {
                        out.push(Err(e.to_string()));
                        if matches!(e, ReadError::TooLong { .. } | ReadError::Truncated) {
                            return out;
                        }
                    }
                }
            }
        })
    }

    #[test]
    fn splits_lines_and_strips_crlf() {
        assert_eq!(
            lines(b"a\nbc\r\n\n", 10),
            vec![Ok(b"a".to_vec()), Ok(b"bc".to_vec()), Ok(vec![])]
        );
    }

    #[test]
    fn a_line_of_exactly_the_cap_is_accepted() {
        let mut input = vec![b'x'; 8];
        input.extend_from_slice(b"\r\n");
        assert_eq!(lines(&input, 8), vec![Ok(vec![b'x'; 8])]);
    }

    #[test]
    fn a_longer_line_is_refused() {
        let mut input = vec![b'x'; 9];
        input.push(b'\n');
        assert_eq!(
            lines(&input, 8),
            vec![Err("line longer than 8 bytes".into())]
        );
    }

    #[test]
    fn an_endless_line_is_refused_without_reading_it_all() {
        let input = vec![b'x'; 1 << 20];
        let mut reader = LineReader::new(Cursor::new(input), 1024);
        let result = block_on(reader.next_line());
        assert!(matches!(result, Err(ReadError::TooLong { max: 1024 })));
        assert!(
            reader.pending.capacity() <= 16 * 1024,
            "buffered past the cap"
        );
    }

    #[test]
    fn a_reader_between_lines_holds_no_buffer() {
        let mut reader = LineReader::new(Cursor::new(b"one\ntwo\nthr".to_vec()), 100);
        assert_eq!(block_on(reader.next_line()).unwrap(), Some(b"one".to_vec()));
        assert!(reader.pending.capacity() > 0, "\"two\" is still waiting");
        assert_eq!(block_on(reader.next_line()).unwrap(), Some(b"two".to_vec()));
        assert!(block_on(reader.next_line()).is_err(), "cut off mid-line");
        assert_eq!(reader.pending.capacity(), 0);
        let mut reader = LineReader::new(Cursor::new(b"a\nb\n".to_vec()), 100);
        block_on(reader.next_line()).unwrap();
        block_on(reader.next_line()).unwrap();
        assert_eq!(reader.pending.capacity(), 0);
    }

    #[test]
    fn end_of_stream_mid_line_is_an_error() {
        assert_eq!(
            lines(b"ok\npartial", 100),
            vec![
                Ok(b"ok".to_vec()),
                Err("connection closed in the middle of a line".into())
            ]
        );
    }
}
