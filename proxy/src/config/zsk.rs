//! Checks of the zero-standing-keys settings: the source range sessions
//! connect to sshd from, and the path of the socket sshd's command asks.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;

use ipnet::Ipv4Net;

/// Longest socket path the kernel takes (`sun_path` less its NUL).
const MAX_SOCKET_PATH: usize = 107;

/// Checks `upstream_source_range`: an IPv4 network inside 127.0.0.0/8,
/// without 127.0.0.1, with an address for every possible connection.
pub fn check_range(
    range: &str,
    upstream: SocketAddr,
    max_connections: usize,
) -> Result<Ipv4Net, String> {
    let key = format!("upstream_source_range = {range:?}");
    let net: Ipv4Net = match range.parse() {
        Ok(n) => n,
        Err(_) if range.parse::<ipnet::Ipv6Net>().is_ok() || range.contains(':') => {
            return Err(format!(
                "{key}: IPv6 has a single loopback address (::1), which cannot give each session one of its own; \
                 use an IPv4 range inside 127.0.0.0/8 such as \"127.77.0.0/16\""
            ));
        }
        Err(_) => {
            return Err(format!(
                "{key}: expected an IPv4 network with a prefix length, such as \"127.77.0.0/16\""
            ));
        }
    };
    if net.trunc() != net {
        return Err(format!(
            "{key}: host bits are set below the /{} prefix; did you mean {}?",
            net.prefix_len(),
            net.trunc()
        ));
    }
    let loopback = Ipv4Net::new(Ipv4Addr::new(127, 0, 0, 0), 8).map_err(|e| e.to_string())?;
    if !loopback.contains(&net) {
        return Err(format!(
            "{key}: must be inside 127.0.0.0/8, which Linux routes to the loopback interface"
        ));
    }
    if net.contains(&Ipv4Addr::LOCALHOST) {
        return Err(format!(
            "{key}: contains 127.0.0.1, the address every local process connects from; \
             a key bound to it would work for anyone on this host. Use a range such as \"127.77.0.0/16\""
        ));
    }
    if !(upstream.ip().is_loopback() && upstream.is_ipv4()) {
        return Err(format!(
            "{key}: upstream = {upstream} must then be an IPv4 loopback address (sshd on 127.0.0.1, say)"
        ));
    }
    let usable = usable_addresses(net);
    if usable < max_connections as u64 {
        return Err(format!(
            "{key}: has {usable} usable address(es), fewer than max_connections ({max_connections}); \
             every live session needs one. Use a larger range, such as a /16"
        ));
    }
    Ok(net)
}

fn usable_addresses(net: Ipv4Net) -> u64 {
    let size = 1u64 << (32 - u32::from(net.prefix_len()));
    // 127.0.0.0 and 127.255.255.255 are the loopback network's own
    // network and broadcast addresses.
    let reserved = [
        Ipv4Addr::new(127, 0, 0, 0),
        Ipv4Addr::new(127, 255, 255, 255),
    ];
    size - reserved.iter().filter(|a| net.contains(*a)).count() as u64
}

/// Checks `authorized_keys_socket`: absolute, short enough, in a
/// directory that exists.
pub fn check_socket_path(path: &Path) -> Result<(), String> {
    let key = format!("authorized_keys_socket = {:?}", path.display().to_string());
    if !path.is_absolute() {
        return Err(format!(
            "{key}: must be an absolute path (sshd runs the command from /)"
        ));
    }
    if path.as_os_str().len() > MAX_SOCKET_PATH {
        return Err(format!(
            "{key}: longer than {MAX_SOCKET_PATH} bytes, the most a Unix socket path may have"
        ));
    }
    match path.parent() {
        Some(dir) if dir.is_dir() => Ok(()),
        Some(dir) => Err(format!(
            "{key}: directory {} does not exist; create it (root-owned, mode 0755; under systemd, RuntimeDirectory=ztssh)",
            dir.display()
        )),
        None => Err(format!("{key}: has no directory")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn up() -> SocketAddr {
        "127.0.0.1:22".parse().expect("addr")
    }

    #[test]
    fn ranges_are_checked_with_reasons() {
        assert!(check_range("127.77.0.0/16", up(), 1024).is_ok());
        let cases = [
            ("10.0.0.0/8", "inside 127.0.0.0/8"),
            ("127.0.0.0/24", "contains 127.0.0.1"),
            ("127.77.0.1/16", "did you mean 127.77.0.0/16"),
            ("::1/128", "IPv6 has a single loopback address"),
            ("loopback", "expected an IPv4 network"),
            ("127.77.0.0/24", "fewer than max_connections (1024)"),
        ];
        for (range, want) in cases {
            let got = check_range(range, up(), 1024).expect_err(range);
            assert!(got.contains(want), "{range}: {got}");
        }
        let far = "192.0.2.1:22".parse().expect("addr");
        assert!(
            check_range("127.77.0.0/16", far, 8)
                .expect_err("remote")
                .contains("IPv4 loopback")
        );
        // A /32 is one address: enough for one connection only.
        assert!(check_range("127.77.0.9/32", up(), 1).is_ok());
        assert!(check_range("127.77.0.9/32", up(), 2).is_err());
    }
}
