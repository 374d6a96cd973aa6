//! Network: no socket call works, nothing reaches the host's loopback, no name resolves.

use std::net::{TcpListener, UdpSocket};

use fabric_types::Outcome;

use super::{EBADF, ENOTSOCK, Wat, attempt, lines, tree};
use crate::util::*;

#[tokio::test]
async fn attack_net_p1_socket_calls_on_every_fd_fail() {
    let mut wat = Wat::new()
        .import("sock_accept", "(param i32 i32 i32) (result i32)")
        .import("sock_recv", "(param i32 i32 i32 i32 i32 i32) (result i32)")
        .import("sock_send", "(param i32 i32 i32 i32 i32) (result i32)")
        .import("sock_shutdown", "(param i32 i32) (result i32)");
    let (fd, accept, recv, send, shutdown) = (
        wat.text("fd "),
        wat.text(" accept="),
        wat.text(" recv="),
        wat.text(" send="),
        wat.text(" shutdown="),
    );
    let wasm = wat.build(
        "(local $fd i32)",
        &format!(
            r#"
    (i32.store (i32.const 0x10000) (i32.const 0x10100))
    (i32.store (i32.const 0x10004) (i32.const 64))
    (loop $each
      (call $puts {fd}) (call $putu (local.get $fd))
      (call $puts {accept})
      (call $putu (call $sock_accept (local.get $fd) (i32.const 0) (i32.const 0x10020)))
      (call $puts {recv})
      (call $putu (call $sock_recv (local.get $fd) (i32.const 0x10000) (i32.const 1)
        (i32.const 0) (i32.const 0x10020) (i32.const 0x10024)))
      (call $puts {send})
      (call $putu (call $sock_send (local.get $fd) (i32.const 0x10000) (i32.const 1)
        (i32.const 0) (i32.const 0x10020)))
      (call $puts {shutdown})
      (call $putu (call $sock_shutdown (local.get $fd) (i32.const 3)))
      (call $nl)
      (local.set $fd (i32.add (local.get $fd) (i32.const 1)))
      (br_if $each (i32.le_u (local.get $fd) (i32.const 64))))"#
        ),
    );
    let tree = tree();
    // With a grant, fd 3 exists and is a directory: still no socket.
    let attempt = attempt(&wasm, b"", tight(), tree.grant()).await;
    assert_outcome(&attempt, Outcome::Ok);
    let expected: Vec<String> = (0..=64)
        .map(|fd| {
            let e = if fd <= 3 { ENOTSOCK } else { EBADF };
            format!("fd {fd} accept={e} recv={e} send={e} shutdown={e}")
        })
        .collect();
    assert_eq!(lines(&attempt), expected);
    assert_serves(sandbox()).await;
}

#[tokio::test]
async fn attack_net_tcp_connect_to_a_loopback_listener_never_arrives() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let commands = format!(
        "tcp 127.0.0.1:{port}\ntcp localhost:{port}\ntcp [::ffff:127.0.0.1]:{port}\ntcp 0.0.0.0:{port}\n"
    );
    for (kind, wasm) in [
        ("p2", fabric_agents::attack::NETCHECK_P2),
        ("p1", fabric_agents::attack::NETCHECK_P1),
    ] {
        let attempt = run(wasm, commands.as_bytes()).await;
        assert_outcome(&attempt, Outcome::Ok);
        let report = lines(&attempt);
        assert_eq!(report.len(), 4, "{kind}: {report:?}");
        for line in &report {
            assert!(line.contains(" -> err: "), "{kind}: {line}");
        }
    }
    match listener.accept() {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
        other => panic!("the listener saw a connection: {other:?}"),
    }
    assert_serves(sandbox()).await;
}

#[tokio::test]
async fn attack_net_udp_send_to_a_loopback_socket_never_arrives() {
    let receiver = UdpSocket::bind("127.0.0.1:0").unwrap();
    receiver.set_nonblocking(true).unwrap();
    let addr = receiver.local_addr().unwrap();
    for wasm in [
        fabric_agents::attack::NETCHECK_P2,
        fabric_agents::attack::NETCHECK_P1,
    ] {
        let attempt = run(wasm, format!("udp {addr}\n").as_bytes()).await;
        assert_outcome(&attempt, Outcome::Ok);
        let line = text(&attempt.output);
        assert!(line.starts_with(&format!("udp {addr} -> err: ")), "{line}");
    }
    let mut buf = [0u8; 64];
    match receiver.recv_from(&mut buf) {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
        other => panic!("a datagram arrived: {other:?}"),
    }
    assert_serves(sandbox()).await;
}

#[tokio::test]
async fn attack_net_a_guest_cannot_listen() {
    for wasm in [
        fabric_agents::attack::NETCHECK_P2,
        fabric_agents::attack::NETCHECK_P1,
    ] {
        let attempt = run(wasm, b"listen 127.0.0.1:0\nlisten 0.0.0.0:0\n").await;
        assert_outcome(&attempt, Outcome::Ok);
        for line in lines(&attempt) {
            assert!(line.contains(" -> err: "), "{line}");
        }
    }
    assert_serves(sandbox()).await;
}

#[tokio::test]
async fn attack_net_name_lookup_is_refused() {
    for wasm in [
        fabric_agents::attack::NETCHECK_P2,
        fabric_agents::attack::NETCHECK_P1,
        fabric_agents::p2::PROBE,
    ] {
        let input: &[u8] = if wasm == fabric_agents::p2::PROBE {
            b"resolve localhost\nresolve example.com\n"
        } else {
            b"lookup localhost\nlookup example.com\n"
        };
        let attempt = run(wasm, input).await;
        assert_outcome(&attempt, Outcome::Ok);
        let report = lines(&attempt);
        assert_eq!(report.len(), 2, "{report:?}");
        for line in report {
            assert!(line.contains(" -> err: "), "{line}");
        }
    }
    assert_serves(sandbox()).await;
}
