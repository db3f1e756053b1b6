//! A scripted HTTP server for faults a real PIN service cannot produce on demand: 5xx bursts,
//! `Retry-After` from a busy proxy, connection resets, hangs, answers that drip, malicious
//! values. Real sockets, one request per connection.
//!
//! The script is a closure from the request (and how many requests came before) to a reply,
//! so each test states its server's behaviour in a few lines.

use std::{
    net::SocketAddr,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};

/// What the client sent.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    /// Path and query, as sent.
    pub target: String,
    pub body: String,
}

/// What the server does with it.
#[derive(Debug, Clone)]
pub enum Reply {
    /// An answer with this status and body (JSON content type when the body starts with
    /// `{` or `[`).
    Status(u16, String),
    /// The same with a `Retry-After: <secs>` header, as a busy proxy or a restarting service
    /// sends it.
    RetryAfter(u16, String, u64),
    /// A 200 whose body comes one byte per `every`, never finishing within a test: a slow
    /// or hostile peer that keeps each request alive as long as the client lets it.
    Drip { every: Duration },
    /// Close the connection without answering (the client sees a reset or EOF).
    Reset,
    /// Keep the connection open and never answer.
    Hang,
    /// Read the request, wait this long, then close without answering: a replica killed
    /// while a long-poll is parked on it.
    #[cfg_attr(not(feature = "server"), allow(dead_code))]
    ResetAfter(Duration),
    /// An answer that names itself as our service (with long-poll and atomic create), so the
    /// agent treats this server as ours.
    #[cfg_attr(not(feature = "server"), allow(dead_code))]
    Ours(u16, String),
}

impl Reply {
    pub fn json(status: u16, body: &str) -> Reply {
        Reply::Status(status, body.to_string())
    }
}

type Script = dyn Fn(&Request, usize) -> Reply + Send + Sync;

pub struct FaultServer {
    pub addr: SocketAddr,
    log: Arc<Mutex<Vec<Request>>>,
    task: tokio::task::JoinHandle<()>,
}

impl FaultServer {
    /// Starts on a free loopback port. `script(request, n)` gets the request and the number
    /// of requests answered before it.
    pub async fn start(script: impl Fn(&Request, usize) -> Reply + Send + Sync + 'static) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let script: Arc<Script> = Arc::new(script);
        let counter = Arc::new(AtomicUsize::new(0));
        let task = {
            let log = log.clone();
            tokio::spawn(async move {
                loop {
                    let Ok((stream, _)) = listener.accept().await else {
                        return;
                    };
                    let (script, log, counter) = (script.clone(), log.clone(), counter.clone());
                    tokio::spawn(async move {
                        let _ = serve_one(stream, &*script, &log, &counter).await;
                    });
                }
            })
        };
        FaultServer { addr, log, task }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every request received so far.
    pub fn requests(&self) -> Vec<Request> {
        self.log.lock().unwrap().clone()
    }
}

impl Drop for FaultServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve_one(
    mut stream: TcpStream,
    script: &Script,
    log: &Mutex<Vec<Request>>,
    counter: &AtomicUsize,
) -> std::io::Result<()> {
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 4096];
    let header_end = loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        buffer.extend_from_slice(&chunk[..n]);
        if let Some(pos) = find(&buffer, b"\r\n\r\n") {
            break pos + 4;
        }
    };
    let head = String::from_utf8_lossy(&buffer[..header_end]).to_string();
    let mut lines = head.lines();
    let mut request_line = lines.next().unwrap_or_default().split_whitespace();
    let method = request_line.next().unwrap_or_default().to_string();
    let target = request_line.next().unwrap_or_default().to_string();
    let content_length = lines
        .filter_map(|l| l.split_once(':'))
        .find(|(name, _)| name.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.trim().parse::<usize>().ok())
        .unwrap_or(0);
    while buffer.len() < header_end + content_length {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        buffer.extend_from_slice(&chunk[..n]);
    }
    let body = String::from_utf8_lossy(&buffer[header_end..]).to_string();
    let request = Request {
        method,
        target,
        body,
    };
    let n = counter.fetch_add(1, Ordering::SeqCst);
    log.lock().unwrap().push(request.clone());
    match script(&request, n) {
        Reply::Reset => Ok(()),
        Reply::ResetAfter(after) => {
            tokio::time::sleep(after).await;
            Ok(())
        }
        Reply::Ours(status, body) => {
            let header = format!(
                "{}: {}\r\n",
                clusterctx::protocol::SERVICE_HEADER,
                clusterctx::protocol::service_header_value()
            );
            answer(&mut stream, status, &body, &header).await
        }
        Reply::Hang => {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            Ok(())
        }
        Reply::Drip { every } => {
            stream
                .write_all(b"HTTP/1.1 200 X\r\ncontent-type: application/json\r\ncontent-length: 100000\r\nconnection: close\r\n\r\n")
                .await?;
            loop {
                tokio::time::sleep(every).await;
                stream.write_all(b" ").await?;
            }
        }
        Reply::Status(status, body) => answer(&mut stream, status, &body, "").await,
        Reply::RetryAfter(status, body, secs) => {
            answer(
                &mut stream,
                status,
                &body,
                &format!("retry-after: {secs}\r\n"),
            )
            .await
        }
    }
}

/// Writes a whole answer with `extra` header lines (each ending in CRLF) and closes.
async fn answer(
    stream: &mut TcpStream,
    status: u16,
    body: &str,
    extra: &str,
) -> std::io::Result<()> {
    let content_type = if body.starts_with('{') || body.starts_with('[') {
        "application/json"
    } else {
        "text/plain"
    };
    let answer = format!(
        "HTTP/1.1 {status} X\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\n{extra}connection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(answer.as_bytes()).await?;
    stream.shutdown().await
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}
