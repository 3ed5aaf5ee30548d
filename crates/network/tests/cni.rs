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
