//! The Authentication Server of AuthKeys (SPEC 7.1, 7.2): keys the server makes answer
//! VERIFY over UDP and TCP; wrong, malformed, oversized and expired requests do not pass.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::TestServer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use vouchmail_store::Store;

const USER: &str = "user@local.test";

async fn start(agi: u64, avt: u64) -> TestServer {
    TestServer::start_with(|c| {
        c.authkey.server = true;
        c.authkey.default_agi_secs = agi;
        c.authkey.default_avt_secs = avt;
        c.authkey.tick_secs = 1;
        c.listeners.authkey = vec!["127.0.0.1:0".parse().unwrap()];
    })
    .await
}

fn verify_addr(server: &TestServer) -> SocketAddr {
    server.server.as_ref().unwrap().authkey_addrs[0]
}

fn now() -> i64 {
    vouchmail_proto::time::unix_seconds(std::time::SystemTime::now())
}

/// Waits for the server's first key of the address.
async fn first_key(server: &TestServer, address: &str) -> String {
    for _ in 0..100 {
        if let Some(k) = server.store.authkeys(address, now()).await.unwrap().into_iter().next() {
            return k.key;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no AuthKey generated for {address}");
}

/// One datagram out; the reply, or None after a short wait.
async fn udp(addr: SocketAddr, datagram: &[u8]) -> Option<String> {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    socket.send_to(datagram, addr).await.unwrap();
    let mut buf = [0u8; 1024];
    let n = tokio::time::timeout(Duration::from_millis(700), socket.recv(&mut buf)).await.ok()?.unwrap();
    Some(String::from_utf8_lossy(&buf[..n]).into_owned())
}

#[tokio::test]
async fn server_keys_verify_over_udp_and_tcp() {
    let server = start(2, 600).await;
    let addr = verify_addr(&server);
    let key = first_key(&server, USER).await;
    assert_eq!(key.len(), 64);
    assert!(key.bytes().all(|b| b.is_ascii_alphanumeric()));

    let reply = udp(addr, format!("VERIFY 1 {USER} {key}\r\n").as_bytes()).await;
    assert_eq!(reply.as_deref(), Some(format!("VERIFY_REPLY 1 {USER} VALIDKEY\r\n").as_str()));
    let wrong = format!("X{}", &key[1..]);
    let wrong = if wrong == key { format!("Y{}", &key[1..]) } else { wrong };
    let reply = udp(addr, format!("VERIFY 2 {USER} {wrong}\r\n").as_bytes()).await;
    assert_eq!(reply.as_deref(), Some(format!("VERIFY_REPLY 2 {USER} INVALIDKEY\r\n").as_str()));
    let reply = udp(addr, format!("VERIFY 3 {USER} short\r\n").as_bytes()).await;
    assert_eq!(reply.as_deref(), Some("ERROR 3 bad key\r\n"));
    let big = format!("VERIFY 4 {USER} {key}{}\r\n", " ".repeat(600));
    assert_eq!(udp(addr, big.as_bytes()).await, None, "an oversized datagram gets no reply");

    // TCP: two pipelined requests in one write, answered in order.
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(format!("VERIFY a {USER} {key}\r\nVERIFY b {USER} {wrong}\r\n").as_bytes()).await.unwrap();
    let want = format!("VERIFY_REPLY a {USER} VALIDKEY\r\nVERIFY_REPLY b {USER} INVALIDKEY\r\n");
    let mut got = Vec::new();
    let mut buf = [0u8; 512];
    while got.len() < want.len() {
        let n = tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut buf)).await.unwrap().unwrap();
        assert!(n > 0, "closed early: {:?}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    assert_eq!(String::from_utf8_lossy(&got), want);
    tcp.write_all(b"HELLO\r\n").await.unwrap();
    let n = tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut buf)).await.unwrap().unwrap();
    assert_eq!(&buf[..n], b"ERROR - unknown command\r\n");

    // SPEC 7.1: every VERIFY is logged.
    let mut log = Vec::new();
    for _ in 0..50 {
        log = server.store.verify_log(0, 100).await.unwrap();
        if log.len() >= 5 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let results: Vec<(&str, &str)> =
        log.iter().map(|e| (e.peer.split(' ').next().unwrap(), e.result.as_str())).collect();
    for want in [
        ("udp", "VALIDKEY"),
        ("udp", "INVALIDKEY"),
        ("udp", "ERROR bad key"),
        ("tcp", "VALIDKEY"),
        ("tcp", "INVALIDKEY"),
    ] {
        assert!(results.contains(&want), "{want:?} not in {results:?}");
    }
    assert!(log.iter().filter(|e| e.result.ends_with("KEY")).all(|e| e.address == USER));
}

#[tokio::test]
async fn keys_expire_after_agi_plus_avt() {
    let server = start(1, 1).await;
    let addr = verify_addr(&server);
    let key = first_key(&server, USER).await;
    let stored = server.store.authkeys(USER, 0).await.unwrap();
    let created = stored.iter().find(|k| k.key == key).unwrap();
    assert_eq!(created.expires_at, created.created_at + 2, "expiry = now + AGI + AVT");
    // Past its expiry the key is no longer valid (and the generator deletes it).
    while now() <= created.expires_at {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let reply = udp(addr, format!("VERIFY 9 {USER} {key}\r\n").as_bytes()).await;
    assert_eq!(reply.as_deref(), Some(format!("VERIFY_REPLY 9 {USER} INVALIDKEY\r\n").as_str()));
    // Newer keys keep coming every AGI.
    assert!(server.store.authkeys(USER, now()).await.unwrap().iter().all(|k| k.key != key));
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(!server.store.authkeys(USER, now()).await.unwrap().is_empty());
}
