//! The client side of the admin listener, for `keygate reload`: one blocking
//! HTTP/1.1 request over a plain TCP connection (the admin listener never
//! speaks TLS).

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

/// How long a reload may take (it compiles the whole file) before we give up.
const TIMEOUT: Duration = Duration::from_secs(60);

/// The address to connect to for a listener bound on `addr`: a wildcard bind
/// (`0.0.0.0`, `[::]`) is reached on loopback.
fn connect_addr(addr: &str) -> std::io::Result<SocketAddr> {
    let mut a = addr
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidInput, "no address"))?;
    if a.ip().is_unspecified() {
        a.set_ip(match a.ip() {
            IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::LOCALHOST),
        });
    }
    Ok(a)
}

/// `POST /-/reload` on the admin listener at `addr`: `(status, body)`.
pub fn post_reload(addr: &str) -> std::io::Result<(u16, String)> {
    let a = connect_addr(addr)?;
    let mut s = TcpStream::connect_timeout(&a, Duration::from_secs(5))?;
    s.set_read_timeout(Some(TIMEOUT))?;
    s.set_write_timeout(Some(TIMEOUT))?;
    write!(
        s,
        "POST /-/reload HTTP/1.1\r\nHost: {a}\r\nContent-Length: 0\r\nUser-Agent: keygate-cli\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    parse_response(&raw).ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "not an HTTP response from the admin listener",
        )
    })
}

/// Status and body of an HTTP/1.1 response (identity or chunked body).
fn parse_response(raw: &[u8]) -> Option<(u16, String)> {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status: u16 = head
        .lines()
        .next()?
        .strip_prefix("HTTP/1.")?
        .get(2..5)?
        .parse()
        .ok()?;
    let chunked = head.lines().any(|l| {
        l.split_once(':').is_some_and(|(k, v)| {
            k.trim().eq_ignore_ascii_case("transfer-encoding")
                && v.to_ascii_lowercase().contains("chunked")
        })
    });
    if !chunked {
        return Some((status, body.to_string()));
    }
    let mut out = String::new();
    let mut rest = body;
    loop {
        let (size, tail) = rest.split_once("\r\n")?;
        let n = usize::from_str_radix(size.split(';').next()?.trim(), 16).ok()?;
        if n == 0 {
            return Some((status, out));
        }
        out.push_str(tail.get(..n)?);
        rest = tail.get(n..)?.strip_prefix("\r\n")?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_plain_and_chunked() {
        assert_eq!(
            parse_response(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"),
            Some((200, "ok".into()))
        );
        assert_eq!(
            parse_response(
                b"HTTP/1.1 422 Unprocessable\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"
            ),
            Some((422, "abcde".into()))
        );
        assert_eq!(parse_response(b"garbage"), None);
    }

    #[test]
    fn wildcard_binds_are_reached_on_loopback() {
        assert_eq!(
            connect_addr("0.0.0.0:9901").unwrap(),
            "127.0.0.1:9901".parse().unwrap()
        );
        assert_eq!(
            connect_addr("[::]:9901").unwrap(),
            "[::1]:9901".parse().unwrap()
        );
    }
}
