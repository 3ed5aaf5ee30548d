//! The CNI exec protocol against Debian's real plugins: ADD gives the
//! namespace an address on a new bridge, CHECK passes while the
//! attachment is as ADD made it and fails once the interface is gone, DEL
//! frees the address (host-local's file under the data root) and is
//! idempotent. Needs root; traffic stays inside the test's namespace.

use std::path::Path;

use berth_network::{netns, CreateOptions, Networks};

fn require_root_and_plugins() {
    assert!(
        nix::unistd::Uid::effective().is_root(),
        "this test needs root (network namespaces, bridges)"
    );
    for plugin in ["bridge", "host-local", "portmap"] {
        assert!(
            Path::new("/usr/lib/cni").join(plugin).exists(),
            "this test needs the CNI plugin {plugin}: run scripts/install-test-deps"
        );
    }
}

#[test]
fn add_check_del_with_the_real_plugins() {
    require_root_and_plugins();
    let dir = tempfile::tempdir().unwrap();
    let nets = Networks::open(dir.path().join("networks"));
    let net = nets.create("t", &CreateOptions::default()).unwrap();
    let ns = dir.path().join("ns");
    netns::create(&ns, || Ok(())).unwrap();
    assert!(netns::is_namespace(&ns));
    let id = "0123456789abcdef0123456789abcdef";
    let result = std::panic::catch_unwind(|| {
        let a = nets.attach("t", id, &ns, &[]).unwrap();
        let (ip, gw) = a.ipv4().expect("an address");
        assert!(net.subnet.contains(ip), "{ip} outside {}", net.subnet);
        assert_eq!(gw, Some(net.gateway));
        let held = dir.path().join("networks/ipam/t").join(ip.to_string());
        assert!(held.exists(), "host-local keeps {ip} under the data root");
        nets.check(id).unwrap();
        // The bridge plugin's CHECK finds the container's interface gone.
        let del = std::process::Command::new("nsenter")
            .arg(format!("--net={}", ns.display()))
            .args(["ip", "link", "del", "eth0"])
            .status()
            .expect("nsenter (util-linux) and ip (iproute2)");
        assert!(del.success());
        let err = nets.check(id).unwrap_err().to_string();
        assert!(err.contains("CHECK"), "{err}");
        assert_eq!(nets.detach(id).unwrap().as_deref(), Some("t"));
        assert!(!held.exists(), "DEL frees {ip}");
        assert_eq!(nets.detach(id).unwrap(), None);
    });
    let _ = nets.detach(id);
    netns::remove(&ns).unwrap();
    nets.remove("t").unwrap();
    assert!(!netns::link_exists(&net.bridge));
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
}

#[test]
fn every_host_address_but_the_gateway_is_handed_out() {
    require_root_and_plugins();
    let dir = tempfile::tempdir().unwrap();
    let nets = Networks::open(dir.path().join("networks"));
    // A /30 has two host addresses: the gateway is the second.
    let opts = CreateOptions {
        subnet: Some("10.231.77.0/30".parse().unwrap()),
        gateway: Some("10.231.77.2".parse().unwrap()),
        ..CreateOptions::default()
    };
    let net = nets.create("gw2", &opts).unwrap();
    let ns = dir.path().join("ns");
    netns::create(&ns, || Ok(())).unwrap();
    let id = "fedcba9876543210fedcba9876543210";
    let attached = nets.attach("gw2", id, &ns, &[]);
    let _ = nets.detach(id);
    netns::remove(&ns).unwrap();
    nets.remove("gw2").unwrap();
    assert!(!netns::link_exists(&net.bridge));
    let (ip, gw) = attached.unwrap().ipv4().expect("an address");
    assert_eq!(ip.to_string(), "10.231.77.1");
    assert_eq!(gw.map(|g| g.to_string()).as_deref(), Some("10.231.77.2"));
}

#[test]
fn a_network_whose_bridge_another_data_root_took_is_not_attached() {
    require_root_and_plugins();
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (
        Networks::open(dir.path().join("a/networks")),
        Networks::open(dir.path().join("b/networks")),
    );
    let opts = CreateOptions {
        subnet: Some("10.231.78.0/24".parse().unwrap()),
        bridge: Some("bthdup0".into()),
        ..CreateOptions::default()
    };
    a.create("one", &opts).unwrap();
    // A reboot empties /run: data root b, unaware of a's network, takes
    // the same bridge and subnet.
    let reservation = Path::new(berth_network::store::RESERVATIONS).join("bthdup0");
    std::fs::remove_file(&reservation).unwrap();
    b.create("two", &opts).unwrap();
    let (ns_a, ns_b) = (dir.path().join("ns-a"), dir.path().join("ns-b"));
    netns::create(&ns_a, || Ok(())).unwrap();
    netns::create(&ns_b, || Ok(())).unwrap();
    let (id_a, id_b) = (
        "00112233445566778899aabbccddeeff",
        "ffeeddccbbaa99887766554433221100",
    );
    let in_b = b.attach("two", id_b, &ns_b, &[]).map(|_| ());
    let in_a = a.attach("one", id_a, &ns_a, &[]).map(|_| ());
    let _ = a.detach(id_a);
    // Removing a's network leaves b's bridge and reservation alone.
    let removed = a.remove("one");
    let bridge_kept = netns::link_exists("bthdup0");
    let kept = std::fs::read_to_string(&reservation).unwrap_or_default();
    let _ = b.detach(id_b);
    netns::remove(&ns_a).unwrap();
    netns::remove(&ns_b).unwrap();
    b.remove("two").unwrap();
    in_b.unwrap();
    removed.unwrap();
    let err = in_a.unwrap_err().to_string();
    assert!(
        err.contains("bridge bthdup0") && err.contains("two.conflist"),
        "{err}"
    );
    assert!(bridge_kept, "a's rm deleted b's bridge");
    assert!(kept.contains("two.conflist"), "{kept:?}");
    assert!(!reservation.exists() && !netns::link_exists("bthdup0"));
}

#[test]
fn of_containers_publishing_one_port_at_once_one_gets_it() {
    require_root_and_plugins();
    let dir = tempfile::tempdir().unwrap();
    let nets = Networks::open(dir.path().join("networks"));
    let opts = CreateOptions {
        subnet: Some("10.231.79.0/24".parse().unwrap()),
        ..CreateOptions::default()
    };
    nets.create("race", &opts).unwrap();
    let ports = berth_network::parse_publish("127.0.0.1:18431:80").unwrap();
    let ids: Vec<String> = (0..6)
        .map(|n| format!("{n:02}{}", "ab".repeat(15)))
        .collect();
    for id in &ids {
        netns::create(&dir.path().join(id), || Ok(())).unwrap();
    }
    let start = std::sync::Barrier::new(ids.len());
    let results: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = ids
            .iter()
            .map(|id| {
                let (nets, start, ports) = (&nets, &start, &ports);
                let ns = dir.path().join(id);
                s.spawn(move || {
                    start.wait();
                    nets.attach("race", id, &ns, ports).map(|_| ())
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for id in &ids {
        let _ = nets.detach(id);
        netns::remove(&dir.path().join(id)).unwrap();
    }
    nets.remove("race").unwrap();
    let won = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(won, 1, "{results:?}");
    for err in results.iter().filter_map(|r| r.as_ref().err()) {
        assert!(err.to_string().contains("already published"), "{err}");
    }
}

#[test]
fn a_host_port_a_host_process_holds_or_a_foreign_address_is_refused() {
    require_root_and_plugins();
    let dir = tempfile::tempdir().unwrap();
    let nets = Networks::open(dir.path().join("networks"));
    let opts = CreateOptions {
        subnet: Some("10.231.80.0/24".parse().unwrap()),
        ..CreateOptions::default()
    };
    nets.create("held", &opts).unwrap();
    let ns = dir.path().join("ns");
    netns::create(&ns, || Ok(())).unwrap();
    let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let (t, u) = (
        tcp.local_addr().unwrap().port(),
        udp.local_addr().unwrap().port(),
    );
    let id = "0a1b2c3d4e5f60718293a4b5c6d7e8f9";
    let specs = [
        format!("127.0.0.1:{t}:80"),
        format!("{t}:80"),
        format!("127.0.0.1:{u}:53/udp"),
        "192.0.2.77:18432:80".to_string(),
    ];
    let results: Vec<_> = specs
        .iter()
        .map(|spec| {
            let ports = berth_network::parse_publish(spec).unwrap();
            let r = nets.attach("held", id, &ns, &ports).map(|_| ());
            let _ = nets.detach(id);
            r
        })
        .collect();
    netns::remove(&ns).unwrap();
    nets.remove("held").unwrap();
    for (spec, r) in specs.iter().zip(&results) {
        let err = r.as_ref().map(|_| ()).unwrap_err().to_string();
        let why = if spec.starts_with("192.0.2.77") {
            "not one of this host's"
        } else {
            "in use by a process of the host"
        };
        assert!(err.contains(why), "-p {spec}: {err}");
    }
}
