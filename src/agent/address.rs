//! Which address the master publishes.
//!
//! The legacy agent took the first IPv4 address `ifconfig` printed, which on a multi-homed VM
//! is often the wrong one (a docker bridge, a storage network). We ask the kernel instead:
//! connecting a UDP socket sends nothing, but makes the kernel choose the source address it
//! would use toward the PIN service, which is the address on the network the cluster shares.

use std::net::{IpAddr, SocketAddr, UdpSocket};

use super::config::AddressChoice;

#[derive(Debug, thiserror::Error)]
pub enum AddressError {
    #[error("cannot resolve the PIN service host {host}: {message}")]
    Resolve { host: String, message: String },
    #[error("no route toward the PIN service ({target}): {source}")]
    NoRoute {
        target: SocketAddr,
        source: std::io::Error,
    },
    #[error("interface {name} has no usable address (yet)")]
    NoInterfaceAddress { name: String },
    #[error("there is no network interface {name} (cvm_cluster_address names an address or an interface)")]
    NoSuchInterface { name: String },
    #[error("cannot list network interfaces: {0}")]
    Interfaces(nix::Error),
    #[error("invalid service URL {0}")]
    Url(String),
}

impl crate::client::retry::Retryable for AddressError {
    /// DNS and routes come up during boot, so those are worth retrying; a named interface
    /// without an address may still be configured by DHCP, so that too. A name that matches
    /// no interface at all is a typo: waiting will not fix it.
    fn is_transient(&self) -> bool {
        !matches!(
            self,
            AddressError::Url(_) | AddressError::NoSuchInterface { .. }
        )
    }
}

/// The address to publish, as `choice` says.
pub async fn resolve(choice: &AddressChoice, service_url: &str) -> Result<IpAddr, AddressError> {
    match choice {
        AddressChoice::Fixed(ip) => Ok(*ip),
        AddressChoice::Interface(name) => interface_address(name),
        AddressChoice::Detect => source_address_toward(service_url).await,
    }
}

/// The source address the kernel would use to reach the service. Tries each resolved address
/// of the host (IPv6 and IPv4 as the resolver orders them) until one has a route.
pub async fn source_address_toward(service_url: &str) -> Result<IpAddr, AddressError> {
    let url =
        reqwest::Url::parse(service_url).map_err(|_| AddressError::Url(service_url.into()))?;
    let host = url
        .host_str()
        .ok_or_else(|| AddressError::Url(service_url.into()))?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let port = url.port_or_known_default().unwrap_or(443);
    let targets: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), port))
        .await
        .map_err(|e| AddressError::Resolve {
            host: host.clone(),
            message: e.to_string(),
        })?
        .collect();
    let mut last_error = None;
    for target in targets {
        match local_address_for(target) {
            Ok(ip) => return Ok(ip),
            Err(source) => last_error = Some(AddressError::NoRoute { target, source }),
        }
    }
    Err(last_error.unwrap_or(AddressError::Resolve {
        host,
        message: "no addresses".into(),
    }))
}

fn local_address_for(target: SocketAddr) -> std::io::Result<IpAddr> {
    let bind: SocketAddr = match target {
        SocketAddr::V4(_) => (std::net::Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (std::net::Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let socket = UdpSocket::bind(bind)?;
    socket.connect(target)?;
    Ok(socket.local_addr()?.ip())
}

/// The first IPv4 address of `name`, else its first IPv6 address that is not link-local
/// (a link-local address means nothing to other hosts without a zone).
pub fn interface_address(name: &str) -> Result<IpAddr, AddressError> {
    let mut ipv6 = None;
    let mut exists = false;
    for ifaddr in nix::ifaddrs::getifaddrs().map_err(AddressError::Interfaces)? {
        if ifaddr.interface_name != name {
            continue;
        }
        exists = true;
        let Some(address) = ifaddr.address else {
            continue;
        };
        if let Some(v4) = address.as_sockaddr_in() {
            return Ok(IpAddr::V4(v4.ip()));
        }
        if let Some(v6) = address.as_sockaddr_in6() {
            let ip = v6.ip();
            let link_local = (ip.segments()[0] & 0xffc0) == 0xfe80;
            if !link_local && ipv6.is_none() {
                ipv6 = Some(IpAddr::V6(ip));
            }
        }
    }
    match (ipv6, exists) {
        (Some(ip), _) => Ok(ip),
        (None, true) => Err(AddressError::NoInterfaceAddress { name: name.into() }),
        (None, false) => Err(AddressError::NoSuchInterface { name: name.into() }),
    }
}

/// Whether a published text (trimmed, as the legacy service trims) names the address `ip`:
/// `10.0.0.5` and ` 10.0.0.5 ` do, and `::1` and `0:0::1` are the same address.
pub fn same_address(text: &str, ip: IpAddr) -> bool {
    text.trim().parse::<IpAddr>().is_ok_and(|held| held == ip)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn loopback_service_gives_a_loopback_source() {
        let ip = source_address_toward("http://127.0.0.1:9").await.unwrap();
        assert_eq!(ip, IpAddr::from([127, 0, 0, 1]));
    }

    #[tokio::test]
    async fn ipv6_loopback_service_gives_ipv6_source() {
        // Skipped only where the kernel has no IPv6 at all (then binding [::1] fails too).
        if UdpSocket::bind("[::1]:0").is_err() {
            return;
        }
        let ip = source_address_toward("http://[::1]:9").await.unwrap();
        assert_eq!(ip, "::1".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn loopback_interface_has_an_address() {
        assert_eq!(
            interface_address("lo").unwrap(),
            IpAddr::from([127, 0, 0, 1])
        );
        assert!(matches!(
            interface_address("no-such-if0"),
            Err(AddressError::NoSuchInterface { .. })
        ));
    }

    #[tokio::test]
    async fn fixed_address_wins() {
        let ip = resolve(
            &AddressChoice::Fixed("10.1.2.3".parse().unwrap()),
            "http://x",
        )
        .await
        .unwrap();
        assert_eq!(ip, IpAddr::from([10, 1, 2, 3]));
    }
}
