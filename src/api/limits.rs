//! What a connection may hold on either port: a bounded number of connections (a permit each,
//! held for the connection's life), and the timers and HTTP/2 settings of `[server]`.

use crate::config::ServerConfig;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// How long a keep-alive ping may go unanswered before the connection is closed.
pub const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);

/// The header list an HTTP/2 client may send (h1 heads are bounded by hyper's read buffer).
pub const MAX_HEADER_LIST_BYTES: u32 = 64 << 10;

/// `[server]`'s connection settings, read once.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub header_read_timeout: Duration,
    pub max_connections: usize,
    pub http2_max_concurrent_streams: u32,
    /// `None`: no pings.
    pub keepalive_interval: Option<Duration>,
}

impl Limits {
    pub fn of(server: &ServerConfig) -> Limits {
        Limits {
            header_read_timeout: Duration::from_millis(server.header_read_timeout_ms),
            max_connections: server.max_connections,
            http2_max_concurrent_streams: server.http2_max_concurrent_streams,
            keepalive_interval: (server.keepalive_interval_ms > 0)
                .then(|| Duration::from_millis(server.keepalive_interval_ms)),
        }
    }
}

/// An accepted stream and its connection permit, given back when the stream is dropped.
pub struct Counted {
    stream: TcpStream,
    _permit: OwnedSemaphorePermit,
}

/// Accepts the next connection once fewer than the limit are open: the caller waits for a
/// permit before accepting, so connections beyond it queue in the kernel's backlog rather
/// than in our memory.
pub async fn accept(listener: &TcpListener, open: &Arc<Semaphore>) -> io::Result<Counted> {
    let permit = open
        .clone()
        .acquire_owned()
        .await
        .map_err(|_| io::Error::other("the connection limit was closed"))?;
    let (stream, _) = listener.accept().await?;
    let _ = stream.set_nodelay(true);
    Ok(Counted {
        stream,
        _permit: permit,
    })
}

impl AsyncRead for Counted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Counted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

impl tonic::transport::server::Connected for Counted {
    type ConnectInfo = tonic::transport::server::TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.stream.connect_info()
    }
}

/// The bytes of request bodies the HTTP port holds at once. A body takes its share before it
/// is read (its declared length, or frame by frame when none is declared) and gives it back
/// when its answer is made; one that does not fit is refused at once, unread.
pub struct BodyBudget {
    /// Permits are KiB: a permit count is a `u32`, a body may not be.
    kib: Arc<Semaphore>,
    limit: usize,
}

/// A body's share of the budget: its permits, merged into one as it grows.
#[derive(Default)]
pub struct BodyShare(Option<OwnedSemaphorePermit>);

impl BodyBudget {
    pub fn new(limit: usize) -> BodyBudget {
        BodyBudget {
            kib: Arc::new(Semaphore::new(kib(limit as u64) as usize)),
            limit,
        }
    }

    pub fn limit(&self) -> usize {
        self.limit
    }

    /// An empty share, to grow as the body arrives.
    pub fn share(&self) -> BodyShare {
        BodyShare::default()
    }

    /// Grows `share` to cover `bytes` in all; false when the budget has no room.
    pub fn cover(&self, share: &mut BodyShare, bytes: u64) -> bool {
        let held = share.0.as_ref().map_or(0, |p| p.num_permits() as u64);
        let wanted = kib(bytes);
        if wanted <= held {
            return true;
        }
        let more = u32::try_from(wanted - held).unwrap_or(u32::MAX);
        let Ok(permit) = self.kib.clone().try_acquire_many_owned(more) else {
            return false;
        };
        match &mut share.0 {
            Some(held) => held.merge(permit),
            None => share.0 = Some(permit),
        }
        true
    }
}

fn kib(bytes: u64) -> u64 {
    bytes.div_ceil(1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_grow_until_the_budget_is_held_and_return_when_dropped() {
        let budget = BodyBudget::new(10 << 10);
        let mut first = budget.share();
        // (bytes the share must cover, fits)
        let steps: &[(u64, bool)] = &[(1, true), (1024, true), (4 << 10, true), (6 << 10, true)];
        for &(bytes, fits) in steps {
            assert_eq!(budget.cover(&mut first, bytes), fits, "{bytes}");
        }
        let mut second = budget.share();
        assert!(budget.cover(&mut second, 4 << 10));
        assert!(!budget.cover(&mut second, (4 << 10) + 1), "past the budget");
        drop(first);
        assert!(budget.cover(&mut second, 9 << 10));
        assert!(!budget.cover(&mut budget.share(), 2 << 10));
    }
}
