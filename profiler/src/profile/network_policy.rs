//! `networkpolicy.yaml`: a Kubernetes `NetworkPolicy` (k8s-openapi types) from the binds and
//! connections a recording saw, the way Inspektor Gadget's network-policy advice makes one:
//! ingress on the ports the workload listened on, egress to the destinations it connected to
//! (each address an `ipBlock` of one host) on their ports, DNS to the cluster's DNS service when
//! the workload resolved names. Loopback traffic stays inside the pod and needs no rule.
//!
//! What the recording cannot say, the file's comments do: a bound port is not tied to the kind
//! of socket that bound it (the protocols come from the socket types the workload created in
//! that family), the clients of a listening port are not recorded (ingress is from anywhere),
//! and the addresses are the ones the recording's network gave (in a cluster, peers are pods
//! and Services with other addresses).
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use k8s_openapi::api::networking::v1::{
    IPBlock, NetworkPolicy, NetworkPolicyEgressRule, NetworkPolicyIngressRule, NetworkPolicyPeer,
    NetworkPolicyPort, NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::profile::docker::comment_safe;
use crate::trace::image::Network;

/// The DNS port: connections to it are name resolution, allowed to the cluster's DNS.
pub const DNS_PORT: u16 = 53;

/// A transport protocol NetworkPolicy names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Protocol {
    Tcp,
    Udp,
}

impl Protocol {
    fn name(self) -> &'static str {
        match self {
            Protocol::Tcp => "TCP",
            Protocol::Udp => "UDP",
        }
    }
}

/// An IPv4/IPv6 socket address as the recording writes it (`AF_INET 10.0.0.5:5432`,
/// `AF_INET6 [::1]:8080`): the family, the address (an IPv4-mapped IPv6 address is the IPv4
/// one, as the network sees it) and the port. Anything else (AF_UNIX, netlink) is `None`.
pub fn parse_inet(entry: &str) -> Option<(&'static str, IpAddr, u16)> {
    let (family, rest) = entry.split_once(' ')?;
    let family = match family {
        "AF_INET" => "AF_INET",
        "AF_INET6" => "AF_INET6",
        _ => return None,
    };
    let sa: std::net::SocketAddr = rest.parse().ok()?;
    let ip = match sa.ip() {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    };
    Some((family, ip, sa.port()))
}

/// The protocols of the sockets the workload created in `family` (`AF_INET/SOCK_STREAM/0`):
/// stream sockets are TCP, datagram sockets UDP (other protocols, e.g. SCTP, aside). `None`
/// when the recording saw no socket of that family (made before it started).
fn family_protocols(network: &Network, family: &str) -> Option<BTreeSet<Protocol>> {
    let mut seen = false;
    let mut out = BTreeSet::new();
    for s in &network.sockets {
        let mut parts = s.split('/');
        if parts.next() != Some(family) {
            continue;
        }
        seen = true;
        let (kind, proto) = (parts.next(), parts.next().unwrap_or("0"));
        match (kind, proto) {
            (Some("SOCK_STREAM"), "0" | "6") => {
                out.insert(Protocol::Tcp);
            }
            (Some("SOCK_DGRAM"), "0" | "17") => {
                out.insert(Protocol::Udp);
            }
            _ => {}
        }
    }
    seen.then_some(out)
}

/// Loopback and unspecified addresses (`connect` to 0.0.0.0 reaches the local host) never
/// leave the pod's network namespace.
fn pod_local(ip: &IpAddr) -> bool {
    ip.is_loopback() || ip.is_unspecified()
}

/// The NetworkPolicy's content, before it is made into the k8s-openapi object.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NetworkAdvice {
    /// Ports other pods may connect to.
    pub ingress: BTreeSet<(Protocol, u16)>,
    /// Destination host (CIDR of one address) and its ports.
    pub egress: BTreeMap<String, BTreeSet<(Protocol, u16)>>,
    /// The workload resolved names (connected to port 53, or to the systemd-resolved socket).
    pub dns: bool,
    /// What the file's comments say.
    pub notes: Vec<String>,
}

/// What the recorded network section allows.
pub fn advice(network: &Network) -> NetworkAdvice {
    let mut a = NetworkAdvice::default();
    let both: BTreeSet<Protocol> = [Protocol::Tcp, Protocol::Udp].into();
    let mut guessed_families = BTreeSet::new();
    let mut udp_unsure = false;
    let mut udp_egress_unsure = false;
    for b in &network.bound {
        let Some((family, ip, port)) = parse_inet(b) else {
            continue;
        };
        if port == 0 || ip.is_loopback() {
            continue;
        }
        // A bound port is not tied to its socket: a workload that listened serves TCP on its
        // ports (its datagram sockets are most likely a resolver's); one that never listened
        // but bound datagram sockets serves UDP. A server of both is told to add UDP.
        let known = family_protocols(network, family);
        if known.is_none() {
            guessed_families.insert(family);
        }
        let udp = known.as_ref().is_some_and(|k| k.contains(&Protocol::Udp));
        if network.listens {
            a.ingress.insert((Protocol::Tcp, port));
            udp_unsure |= udp;
        } else if udp {
            a.ingress.insert((Protocol::Udp, port));
        }
    }
    for c in &network.connected {
        if c.starts_with("AF_UNIX /run/systemd/resolve/") {
            a.dns = true;
            continue;
        }
        let Some((family, ip, port)) = parse_inet(c) else {
            continue;
        };
        if port == DNS_PORT {
            a.dns = true;
            continue;
        }
        if port == 0 || pod_local(&ip) {
            continue;
        }
        let protos = match family_protocols(network, family) {
            Some(k) if !k.is_empty() => k,
            _ => {
                guessed_families.insert(family);
                both.clone()
            }
        };
        udp_egress_unsure |= protos.len() > 1;
        let bits = if ip.is_ipv4() { 32 } else { 128 };
        let ports = a.egress.entry(format!("{ip}/{bits}")).or_default();
        for p in protos {
            ports.insert((p, port));
        }
    }
    if udp_unsure {
        a.notes.push(
            "the workload listened (TCP) and also created UDP sockets: its bound ports are allowed for TCP only; \
             add UDP for a port it serves over UDP too"
                .to_owned(),
        );
    }
    if a.ingress.is_empty() {
        a.notes
            .push("no port was listened on outside loopback: all ingress is denied".to_owned());
    } else {
        a.notes.push(
            "ingress: the recording does not see who connects, so the listening ports are open to every peer; \
             add `from` (podSelector/namespaceSelector) to narrow them"
                .to_owned(),
        );
    }
    if !a.egress.is_empty() {
        a.notes.push(
            "egress: the addresses are those the recording's network gave; in a cluster, replace the ipBlocks of \
             peers that are pods or Services with podSelector/namespaceSelector peers"
                .to_owned(),
        );
    }
    if udp_egress_unsure {
        a.notes.push(
            "egress ports are allowed for TCP and UDP where the workload created both kinds of socket (its \
             datagram sockets may only have been a resolver's): drop UDP for peers that speak only TCP"
                .to_owned(),
        );
    }
    if a.dns {
        a.notes.push(
            "DNS: the workload connected to port 53 (or systemd-resolved), so egress to kube-dns (UDP and TCP 53) \
             is allowed; the recording does not see which names were resolved, nor lookups sent without connect \
             (sendto) or answered from /etc/hosts"
                .to_owned(),
        );
    } else {
        a.notes.push(
            "DNS: no connection to port 53 was seen, so no DNS egress is allowed (a resolver that sends without \
             connect, e.g. musl's, is not seen: add the rule if the workload resolves names)"
                .to_owned(),
        );
    }
    for f in guessed_families {
        a.notes.push(format!(
            "no {f} socket was created during the recording (made before it started): its egress ports are \
             allowed for TCP and UDP, its bound ports for TCP when it listened"
        ));
    }
    a
}

fn ports(set: &BTreeSet<(Protocol, u16)>) -> Vec<NetworkPolicyPort> {
    set.iter()
        .map(|(proto, port)| NetworkPolicyPort {
            protocol: Some(proto.name().to_owned()),
            port: Some(IntOrString::Int(i32::from(*port))),
            end_port: None,
        })
        .collect()
}

/// The pods the policy selects: `app: NAME`, the label kubernetes.yaml's workload carries.
pub fn pod_selector(k8s_name: &str) -> LabelSelector {
    LabelSelector {
        match_labels: Some([("app".to_owned(), k8s_name.to_owned())].into()),
        match_expressions: None,
    }
}

/// The NetworkPolicy object. `k8s_name` must already be a DNS-1123 label
/// (`kubernetes::k8s_name`), which is also a valid label value.
pub fn network_policy(k8s_name: &str, a: &NetworkAdvice) -> NetworkPolicy {
    let mut egress: Vec<NetworkPolicyEgressRule> = a
        .egress
        .iter()
        .map(|(cidr, p)| NetworkPolicyEgressRule {
            to: Some(vec![NetworkPolicyPeer {
                ip_block: Some(IPBlock {
                    cidr: cidr.clone(),
                    except: None,
                }),
                ..Default::default()
            }]),
            ports: Some(ports(p)),
        })
        .collect();
    if a.dns {
        egress.push(NetworkPolicyEgressRule {
            to: Some(vec![NetworkPolicyPeer {
                namespace_selector: Some(LabelSelector {
                    match_labels: Some(
                        [(
                            "kubernetes.io/metadata.name".to_owned(),
                            "kube-system".to_owned(),
                        )]
                        .into(),
                    ),
                    match_expressions: None,
                }),
                pod_selector: Some(LabelSelector {
                    match_labels: Some([("k8s-app".to_owned(), "kube-dns".to_owned())].into()),
                    match_expressions: None,
                }),
                ip_block: None,
            }]),
            ports: Some(ports(
                &[(Protocol::Udp, DNS_PORT), (Protocol::Tcp, DNS_PORT)].into(),
            )),
        });
    }
    let ingress: Vec<NetworkPolicyIngressRule> = if a.ingress.is_empty() {
        Vec::new()
    } else {
        vec![NetworkPolicyIngressRule {
            from: None,
            ports: Some(ports(&a.ingress)),
        }]
    };
    NetworkPolicy {
        metadata: ObjectMeta {
            name: Some(k8s_name.to_owned()),
            labels: Some([("app".to_owned(), k8s_name.to_owned())].into()),
            ..Default::default()
        },
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(pod_selector(k8s_name)),
            policy_types: Some(vec!["Ingress".to_owned(), "Egress".to_owned()]),
            ingress: Some(ingress),
            egress: Some(egress),
        }),
    }
}

/// `networkpolicy.yaml`: the policy, after comments saying how it was made.
pub fn network_policy_yaml(k8s_name: &str, network: &Network) -> anyhow::Result<String> {
    let a = advice(network);
    let body = serde_yaml_ng::to_string(&network_policy(k8s_name, &a))?;
    let notes: String = a
        .notes
        .iter()
        .map(|n| format!("# {}\n", comment_safe(n)))
        .collect();
    Ok(format!(
        "# NetworkPolicy made by profiler from a recording's binds and connections:\n\
         #   kubectl apply -n NAMESPACE -f networkpolicy.yaml\n\
         # It selects the pods labelled app: {k8s_name}; loopback traffic stays in the pod and needs no rule.\n{notes}{body}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(sockets: &[&str], bound: &[&str], connected: &[&str], listens: bool) -> Network {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect();
        Network {
            sockets: s(sockets),
            bound: s(bound),
            bound_ports: bound
                .iter()
                .filter_map(|b| parse_inet(b).map(|(_, _, p)| p))
                .filter(|p| *p != 0)
                .collect(),
            listens,
            connected: s(connected),
        }
    }

    #[test]
    fn parses_recorded_addresses() {
        assert_eq!(
            parse_inet("AF_INET 10.1.2.3:5432"),
            Some(("AF_INET", "10.1.2.3".parse().unwrap(), 5432))
        );
        assert_eq!(
            parse_inet("AF_INET6 [2001:db8::7]:443"),
            Some(("AF_INET6", "2001:db8::7".parse().unwrap(), 443))
        );
        // A dual-stack socket reaching an IPv4 peer: the network sees the IPv4 address.
        assert_eq!(
            parse_inet("AF_INET6 [::ffff:192.0.2.9]:80"),
            Some(("AF_INET6", "192.0.2.9".parse().unwrap(), 80))
        );
        assert_eq!(parse_inet("AF_UNIX /run/app.sock"), None);
        assert_eq!(parse_inet("AF_INET not-an-address"), None);
        assert_eq!(parse_inet("family 16"), None);
    }

    #[test]
    fn listening_server_with_a_database_client_and_dns() {
        let n = net(
            &[
                "AF_INET/SOCK_STREAM/0",
                "AF_INET6/SOCK_STREAM/0",
                "AF_INET/SOCK_DGRAM/0",
            ],
            &[
                "AF_INET 0.0.0.0:8080",
                "AF_INET 127.0.0.1:9000",
                "AF_INET6 [::]:8443",
            ],
            &[
                "AF_INET 10.0.0.5:5432",
                "AF_INET 127.0.0.1:6379",
                "AF_INET 127.0.0.53:53",
                "AF_INET6 [2001:db8::7]:443",
                "AF_UNIX /run/app.sock",
            ],
            true,
        );
        let a = advice(&n);
        // Loopback binds and connections are pod-local; the DNS server of the recording host
        // is not a destination of the cluster. The workload listened: its ports are TCP, and
        // its datagram socket (a resolver's, most likely) is named in a note.
        assert_eq!(
            a.ingress,
            [(Protocol::Tcp, 8080), (Protocol::Tcp, 8443)].into()
        );
        assert!(
            a.notes.iter().any(|n| n.contains("add UDP")),
            "{:?}",
            a.notes
        );
        assert_eq!(
            a.egress,
            [
                (
                    "10.0.0.5/32".to_owned(),
                    [(Protocol::Tcp, 5432), (Protocol::Udp, 5432)].into()
                ),
                ("2001:db8::7/128".to_owned(), [(Protocol::Tcp, 443)].into()),
            ]
            .into()
        );
        assert!(a.dns);
    }

    #[test]
    fn a_client_only_workload_gets_no_ingress_and_no_dns_without_port_53() {
        let n = net(
            &["AF_INET/SOCK_STREAM/0"],
            &[],
            &["AF_INET 192.0.2.1:80"],
            false,
        );
        let a = advice(&n);
        assert!(a.ingress.is_empty());
        assert!(!a.dns);
        assert!(a.notes.iter().any(|n| n.contains("all ingress is denied")));
        assert!(
            a.notes
                .iter()
                .any(|n| n.contains("no connection to port 53"))
        );
        let p = network_policy("web", &a);
        let spec = p.spec.unwrap();
        assert_eq!(spec.ingress, Some(vec![]));
        assert_eq!(spec.egress.as_ref().unwrap().len(), 1);
    }

    #[test]
    fn bound_port_without_listen_or_datagram_socket_is_no_ingress() {
        // A client that bound a source port before connecting is not a server.
        let n = net(
            &["AF_INET/SOCK_STREAM/0"],
            &["AF_INET 0.0.0.0:40000"],
            &[],
            false,
        );
        assert!(advice(&n).ingress.is_empty());
    }

    #[test]
    fn a_udp_server_gets_udp_ingress() {
        let n = net(
            &["AF_INET/SOCK_DGRAM/0"],
            &["AF_INET 0.0.0.0:5353"],
            &[],
            false,
        );
        assert_eq!(advice(&n).ingress, [(Protocol::Udp, 5353)].into());
    }

    #[test]
    fn systemd_resolved_socket_counts_as_dns() {
        let n = net(
            &["AF_UNIX/SOCK_STREAM/0"],
            &[],
            &["AF_UNIX /run/systemd/resolve/io.systemd.Resolve"],
            false,
        );
        assert!(advice(&n).dns);
    }

    #[test]
    fn unknown_socket_types_allow_both_protocols_and_say_so() {
        let n = net(&[], &[], &["AF_INET 198.51.100.4:9999"], false);
        let a = advice(&n);
        assert_eq!(
            a.egress["198.51.100.4/32"],
            [(Protocol::Tcp, 9999), (Protocol::Udp, 9999)].into()
        );
        assert!(
            a.notes
                .iter()
                .any(|n| n.contains("no AF_INET socket was created")),
            "{:?}",
            a.notes
        );
    }
}
