//! The reading half of a connection: newline-delimited frames from a byte stream, with a hard cap
//! on the line length.
//!
//! [`LineReader`] never holds more than the cap (plus the stream's read buffer): a peer that sends
//! an endless line is refused once the cap is passed, not after the whole line has arrived. It is
//! cancel-safe, so a read can be raced against a shutdown signal without losing a partial line.
//! It never parses what a line says (that is [`crate::protocol`]'s) and never writes.

use std::io;

use futures::io::{AsyncBufReadExt, AsyncRead, BufReader};

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
    reader: BufReader<R>,
    max: usize,
    /// The line read so far; kept here rather than in the future so that cancelling a read loses
    /// nothing.
    partial: Vec<u8>,
}

impl<R: AsyncRead + Unpin> LineReader<R> {
    pub fn new(reader: R, max: usize) -> Self {
        LineReader {
            reader: BufReader::new(reader),
            max,
            partial: Vec::new(),
        }
    }

    /// The next line without its terminator; `Ok(None)` at a clean end of stream.
    pub async fn next_line(&mut self) -> Result<Option<Vec<u8>>, ReadError> {
        loop {
            let buf = self.reader.fill_buf().await?;
            if buf.is_empty() {
                return if self.partial.is_empty() {
                    Ok(None)
                } else {
                    self.partial.clear();
                    Err(ReadError::Truncated)
                };
            }
            let (chunk, complete) = match buf.iter().position(|&b| b == b'\n') {
                Some(end) => (&buf[..end], true),
                None => (buf, false),
            };
            // The cap counts the line without "\r\n", so allow one extra byte for a '\r' (which
            // may arrive in one read and its '\n' in the next); checked again once complete.
            if self.partial.len() + chunk.len() > self.max + 1 {
                self.partial.clear();
                return Err(ReadError::TooLong { max: self.max });
            }
            self.partial.extend_from_slice(chunk);
            let used = chunk.len() + usize::from(complete);
            self.reader.consume_unpin(used);
            if complete {
                let mut line = std::mem::take(&mut self.partial);
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                if line.len() > self.max {
                    return Err(ReadError::TooLong { max: self.max });
                }
                return Ok(Some(line));
            }
        }
    }

    /// Reads and throws away whatever arrives, until end of stream or `limit` bytes. Used before
    /// closing a connection whose peer may still be sending, so that the close is not turned into
    /// a reset that destroys the error message written just before.
    pub async fn discard(&mut self, limit: usize) -> io::Result<()> {
        let mut discarded = 0;
        while discarded < limit {
            let n = {
                let buf = self.reader.fill_buf().await?;
                if buf.is_empty() {
                    return Ok(());
                }
                buf.len()
            };
            self.reader.consume_unpin(n);
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
            reader.partial.capacity() <= 16 * 1024,
            "buffered past the cap"
        );
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
