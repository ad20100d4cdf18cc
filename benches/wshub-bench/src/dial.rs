//! Opening client connections: TCP connect from a chosen loopback source address, then the
//! WebSocket upgrade, timed together as one handshake.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use futures_util::StreamExt;
use http::Uri;
use tokio::net::{TcpSocket, TcpStream};
use tokio_websockets::{ClientBuilder, WebSocketStream};

use crate::histogram::Histogram;

/// One client connection after its upgrade.
pub(crate) type Socket = WebSocketStream<TcpStream>;

/// Opens client connections to one server URL, or spread round-robin over several (the
/// nodes of a cluster: connection `i` goes to URL `i % n`).
#[derive(Debug, Clone)]
pub(crate) struct Dialer {
    /// Each URL and the address it names.
    targets: Vec<(Uri, SocketAddr)>,
    /// How many 127.0.0.x source addresses to spread clients over; 1 lets the kernel choose.
    source_ips: u8,
    /// Limit for one TCP connect plus upgrade.
    handshake_timeout: Duration,
    /// The `Sec-WebSocket-Extensions` offer, if any.
    extensions: Option<http::HeaderValue>,
}

/// What happened while opening many connections.
#[derive(Debug)]
pub(crate) struct DialReport {
    /// Connections upgraded.
    pub(crate) connected: usize,
    /// Connections that failed or timed out.
    pub(crate) failed: usize,
    /// The first failure, for the report.
    pub(crate) first_error: Option<String>,
    /// Time of each successful handshake (TCP connect plus upgrade).
    pub(crate) handshakes: Histogram,
    /// Wall time from the first connect to the last handshake.
    pub(crate) elapsed: Duration,
}

impl Dialer {
    /// A dialer for `url` (`ws://IP:PORT/PATH`; loopback only, so no name resolution).
    pub(crate) fn new(url: &str, source_ips: u8, handshake_timeout: Duration) -> Result<Self> {
        Self::spread(&[url], source_ips, handshake_timeout)
    }

    /// A dialer spreading connections round-robin over `urls` (at least one).
    pub(crate) fn spread(
        urls: &[&str],
        source_ips: u8,
        handshake_timeout: Duration,
    ) -> Result<Self> {
        let mut targets = Vec::with_capacity(urls.len());
        for url in urls {
            let uri: Uri = url.parse().with_context(|| format!("bad URL {url}"))?;
            if uri.scheme_str() != Some("ws") {
                bail!("only ws:// URLs are supported, got {url}");
            }
            let host = uri.host().context("URL has no host")?;
            let port = uri.port_u16().unwrap_or(80);
            let server = (host, port)
                .to_socket_addrs()?
                .find(SocketAddr::is_ipv4)
                .with_context(|| format!("{host} has no IPv4 address"))?;
            targets.push((uri, server));
        }
        if targets.is_empty() {
            bail!("no URL to dial");
        }
        Ok(Self {
            targets,
            source_ips: source_ips.max(1),
            handshake_timeout,
            extensions: None,
        })
    }

    /// Offers these extensions in every handshake.
    pub(crate) fn with_extensions(mut self, offer: Option<&str>) -> Result<Self> {
        self.extensions = offer
            .map(http::HeaderValue::from_str)
            .transpose()
            .context("bad --extensions")?;
        Ok(self)
    }

    /// How many URLs connections are spread over.
    pub(crate) fn targets(&self) -> usize {
        self.targets.len()
    }

    /// Opens connection number `index` (which picks its source address) and returns it with
    /// the time its handshake took.
    pub(crate) async fn dial(&self, index: usize) -> Result<(Socket, Duration)> {
        let start = Instant::now();
        let (uri, server) = &self.targets[index % self.targets.len()];
        let handshake = async {
            let socket = TcpSocket::new_v4()?;
            if self.source_ips > 1 {
                // Each source address has its own ~28k ephemeral ports towards one server
                // port; binding before connect spreads clients over several of them.
                let host = 1 + (index % usize::from(self.source_ips)) as u8;
                let source = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 0, 0, host)), 0);
                socket
                    .bind(source)
                    .with_context(|| format!("binding {source}"))?;
            }
            let stream = socket.connect(*server).await?;
            stream.set_nodelay(true)?;
            let mut builder = ClientBuilder::from_uri(uri.clone());
            if let Some(offer) = &self.extensions {
                builder =
                    builder.add_header(http::header::SEC_WEBSOCKET_EXTENSIONS, offer.clone())?;
            }
            let (socket, _response) = builder.connect_on(stream).await?;
            anyhow::Ok(socket)
        };
        let socket = tokio::time::timeout(self.handshake_timeout, handshake)
            .await
            .context("handshake timed out")??;
        Ok((socket, start.elapsed()))
    }

    /// Opens `count` connections, at most `concurrency` handshakes at a time, starting none
    /// after `deadline`; hands each open one to `on_open` with its index.
    pub(crate) async fn dial_many(
        &self,
        count: usize,
        concurrency: usize,
        deadline: Instant,
        mut on_open: impl FnMut(usize, Socket),
    ) -> DialReport {
        let start = Instant::now();
        let handshakes = Histogram::new();
        let (mut connected, mut failed, mut first_error) = (0, 0, None);
        let mut results = futures_util::stream::iter(0..count)
            .take_while(|_| std::future::ready(Instant::now() < deadline))
            .map(|index| async move { (index, self.dial(index).await) })
            .buffer_unordered(concurrency.max(1));
        while let Some((index, result)) = results.next().await {
            match result {
                Ok((socket, took)) => {
                    handshakes.record(took);
                    connected += 1;
                    on_open(index, socket);
                }
                Err(error) => {
                    failed += 1;
                    first_error.get_or_insert_with(|| format!("{error:#}"));
                }
            }
        }
        DialReport {
            connected,
            failed,
            first_error,
            handshakes,
            elapsed: start.elapsed(),
        }
    }
}
