//! Request bodies without a `Content-Length` (chunked, HTTP/2): PHP-FPM needs a length, so
//! the body is gathered first, in memory up to a small limit and then in an anonymous
//! temporary file, up to `max_body`, as nginx does with `client_body_buffer_size`.

use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame};
use http_body_util::{BodyExt, Either, Full, StreamBody};
use tokio::io::{AsyncSeekExt, AsyncWriteExt};
use tokio_util::io::ReaderStream;

use crate::error::GatewayError;

/// Bodies up to this size stay in memory.
pub const MEMORY_LIMIT: usize = 256 * 1024;

/// A file-backed body streamed back out in chunks.
type FileBody = StreamBody<
    futures_util::stream::Map<
        ReaderStream<tokio::fs::File>,
        fn(std::io::Result<Bytes>) -> Result<Frame<Bytes>, std::io::Error>,
    >,
>;

/// A spooled body, ready to send with its length.
pub type SpooledBody = Either<Full<Bytes>, FileBody>;

fn to_frame(chunk: std::io::Result<Bytes>) -> Result<Frame<Bytes>, std::io::Error> {
    chunk.map(Frame::data)
}

/// Reads `body` to its end; returns it with its length. Over `max_body` bytes is a 413;
/// a client that breaks off is a 400.
pub async fn spool<B>(body: B, max_body: u64) -> Result<(SpooledBody, u64), GatewayError>
where
    B: Body<Data = Bytes>,
    B::Error: std::fmt::Display,
{
    let mut body = std::pin::pin!(body);
    let mut memory = BytesMut::new();
    let mut file: Option<tokio::fs::File> = None;
    let mut total: u64 = 0;
    while let Some(frame) = body.frame().await {
        let frame =
            frame.map_err(|e| GatewayError::bad_request(format!("reading request body: {e}")))?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        total += data.len() as u64;
        if total > max_body {
            return Err(GatewayError::payload_too_large(max_body));
        }
        match file.as_mut() {
            Some(file) => file.write_all(&data).await.map_err(spool_error)?,
            None if memory.len() + data.len() <= MEMORY_LIMIT => memory.extend_from_slice(&data),
            None => {
                let std_file = tempfile::tempfile().map_err(spool_error)?;
                let mut spill = tokio::fs::File::from_std(std_file);
                spill.write_all(&memory).await.map_err(spool_error)?;
                spill.write_all(&data).await.map_err(spool_error)?;
                memory = BytesMut::new();
                file = Some(spill);
            }
        }
    }
    let body = match file {
        None => Either::Left(Full::new(memory.freeze())),
        Some(mut file) => {
            file.flush().await.map_err(spool_error)?;
            file.rewind().await.map_err(spool_error)?;
            let stream = futures_util::StreamExt::map(
                ReaderStream::with_capacity(file, 64 * 1024),
                to_frame as fn(_) -> _,
            );
            Either::Right(StreamBody::new(stream))
        }
    };
    Ok((body, total))
}

fn spool_error(err: std::io::Error) -> GatewayError {
    GatewayError::internal(format!("spooling request body to a temporary file: {err}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunked(chunks: Vec<Bytes>) -> impl Body<Data = Bytes, Error = std::io::Error> {
        StreamBody::new(futures_util::stream::iter(
            chunks
                .into_iter()
                .map(|c| Ok::<_, std::io::Error>(Frame::data(c))),
        ))
    }

    #[tokio::test]
    async fn small_bodies_stay_in_memory() {
        let (body, len) = spool(chunked(vec![Bytes::from("ab"), Bytes::from("cd")]), 100)
            .await
            .unwrap();
        assert_eq!(len, 4);
        assert!(matches!(body, Either::Left(_)));
        assert_eq!(&body.collect().await.unwrap().to_bytes()[..], b"abcd");
    }

    #[tokio::test]
    async fn large_bodies_spill_to_a_file_and_come_back_whole() {
        let chunk = Bytes::from(vec![7u8; 100_000]);
        let (body, len) = spool(chunked(vec![chunk.clone(); 5]), 10_000_000)
            .await
            .unwrap();
        assert_eq!(len, 500_000);
        assert!(matches!(body, Either::Right(_)));
        let back = body.collect().await.unwrap().to_bytes();
        assert_eq!(back.len(), 500_000);
        assert!(back.iter().all(|&b| b == 7));
    }

    #[tokio::test]
    async fn over_the_limit_is_a_413() {
        let err = spool(chunked(vec![Bytes::from(vec![0u8; 2000])]), 1000)
            .await
            .unwrap_err();
        assert_eq!(err.status(), 413);
    }
}
