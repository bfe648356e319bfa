//! A TCP proxy between ingest and RabbitMQ, so a test can "stop the broker" without touching the
//! shared one: [`TcpProxy::cut`] closes every proxied connection and refuses new ones (they are
//! closed at once), [`TcpProxy::restore`] lets connections through again.
//!
//! [`TcpProxy::cut_after_next_publish`] cuts at the worst moment for a publisher: right after the
//! broker has been sent a complete `basic.publish` (method, header and body frames), before its
//! confirm can come back. The client → broker direction is parsed as AMQP 0-9-1 frames for that.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

#[derive(Debug)]
struct Shared {
    /// `true` while connections pass.
    up: watch::Sender<bool>,
    /// Cut right after the next complete `basic.publish` has been forwarded.
    armed: AtomicBool,
    /// How many times an armed cut happened.
    publish_cuts: AtomicUsize,
    /// Connections closed at once because the proxy was cut.
    refused: AtomicUsize,
}

#[derive(Debug, Clone)]
pub struct TcpProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
}

impl TcpProxy {
    /// Listens on an ephemeral loopback port and forwards every connection to `upstream`.
    pub async fn start(upstream: SocketAddr) -> TcpProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (up, _) = watch::channel(true);
        let shared = Arc::new(Shared {
            up,
            armed: AtomicBool::new(false),
            publish_cuts: AtomicUsize::new(0),
            refused: AtomicUsize::new(0),
        });
        let accepting = shared.clone();
        tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    continue;
                };
                if !*accepting.up.borrow() {
                    accepting.refused.fetch_add(1, Ordering::SeqCst);
                    drop(client);
                    continue;
                }
                tokio::spawn(proxy_connection(client, upstream, accepting.clone()));
            }
        });
        TcpProxy { addr, shared }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// "RabbitMQ stops": every open connection is closed and new ones are closed on arrival.
    pub fn cut(&self) {
        self.shared.up.send_replace(false);
    }

    /// "RabbitMQ is back".
    pub fn restore(&self) {
        self.shared.armed.store(false, Ordering::SeqCst);
        self.shared.up.send_replace(true);
    }

    pub fn is_up(&self) -> bool {
        *self.shared.up.borrow()
    }

    /// Cuts (as [`TcpProxy::cut`]) right after the next complete publish reached the broker.
    pub fn cut_after_next_publish(&self) {
        self.shared.armed.store(true, Ordering::SeqCst);
    }

    /// How many armed cuts have happened.
    pub fn publish_cuts(&self) -> usize {
        self.shared.publish_cuts.load(Ordering::SeqCst)
    }

    /// Connections refused while cut.
    pub fn refused(&self) -> usize {
        self.shared.refused.load(Ordering::SeqCst)
    }
}

async fn proxy_connection(client: TcpStream, upstream: SocketAddr, shared: Arc<Shared>) {
    let Ok(server) = TcpStream::connect(upstream).await else {
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let mut down = shared.up.subscribe();
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let to_server = forward_frames(&mut client_read, &mut server_write, &shared);
    let to_client = tokio::io::copy(&mut server_read, &mut client_write);
    // Whichever ends first ends both: a cut, either side closing, or an I/O error. Dropping the
    // halves closes both sockets.
    tokio::select! {
        _ = down.wait_for(|up| !up) => {}
        _ = to_server => {}
        _ = to_client => {}
    }
}

/// Copies client → broker frame by frame, noting each complete `basic.publish`.
async fn forward_frames(
    from: &mut (impl AsyncReadExt + Unpin),
    to: &mut (impl AsyncWriteExt + Unpin),
    shared: &Shared,
) -> std::io::Result<()> {
    const FRAME_METHOD: u8 = 1;
    const FRAME_HEADER: u8 = 2;
    const FRAME_BODY: u8 = 3;
    // "AMQP" 0 0 9 1 opens the connection; frames follow.
    let mut protocol_header = [0u8; 8];
    from.read_exact(&mut protocol_header).await?;
    to.write_all(&protocol_header).await?;
    // After a basic.publish: Some(None) awaits its header frame, Some(Some(n)) awaits n body bytes.
    let mut publishing: Option<Option<u64>> = None;
    loop {
        let mut head = [0u8; 7];
        from.read_exact(&mut head).await?;
        let size = u32::from_be_bytes([head[3], head[4], head[5], head[6]]) as usize;
        let mut rest = vec![0u8; size + 1];
        from.read_exact(&mut rest).await?;
        let payload = &rest[..size];
        let mut complete = false;
        match head[0] {
            FRAME_METHOD if payload.len() >= 4 && payload[..4] == [0, 60, 0, 40] => {
                publishing = Some(None);
            }
            FRAME_HEADER if publishing == Some(None) && payload.len() >= 12 => {
                let body = u64::from_be_bytes(payload[4..12].try_into().unwrap());
                publishing = Some(Some(body));
                complete = body == 0;
            }
            FRAME_BODY => {
                if let Some(Some(left)) = publishing.as_mut() {
                    *left = left.saturating_sub(size as u64);
                    complete = *left == 0;
                }
            }
            _ => {}
        }
        to.write_all(&head).await?;
        to.write_all(&rest).await?;
        if complete {
            publishing = None;
            if shared.armed.swap(false, Ordering::SeqCst) {
                to.flush().await?;
                shared.publish_cuts.fetch_add(1, Ordering::SeqCst);
                shared.up.send_replace(false);
                return Ok(());
            }
        }
    }
}
