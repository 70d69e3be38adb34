//! A minimal DNS client for A and AAAA over UDP, used when `[egress] nameserver` names the
//! resolver to ask (otherwise the system resolver answers). Every address it returns is still
//! checked by the policy before anything connects, so a wrong answer can only be refused.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use tokio::net::UdpSocket;

const TYPE_A: u16 = 1;
const TYPE_AAAA: u16 = 28;

fn query(id: u16, name: &str, qtype: u16) -> Option<Vec<u8>> {
    let mut q = Vec::with_capacity(32 + name.len());
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]); // RD; one question
    for label in name.trim_end_matches('.').split('.') {
        let len = u8::try_from(label.len())
            .ok()
            .filter(|l| (1..=63).contains(l))?;
        q.push(len);
        q.extend_from_slice(label.as_bytes());
    }
    q.push(0);
    q.extend_from_slice(&qtype.to_be_bytes());
    q.extend_from_slice(&1u16.to_be_bytes()); // IN
    Some(q)
}

/// Skips a (possibly compressed) name; returns the offset after it.
fn skip_name(msg: &[u8], mut i: usize) -> Option<usize> {
    loop {
        let len = *msg.get(i)?;
        if len & 0xc0 == 0xc0 {
            return Some(i + 2);
        }
        if len == 0 {
            return Some(i + 1);
        }
        i += 1 + usize::from(len);
    }
}

fn u16_at(msg: &[u8], i: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*msg.get(i)?, *msg.get(i + 1)?]))
}

/// The addresses of type `qtype` in a response to query `id`.
fn answers(msg: &[u8], id: u16, qtype: u16) -> Option<Vec<IpAddr>> {
    if u16_at(msg, 0)? != id || msg.get(2)? & 0x80 == 0 {
        return None;
    }
    let rcode = msg.get(3)? & 0x0f;
    if rcode != 0 {
        return Some(Vec::new());
    }
    let qd = u16_at(msg, 4)?;
    let an = u16_at(msg, 6)?;
    let mut i = 12;
    for _ in 0..qd {
        i = skip_name(msg, i)? + 4;
    }
    let mut out = Vec::new();
    for _ in 0..an {
        i = skip_name(msg, i)?;
        let ty = u16_at(msg, i)?;
        let len = usize::from(u16_at(msg, i + 8)?);
        let data = msg.get(i + 10..i + 10 + len)?;
        match (ty, len) {
            (TYPE_A, 4) if ty == qtype => {
                out.push(IpAddr::V4(Ipv4Addr::new(
                    data[0], data[1], data[2], data[3],
                )));
            }
            (TYPE_AAAA, 16) if ty == qtype => {
                let mut b = [0u8; 16];
                b.copy_from_slice(data);
                out.push(IpAddr::V6(Ipv6Addr::from(b)));
            }
            _ => {}
        }
        i += 10 + len;
    }
    Some(out)
}

/// A and AAAA records of `name` from `server`, within `timeout`.
pub async fn lookup(
    server: SocketAddr,
    name: &str,
    timeout: Duration,
) -> std::io::Result<Vec<IpAddr>> {
    let bind: SocketAddr = if server.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    }
    .parse()
    .map_err(std::io::Error::other)?;
    let socket = UdpSocket::bind(bind).await?;
    socket.connect(server).await?;
    let mut out = Vec::new();
    for qtype in [TYPE_A, TYPE_AAAA] {
        let id: u16 = rand::random();
        let q = query(id, name, qtype)
            .ok_or_else(|| std::io::Error::other(format!("{name:?} is not a DNS name")))?;
        socket.send(&q).await?;
        let mut buf = [0u8; 1500];
        let found = tokio::time::timeout(timeout, async {
            loop {
                let n = socket.recv(&mut buf).await?;
                // Responses to other ids (or garbage) are ignored, not trusted.
                if let Some(a) = buf.get(..n).and_then(|m| answers(m, id, qtype)) {
                    return Ok::<_, std::io::Error>(a);
                }
            }
        })
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "DNS timeout"))??;
        out.extend(found);
    }
    Ok(out)
}
