//! Load client for `bench/authkey.sh`: VERIFY requests per second over UDP or TCP against
//! an Authentication Server, the plain UDP echo server that is the ceiling, and a DNS
//! server (the test kit's) so a recipient MX finds the sender domain's `AS=` record.
//!
//! ```text
//! authkey_load udp  SERVER ADDRESS KEY --seconds S --concurrency C
//! authkey_load tcp  SERVER ADDRESS KEY --seconds S --concurrency C
//! authkey_load echo LISTEN                    # UDP echo until killed
//! authkey_load dns  DOMAIN=AS_HOST:PORT ...   # prints its address, serves until killed
//! ```
//! Every loop is bounded by its duration; traffic goes to the addresses given (loopback in
//! the bench).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpStream, UdpSocket};
use vouchmail_proto::authkey::client::PendingVerify;

fn usage() -> ! {
    eprintln!("usage: authkey_load (udp|tcp) SERVER ADDRESS KEY [--seconds S] [--concurrency C] | echo LISTEN | dns DOMAIN=HOST:PORT...");
    std::process::exit(2)
}

fn option(args: &[String], name: &str, default: u64) -> u64 {
    args.windows(2).find(|w| w[0] == name).and_then(|w| w[1].parse().ok()).unwrap_or(default)
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some(mode @ ("udp" | "tcp")) if args.len() >= 4 => {
            let server: SocketAddr = args[1].parse().unwrap_or_else(|_| usage());
            let seconds = option(&args, "--seconds", 5);
            let concurrency = option(&args, "--concurrency", 8).max(1);
            let ok = Arc::new(AtomicU64::new(0));
            let failed = Arc::new(AtomicU64::new(0));
            let end = Instant::now() + Duration::from_secs(seconds);
            let mut tasks = Vec::new();
            for worker in 0..concurrency {
                let (ok, failed) = (Arc::clone(&ok), Arc::clone(&failed));
                let (address, key, udp) = (args[2].clone(), args[3].clone(), mode == "udp");
                tasks.push(tokio::spawn(async move {
                    if udp {
                        udp_worker(server, &address, &key, worker, end, &ok, &failed).await
                    } else {
                        tcp_worker(server, &address, &key, worker, end, &ok, &failed).await
                    }
                }));
            }
            for task in tasks {
                let _ = task.await;
            }
            let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
            println!(
                "{mode} {:.0} req/s ({ok} answered, {failed} unanswered in {seconds} s)",
                ok as f64 / seconds as f64
            );
        }
        Some("echo") if args.len() == 2 => {
            let socket = UdpSocket::bind(&args[1]).await.unwrap_or_else(|e| panic!("bind {}: {e}", args[1]));
            println!("{}", socket.local_addr().expect("address"));
            let mut buf = [0u8; 1024];
            loop {
                if let Ok((n, peer)) = socket.recv_from(&mut buf).await {
                    let _ = socket.send_to(&buf[..n], peer).await;
                }
            }
        }
        Some("dns") if args.len() >= 2 => {
            let mut zone = vouchmail_testkit::dns::TestDns::builder();
            for record in &args[1..] {
                let (domain, target) = record.split_once('=').unwrap_or_else(|| usage());
                zone = zone.txt(domain, &format!("AS={target}"));
            }
            let dns = zone.start().await;
            println!("{}", dns.addr());
            loop {
                tokio::time::sleep(Duration::from_secs(3600)).await;
            }
        }
        _ => usage(),
    }
}

fn request(address: &str, key: &str, worker: u64, n: u64) -> PendingVerify {
    let seq = format!("w{worker}n{n}");
    PendingVerify::new(&seq, address, key).unwrap_or_else(|e| panic!("bad request: {}", e.as_str()))
}

/// One request in flight per worker: send, wait up to 1 s for the answer.
async fn udp_worker(
    server: SocketAddr,
    address: &str,
    key: &str,
    worker: u64,
    end: Instant,
    ok: &AtomicU64,
    failed: &AtomicU64,
) {
    let socket = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    socket.connect(server).await.expect("connect");
    let mut buf = [0u8; 1024];
    let mut n = 0;
    while Instant::now() < end {
        n += 1;
        let pending = request(address, key, worker, n);
        let wire = pending.to_wire();
        if socket.send(&wire).await.is_err() {
            failed.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        match tokio::time::timeout(Duration::from_secs(1), socket.recv(&mut buf)).await {
            // The echo server returns the request itself: that counts as an answer.
            Ok(Ok(len)) if pending.check(&buf[..len]).is_ok() || buf[..len] == wire[..] => {
                ok.fetch_add(1, Ordering::Relaxed);
            }
            _ => {
                failed.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// Pipelined over one connection: 16 requests per write.
async fn tcp_worker(
    server: SocketAddr,
    address: &str,
    key: &str,
    worker: u64,
    end: Instant,
    ok: &AtomicU64,
    failed: &AtomicU64,
) {
    let Ok(stream) = TcpStream::connect(server).await else {
        failed.fetch_add(1, Ordering::Relaxed);
        return;
    };
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read);
    let mut n = 0;
    let mut line = Vec::new();
    while Instant::now() < end {
        let batch: Vec<PendingVerify> = (0..16)
            .map(|_| {
                n += 1;
                request(address, key, worker, n)
            })
            .collect();
        let wire: Vec<u8> = batch.iter().flat_map(|p| p.to_wire()).collect();
        if write.write_all(&wire).await.is_err() {
            failed.fetch_add(1, Ordering::Relaxed);
            return;
        }
        for pending in &batch {
            line.clear();
            match tokio::time::timeout(Duration::from_secs(5), reader.read_until(b'\n', &mut line)).await {
                Ok(Ok(len)) if len > 0 && pending.check(&line).is_ok() => {
                    ok.fetch_add(1, Ordering::Relaxed);
                }
                _ => {
                    failed.fetch_add(1, Ordering::Relaxed);
                    return;
                }
            }
        }
    }
}
