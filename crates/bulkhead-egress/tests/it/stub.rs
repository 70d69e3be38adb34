//! A DNS stub (UDP, A and AAAA from a fixed table) and small HTTP servers.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use tokio::net::UdpSocket;

/// Answers A/AAAA queries for the names in `table` (others: NXDOMAIN).
pub async fn dns(table: HashMap<String, Vec<IpAddr>>) -> SocketAddr {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = socket.local_addr().unwrap();
    let table = Arc::new(table);
    tokio::spawn(async move {
        let mut buf = [0u8; 512];
        loop {
            let Ok((n, from)) = socket.recv_from(&mut buf).await else {
                return;
            };
            let q = &buf[..n];
            let mut i = 12;
            let mut labels = Vec::new();
            while q[i] != 0 {
                let len = usize::from(q[i]);
                labels.push(String::from_utf8_lossy(&q[i + 1..i + 1 + len]).to_string());
                i += 1 + len;
            }
            let qtype = u16::from_be_bytes([q[i + 1], q[i + 2]]);
            let question = &q[12..i + 5];
            let name = labels.join(".");
            let ips: Vec<IpAddr> = table
                .get(&name)
                .map(|v| {
                    v.iter()
                        .copied()
                        .filter(|ip| (qtype == 1) == ip.is_ipv4())
                        .collect()
                })
                .unwrap_or_default();
            let mut r = Vec::new();
            r.extend_from_slice(&q[..2]);
            let rcode = if table.contains_key(&name) { 0 } else { 3 };
            r.extend_from_slice(&[0x81, 0x80 | rcode, 0, 1]);
            r.extend_from_slice(&u16::try_from(ips.len()).unwrap().to_be_bytes());
            r.extend_from_slice(&[0, 0, 0, 0]);
            r.extend_from_slice(question);
            for ip in ips {
                r.extend_from_slice(&[0xc0, 0x0c]);
                let (ty, data): (u16, Vec<u8>) = match ip {
                    IpAddr::V4(v4) => (1, v4.octets().to_vec()),
                    IpAddr::V6(v6) => (28, v6.octets().to_vec()),
                };
                r.extend_from_slice(&ty.to_be_bytes());
                r.extend_from_slice(&[0, 1, 0, 0, 0, 60]);
                r.extend_from_slice(&u16::try_from(data.len()).unwrap().to_be_bytes());
                r.extend_from_slice(&data);
            }
            let _ = socket.send_to(&r, from).await;
        }
    });
    addr
}

/// An HTTP server on 127.0.0.1 with `router`; returns its port.
pub async fn http(router: axum::Router) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        axum::serve(listener, router).await.unwrap();
    });
    port
}
