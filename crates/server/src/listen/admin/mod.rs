//! The admin HTTP listener (SPEC 12, `[listeners] admin`): metrics, health, the JSON API,
//! the web console and client autoconfiguration, one axum router (`routes`) served over
//! hyper by our own accept loop, so that it has the connection limits of every listener,
//! TLS with the server's certificate on any address but loopback, and a deadline for a
//! request's header (a client that opens connections and says nothing holds nothing).

mod api;
mod autoconfig;
mod console;
mod routes;
mod state;

pub use routes::router;
pub use state::{error, AdminState, ClientPorts, Operator};

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::watch;

use crate::listen::limits::{ConnectionLimiter, Refusal};
use crate::listen::{open_stream, Service};
use crate::net::tls::Tls;
use crate::support::metrics::SessionGauge;

/// One admin listener: the router and what its connections need.
pub struct AdminContext {
    pub router: axum::Router,
    pub state: Arc<AdminState>,
    pub limiter: Arc<ConnectionLimiter>,
    /// Set on addresses beyond loopback: HTTPS from the first byte.
    pub tls: Option<Tls>,
    /// How long a client may take to send a request's header.
    pub header_timeout: Duration,
}

impl Service for AdminContext {
    fn limiter(&self) -> &Arc<ConnectionLimiter> {
        &self.limiter
    }

    async fn serve(self: Arc<Self>, stream: TcpStream, peer: SocketAddr, mut shutdown: watch::Receiver<bool>) {
        let _gauge = SessionGauge::start(&self.state.metrics, "admin");
        let Some((stream, _)) =
            open_stream(stream, self.tls.is_some(), self.tls.as_ref(), self.state.store.as_ref()).await
        else {
            return;
        };
        // Each request learns the client's address (`/metrics` is open to loopback only).
        let router = self.router.clone().layer(axum::Extension(axum::extract::ConnectInfo(peer)));
        let connection = http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(self.header_timeout)
            .serve_connection(TokioIo::new(stream), TowerToHyperService::new(router));
        tokio::pin!(connection);
        let stopping = tokio::select! {
            result = connection.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(%peer, error = %e, "admin HTTP connection ended");
                }
                false
            }
            _ = shutdown.wait_for(|s| *s) => true,
        };
        // Outside the select: its shutdown branch's value may not live across an await.
        if stopping {
            // The request in progress finishes; no new one starts.
            connection.as_mut().graceful_shutdown();
            let _ = connection.await;
        }
    }

    async fn refuse(self: Arc<Self>, mut stream: TcpStream, _peer: SocketAddr, refusal: Refusal) {
        let reason = match refusal {
            Refusal::TooManyTotal => "Too many connections",
            Refusal::TooManyFromIp => "Too many connections from your address",
        };
        // RFC 9110 15.6.4: 503 with Retry-After, in the clear (a TLS client sees a reset).
        if self.tls.is_none() {
            let response = format!(
                "HTTP/1.1 503 Service Unavailable\r\nRetry-After: 5\r\nContent-Type: text/plain\r\n\
                 Content-Length: {}\r\nConnection: close\r\n\r\n{reason}",
                reason.len()
            );
            let _ = stream.write_all(response.as_bytes()).await;
        }
        let _ = stream.shutdown().await;
    }
}
