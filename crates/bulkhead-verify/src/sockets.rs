//! The TCP/UDP sockets a process holds, from `/proc/<pid>/fd` and `/proc/<pid>/net/*` (Linux):
//! evidence for "the platform connects to nothing but its configured peers".

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

#[derive(Debug, Clone)]
pub struct Socket {
    pub local: SocketAddr,
    pub remote: SocketAddr,
    /// A TCP socket in LISTEN state.
    pub listening: bool,
}

fn parse_addr(hex: &str) -> Option<SocketAddr> {
    let (ip, port) = hex.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let ip: IpAddr = if ip.len() == 8 {
        Ipv4Addr::from(u32::from_be(u32::from_str_radix(ip, 16).ok()?)).into()
    } else {
        let mut b = [0u8; 16];
        for (i, chunk) in b.chunks_mut(4).enumerate() {
            let word = u32::from_str_radix(ip.get(i * 8..i * 8 + 8)?, 16).ok()?;
            chunk.copy_from_slice(&word.to_le_bytes());
        }
        Ipv6Addr::from(b).into()
    };
    Some(SocketAddr::new(ip, port))
}

/// Every TCP/UDP socket process `pid` holds (empty when it cannot be read).
pub fn sockets_of(pid: u32) -> Vec<Socket> {
    let inodes: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| {
            d.flatten()
                .filter_map(|e| std::fs::read_link(e.path()).ok())
                .filter_map(|l| {
                    let l = l.to_string_lossy().into_owned();
                    Some(l.strip_prefix("socket:[")?.strip_suffix(']')?.to_owned())
                })
                .collect()
        })
        .unwrap_or_default();
    let mut out = Vec::new();
    for proto in ["tcp", "tcp6", "udp", "udp6"] {
        let table = std::fs::read_to_string(format!("/proc/{pid}/net/{proto}")).unwrap_or_default();
        for line in table.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() > 9
                && inodes.iter().any(|i| i == f[9])
                && let (Some(local), Some(remote)) = (parse_addr(f[1]), parse_addr(f[2]))
            {
                out.push(Socket {
                    local,
                    remote,
                    listening: proto.starts_with("tcp") && f[3] == "0A",
                });
            }
        }
    }
    out
}

/// Direct child processes of `pid` named `bulkhead` (its workers).
pub fn children(pid: u32) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
                .filter(|p| {
                    let parent = std::fs::read_to_string(format!("/proc/{p}/stat"))
                        .ok()
                        .and_then(|s| {
                            s.rsplit_once(')')?
                                .1
                                .split_whitespace()
                                .nth(1)?
                                .parse::<u32>()
                                .ok()
                        });
                    let comm =
                        std::fs::read_to_string(format!("/proc/{p}/comm")).unwrap_or_default();
                    parent == Some(pid) && comm.trim() == "bulkhead"
                })
                .collect()
        })
        .unwrap_or_default()
}
