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
