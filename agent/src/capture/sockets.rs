//! The addresses of a TLS connection's socket, from the file descriptor `SSL_set_fd` gave it:
//! `/proc/PID/fd/FD` names the socket's inode, and the process's own view of
//! `/proc/PID/net/tcp{,6}` (its network namespace: a pod's) maps the inode to the addresses.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The two ends of a TCP connection as the process sees them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SocketPair {
    pub local: SocketAddr,
    pub remote: SocketAddr,
}

/// Looks up the addresses of socket `fd` of process `pid`; `None` if it is not a TCP socket
/// (or is gone).
pub fn lookup(pid: u32, fd: i32) -> Option<SocketPair> {
    let link = std::fs::read_link(format!("/proc/{pid}/fd/{fd}")).ok()?;
    let inode: u64 = link
        .to_str()?
        .strip_prefix("socket:[")?
        .strip_suffix(']')?
        .parse()
        .ok()?;
    ["tcp", "tcp6"].iter().find_map(|table| {
        let text = std::fs::read_to_string(format!("/proc/{pid}/net/{table}")).ok()?;
        find_inode(&text, inode)
    })
}

/// Finds the line of `inode` in the text of a /proc/net/tcp table.
fn find_inode(table: &str, inode: u64) -> Option<SocketPair> {
    table.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.get(9)?.parse::<u64>().ok()? != inode {
            return None;
        }
        Some(SocketPair {
            local: parse_address(fields.get(1)?)?,
            remote: parse_address(fields.get(2)?)?,
        })
    })
}

/// `0100007F:1F90` (IPv4) or 32 hex digits and a port (IPv6): each 32-bit word of the
/// address in host byte order, the port big-endian in hex.
fn parse_address(text: &str) -> Option<SocketAddr> {
    let (address, port) = text.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let word = |i: usize| -> Option<[u8; 4]> {
        let hex = address.get(i * 8..i * 8 + 8)?;
        Some(u32::from_str_radix(hex, 16).ok()?.to_le_bytes())
    };
    let ip = match address.len() {
        8 => IpAddr::V4(Ipv4Addr::from(word(0)?)),
        32 => {
            let mut bytes = [0u8; 16];
            for i in 0..4 {
                bytes[i * 4..i * 4 + 4].copy_from_slice(&word(i)?);
            }
            let v6 = Ipv6Addr::from(bytes);
            // A v4 client of a dual-stack listener shows as ::ffff:a.b.c.d.
            v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4)
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::os::fd::AsRawFd;

    use super::*;

    #[test]
    fn parses_proc_net_addresses() {
        assert_eq!(
            parse_address("0100007F:1F90"),
            Some("127.0.0.1:8080".parse().unwrap())
        );
        assert_eq!(
            parse_address("0000000000000000FFFF00000100007F:01BB"),
            Some("127.0.0.1:443".parse().unwrap())
        );
        assert_eq!(
            parse_address("00000000000000000000000001000000:0050"),
            Some("[::1]:80".parse().unwrap())
        );
        assert_eq!(parse_address("zz:1"), None);
    }

    #[test]
    fn finds_this_processs_own_connection() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let server_addr = listener.local_addr().unwrap();
        let mut client = std::net::TcpStream::connect(server_addr).unwrap();
        let (mut accepted, _) = listener.accept().unwrap();
        client.write_all(b"x").unwrap();
        let mut byte = [0u8];
        accepted.read_exact(&mut byte).unwrap();
        let pair = lookup(std::process::id(), client.as_raw_fd()).expect("a TCP socket");
        assert_eq!(pair.remote, server_addr);
        assert_eq!(pair.local, client.local_addr().unwrap());
        let accepted_pair = lookup(std::process::id(), accepted.as_raw_fd()).unwrap();
        assert_eq!(accepted_pair.local, server_addr);
        assert_eq!(
            lookup(std::process::id(), 0),
            None,
            "stdin is not a TCP socket"
        );
    }
}
