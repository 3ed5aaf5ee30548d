//! `berth run`'s networks, end to end with the real CNI plugins
//! (/usr/lib/cni), real bridges, veths and iptables rules: published
//! ports answering on the host's loopback, containers reaching each
//! other by address and by name, none / host / container: / ns: modes, the
//! hosts and resolv.conf files, address release over 300 runs, and gc
//! after a crash. Traffic goes only to 127.0.0.1 and to addresses inside
//! the namespaces the tests make. Each test creates its own network (its
//! own bridge and subnet, chosen free by berth) and removes it, bridge
//! included; every per-container iptables rule is checked gone.

mod common;

use std::net::TcpListener;
use std::path::Path;
use std::process::Command;

use common::{require_peer, Env};
use serde_json::Value;

/// A test's network, removed (with its bridge) when the test ends.
struct Net<'e> {
    env: &'e Env,
    name: String,
    bridge: String,
}

impl<'e> Net<'e> {
    fn create(env: &'e Env, name: &str, extra: &[&str]) -> Net<'e> {
        let mut args = vec!["network", "create"];
        args.extend_from_slice(extra);
        args.push(name);
        env.ok(&args);
        let info: Value = serde_json::from_str(&env.ok(&["network", "inspect", name])).unwrap();
        Net {
            env,
            name: name.to_string(),
            bridge: info[0]["bridge"].as_str().unwrap().to_string(),
        }
    }
}

/// Removes the test's containers, then the network: its rules, its bridge
/// and its files, even when a container could not be removed (then `network
/// rm` refuses, and the rules and bridge go by hand).
impl Drop for Net<'_> {
    fn drop(&mut self) {
        for c in self.env.container_records() {
            let _ = self
                .env
                .berth(&["rm", "-f", c["id"].as_str().unwrap_or("")]);
        }
        let nets = berth_network::Networks::open(self.env.root().join("networks"));
        if let Ok(net) = nets.get(&self.name) {
            let _ = berth_network::rules::remove(&net);
            let _ = berth_network::netns::delete_link(&net.bridge);
        }
        let _ = self.env.berth(&["network", "rm", &self.name]);
        if !self.bridge.is_empty() {
            let _ = berth_network::netns::delete_link(&self.bridge);
        }
    }
}

fn env_with_busybox() -> Env {
    require_peer("iptables");
    for plugin in ["bridge", "host-local", "portmap", "firewall"] {
        assert!(
            Path::new("/usr/lib/cni").join(plugin).exists(),
            "this test needs the CNI plugin {plugin}: run scripts/install-test-deps (containernetworking-plugins)"
        );
    }
    let env = Env::new();
    env.import_busybox("bb", &[]);
    env
}

/// Every iptables rule (all tables) that mentions container `id`.
fn rules_of(id: &str) -> Vec<String> {
    let out = Command::new(require_peer("iptables-save"))
        .output()
        .expect("iptables-save");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains(id))
        .map(String::from)
        .collect()
}

/// What `berth inspect NAME` says of its network.
fn network_of(env: &Env, name: &str) -> Value {
    let v: Value = serde_json::from_str(&env.ok(&["inspect", name])).unwrap();
    let v = if v.is_array() { v[0].clone() } else { v };
    v["NetworkSettings"].clone()
}

fn id_of(env: &Env, name: &str) -> String {
    let v: Value = serde_json::from_str(&env.ok(&["inspect", name])).unwrap();
    let v = if v.is_array() { v[0].clone() } else { v };
    v["Id"].as_str().unwrap().to_string()
}

/// Nothing of any container's network is left: no attachment record, no
/// pinned namespace.
fn assert_no_attachments(env: &Env) {
    let dir = env.root().join("networks/attachments");
    let left: Vec<_> = std::fs::read_dir(&dir)
        .into_iter()
        .flatten()
        .flatten()
        .collect();
    assert!(left.is_empty(), "attachments left: {left:?}");
    let ns = env.root().join("run/netns");
    let left: Vec<_> = std::fs::read_dir(&ns)
        .into_iter()
        .flatten()
        .flatten()
        .collect();
    assert!(left.is_empty(), "namespaces left: {left:?}");
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// GETs `url` with curl until it answers (the server starts in the
/// background), at most 100 tries; returns the body.
fn curl_until_up(url: &str) -> String {
    let curl = require_peer("curl");
    let mut last = String::new();
    for _ in 0..100 {
        let out = Command::new(&curl)
            .args(["-sS", "--max-time", "5", url])
            .output()
            .expect("curl");
        if out.status.success() {
            return String::from_utf8_lossy(&out.stdout).into_owned();
        }
        last = String::from_utf8_lossy(&out.stderr).into_owned();
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    panic!("{url} never answered: {last}");
}

#[test]
fn a_published_port_answers_on_the_hosts_loopback() {
    let env = env_with_busybox();
    let net = Net::create(&env, "web", &[]);
    let www = env.path("www");
    std::fs::create_dir_all(&www).unwrap();
    std::fs::write(www.join("index.html"), "hello from httpd\n").unwrap();
    let port = free_port();
    let publish = format!("127.0.0.1:{port}:80");
    let volume = format!("{}:/www:ro", www.display());
    env.ok(&[
        "run",
        "-d",
        "--name",
        "httpd",
        "--network",
        &net.name,
        "-p",
        &publish,
        "-v",
        &volume,
        "bb",
        "httpd",
        "-f",
        "-p",
        "80",
        "-h",
        "/www",
    ]);
    let id = id_of(&env, "httpd");
    // The same host port cannot be published twice.
    let clash = env.berth(&[
        "run",
        "--rm",
        "--network",
        &net.name,
        "-p",
        &publish,
        "bb",
        "true",
    ]);
    assert_eq!(clash.status.code(), Some(125), "{}", env.describe(&clash));
    let err = String::from_utf8_lossy(&clash.stderr);
    assert!(
        err.contains(&format!(
            "host port {port} is already published by container {}",
            &id[..12]
        )),
        "{err}"
    );
    let body = curl_until_up(&format!("http://127.0.0.1:{port}/"));
    assert_eq!(body, "hello from httpd\n");
    let settings = network_of(&env, "httpd");
    assert_eq!(settings["Network"], "web");
    assert_eq!(settings["Ports"][0]["hostPort"], port);
    assert!(!rules_of(&id).is_empty(), "portmap wrote no rules for {id}");
    // The network's own rules: masquerading out of its subnet, FORWARD accepts.
    let ours = rules_of(&format!("berth:{}", net.bridge));
    assert!(ours.iter().any(|r| r.contains("-j MASQUERADE")), "{ours:?}");
    assert!(ours.iter().any(|r| r.contains("-A FORWARD")), "{ours:?}");

    // stop detaches (DEL: rules and namespace gone), start attaches again.
    env.ok(&["stop", "-t", "1", "httpd"]);
    assert_eq!(rules_of(&id), Vec::<String>::new());
    assert_no_attachments(&env);
    env.ok(&["start", "httpd"]);
    assert_eq!(
        curl_until_up(&format!("http://127.0.0.1:{port}/")),
        "hello from httpd\n"
    );

    env.ok(&["rm", "-f", "httpd"]);
    assert_eq!(rules_of(&id), Vec::<String>::new(), "rules left after rm");
    assert_no_attachments(&env);
    env.assert_no_containers_left();
}

#[test]
fn containers_on_one_bridge_reach_each_other_by_address_and_by_name() {
    let env = env_with_busybox();
    let net = Net::create(&env, "pair", &[]);
    let www = env.path("www");
    std::fs::create_dir_all(&www).unwrap();
    std::fs::write(www.join("index.html"), "served by alpha\n").unwrap();
    let volume = format!("{}:/www:ro", www.display());
    env.ok(&[
        "run",
        "-d",
        "--name",
        "alpha",
        "--network",
        &net.name,
        "-v",
        &volume,
        "bb",
        "httpd",
        "-f",
        "-p",
        "80",
        "-h",
        "/www",
    ]);
    env.ok(&[
        "run",
        "-d",
        "--name",
        "beta",
        "--network",
        &net.name,
        "bb",
        "sleep",
        "1000",
    ]);
    let alpha_ip = network_of(&env, "alpha")["IPAddress"]
        .as_str()
        .unwrap()
        .to_string();
    let beta_ip = network_of(&env, "beta")["IPAddress"]
        .as_str()
        .unwrap()
        .to_string();
    assert_ne!(alpha_ip, beta_ip);
    let fetch = "for i in $(seq 100); do wget -qO- http://$0/ && exit 0; sleep 0.05; done; exit 1";
    for target in [alpha_ip.as_str(), "alpha"] {
        let out = env.ok(&["exec", "beta", "sh", "-c", fetch, target]);
        assert_eq!(out, "served by alpha\n", "beta fetching from {target}");
    }
    // Both hosts files name the other, which alpha learnt when beta came.
    let hosts = env.ok(&["exec", "alpha", "cat", "/etc/hosts"]);
    assert!(hosts.contains(&format!("{beta_ip}\tbeta")), "{hosts}");
    let out = env.ok(&["exec", "alpha", "ping", "-c", "1", "-W", "5", "beta"]);
    assert!(out.contains(&beta_ip), "{out}");
    // beta's removal takes it out of alpha's file.
    env.ok(&["rm", "-f", "beta"]);
    let hosts = env.ok(&["exec", "alpha", "cat", "/etc/hosts"]);
    assert!(!hosts.contains("beta"), "{hosts}");
    // container:alpha shares alpha's namespace and files.
    let out = env.ok(&[
        "run",
        "--rm",
        "--network",
        "container:alpha",
        "bb",
        "sh",
        "-c",
        "ip -o -4 addr show eth0; cat /etc/hostname",
    ]);
    assert!(out.contains(&format!("inet {alpha_ip}/")), "{out}");
    let err = env.berth(&["run", "--rm", "--network", "container:nobody", "bb", "true"]);
    assert!(
        String::from_utf8_lossy(&err.stderr).contains("\"nobody\""),
        "{}",
        env.describe(&err)
    );
}

#[test]
fn none_has_only_lo_up_host_sees_the_hosts_interfaces_ns_joins_a_path() {
    let env = env_with_busybox();
    let out = env.ok(&["run", "--rm", "--network", "none", "bb", "ip", "-o", "link"]);
    let links: Vec<&str> = out.lines().collect();
    assert_eq!(links.len(), 1, "{out}");
    assert!(links[0].starts_with("1: lo: <LOOPBACK,UP"), "{out}");

    // Other tests add and remove interfaces meanwhile: the container sees
    // every interface the host had before and after, and none it never had.
    let links = || -> std::collections::BTreeSet<String> {
        std::fs::read_dir("/sys/class/net")
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect()
    };
    let before = links();
    let out = env.ok(&[
        "run",
        "--rm",
        "--network",
        "host",
        "bb",
        "ls",
        "/sys/class/net",
    ]);
    let after = links();
    let seen: std::collections::BTreeSet<String> =
        out.split_whitespace().map(String::from).collect();
    let stable: Vec<_> = before.intersection(&after).collect();
    assert!(
        stable.iter().all(|l| seen.contains(*l)),
        "{seen:?} lacks some of {stable:?}"
    );
    assert!(
        seen.iter().all(|l| before.contains(l) || after.contains(l)),
        "{seen:?}"
    );
    assert!(seen.contains("eth0") || seen.len() > 1, "{seen:?}");
    // ns:PATH joins a namespace the test pinned (its lo left as it is: down).
    let ns = env.path("pinned-ns");
    berth_network::netns::create(&ns, || Ok(())).unwrap();
    let spec = format!("ns:{}", ns.display());
    let out = env.ok(&["run", "--rm", "--network", &spec, "bb", "ip", "-o", "link"]);
    berth_network::netns::remove(&ns).unwrap();
    assert_eq!(out.lines().count(), 1, "{out}");
    assert!(out.starts_with("1: lo: <LOOPBACK>"), "{out}");
    let not_ns = format!("ns:{}", env.root().display());
    let err = env.berth(&["run", "--rm", "--network", &not_ns, "bb", "true"]);
    assert!(
        String::from_utf8_lossy(&err.stderr).contains("not a namespace file"),
        "{}",
        env.describe(&err)
    );
    let hostname = env.ok(&["run", "--rm", "--network", "host", "bb", "hostname"]);
    assert_eq!(
        hostname.trim(),
        nix::unistd::gethostname().unwrap().to_string_lossy()
    );
    let err = env.berth(&[
        "run",
        "--rm",
        "--network",
        "none",
        "-p",
        "8080:80",
        "bb",
        "true",
    ]);
    assert_eq!(err.status.code(), Some(125));
    assert!(String::from_utf8_lossy(&err.stderr).contains("bridge network"));
    env.assert_no_containers_left();
}

#[test]
fn hosts_hostname_and_resolv_conf_follow_the_flags() {
    let env = env_with_busybox();
    let net = Net::create(&env, "files", &[]);
    let out = env.ok(&[
        "run",
        "--rm",
        "--network",
        &net.name,
        "--hostname",
        "box",
        "--name",
        "files-test",
        "--dns",
        "192.0.2.53",
        "--dns-search",
        "example.org",
        "--dns-option",
        "ndots:2",
        "--add-host",
        "db.internal:10.1.2.3",
        "bb",
        "sh",
        "-c",
        "cat /etc/resolv.conf; echo ---; cat /etc/hosts; echo ---; cat /etc/hostname; hostname",
    ]);
    let parts: Vec<&str> = out.split("---\n").collect();
    assert_eq!(
        parts[0],
        "search example.org\nnameserver 192.0.2.53\noptions ndots:2\n"
    );
    assert!(parts[1].contains("10.1.2.3\tdb.internal\n"), "{out}");
    assert!(parts[1].contains("\tbox files-test\n"), "{out}");
    assert!(parts[1].contains("\thost.containers.internal\n"), "{out}");
    assert_eq!(parts[2], "box\nbox\n");
    // Without --dns the host's servers are used, minus loopback ones.
    let out = env.ok(&[
        "run",
        "--rm",
        "--network",
        &net.name,
        "bb",
        "cat",
        "/etc/resolv.conf",
    ]);
    assert!(out.contains("nameserver "), "{out}");
    assert!(!out.contains("nameserver 127."), "{out}");
    for (flag, value) in [
        ("--dns", "nope"),
        ("--add-host", "db"),
        ("-p", "80"),
        ("--network", "a/b"),
    ] {
        let err = env.berth(&["run", "--rm", flag, value, "bb", "true"]);
        assert_eq!(err.status.code(), Some(125), "{flag} {value}");
        assert!(
            String::from_utf8_lossy(&err.stderr).contains(value),
            "{}",
            env.describe(&err)
        );
    }
}

#[test]
fn addresses_are_released_after_rm_over_300_runs() {
    let env = env_with_busybox();
    // 253 addresses: 300 runs exhaust it unless each rm gives its address back.
    let net = Net::create(&env, "churn", &[]);
    let info: Value = serde_json::from_str(&env.ok(&["network", "inspect", "churn"])).unwrap();
    assert!(info[0]["subnet"].as_str().unwrap().ends_with("/24"));
    for i in 0..300 {
        let out = env.berth(&["run", "--rm", "--network", &net.name, "bb", "true"]);
        assert!(out.status.success(), "run {i}: {}", env.describe(&out));
    }
    let ipam = env.root().join("networks/ipam/churn");
    let held: Vec<String> = std::fs::read_dir(&ipam)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.parse::<std::net::Ipv4Addr>().is_ok())
        .collect();
    assert!(held.is_empty(), "addresses still allocated: {held:?}");
    assert_no_attachments(&env);
    env.assert_no_containers_left();
}

#[test]
fn gc_detaches_the_network_of_a_killed_run() {
    let env = env_with_busybox();
    let net = Net::create(&env, "crash", &[]);
    let mut berth = env.spawn_until_ready(&[
        "run",
        "--network",
        &net.name,
        "--name",
        "doomed",
        "bb",
        "sh",
        "-c",
        "echo ready; exec sleep 1000",
    ]);
    let id = id_of(&env, "doomed");
    let ip = network_of(&env, "doomed")["IPAddress"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(env.root().join("networks/ipam/crash").join(&ip).exists());
    berth.kill().unwrap();
    berth.wait().unwrap();
    // The address, namespace and rules are still held: berth died.
    assert!(env.root().join(format!("run/netns/{id}")).exists());
    let out = env.ok(&["gc"]);
    assert!(out.contains("reaped abandoned container: doomed"), "{out}");
    assert!(
        !env.root().join("networks/ipam/crash").join(&ip).exists(),
        "address {ip} still allocated"
    );
    assert_eq!(rules_of(&id), Vec::<String>::new());
    assert_no_attachments(&env);
    env.ok(&["rm", "doomed"]);
    env.assert_no_containers_left();
}

#[test]
fn networks_are_created_listed_inspected_and_removed() {
    let env = env_with_busybox();
    // A subnet the host routes already is refused, naming the route.
    let routes = std::fs::read_to_string("/proc/net/route").unwrap();
    let taken = routes.lines().skip(1).find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        let mask = u32::from_be(u32::from_str_radix(f[7], 16).ok()?);
        let dest = u32::from_be(u32::from_str_radix(f[1], 16).ok()?);
        (mask != 0).then(|| format!("{}/{}", std::net::Ipv4Addr::from(dest), mask.count_ones()))
    });
    if let Some(subnet) = taken {
        let out = env.berth(&["network", "create", "--subnet", &subnet, "clash"]);
        assert!(!out.status.success());
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("overlaps"),
            "{}",
            env.describe(&out)
        );
    }
    let net = Net::create(&env, "lab", &["--internal"]);
    let out = env.berth(&["network", "create", "lab"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("already exists"));
    let out = env.berth(&["network", "create", "--subnet", "10.89.0.1/24", "bad"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("did you mean 10.89.0.0/24"));
    let ls = env.ok(&["network", "ls"]);
    assert!(
        ls.starts_with("NAME") && ls.contains("lab") && ls.contains(&net.bridge),
        "{ls}"
    );
    let info: Value = serde_json::from_str(&env.ok(&["network", "inspect", "lab"])).unwrap();
    assert_eq!(info[0]["internal"], true);
    assert_eq!(info[0]["config"]["plugins"][0]["type"], "bridge");
    assert!(env.root().join("networks/lab.conflist").exists());

    env.ok(&[
        "run",
        "-d",
        "--name",
        "user",
        "--network",
        "lab",
        "bb",
        "sleep",
        "1000",
    ]);
    // An internal network has no route out, and nothing masquerades for it.
    let routes = env.ok(&["exec", "user", "ip", "route"]);
    assert!(!routes.contains("default"), "{routes}");
    let ours = rules_of(&format!("berth:{}", net.bridge));
    assert!(!ours.iter().any(|r| r.contains("MASQUERADE")), "{ours:?}");
    assert!(ours.iter().any(|r| r.contains("-A FORWARD")), "{ours:?}");
    assert!(Path::new("/sys/class/net").join(&net.bridge).exists());
    let out = env.berth(&["network", "rm", "lab"]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("in use"),
        "{}",
        env.describe(&out)
    );
    env.ok(&["rm", "-f", "user"]);
    env.ok(&["network", "rm", "lab"]);
    assert!(
        !Path::new("/sys/class/net").join(&net.bridge).exists(),
        "bridge left"
    );
    let ours = rules_of(&format!("berth:{}", net.bridge));
    assert!(ours.is_empty(), "rules left: {ours:?}");
    assert!(!env.root().join("networks/lab.conflist").exists());
    let out = env.berth(&["run", "--rm", "--network", "lab", "bb", "true"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("network \"lab\" not found"));
}

#[test]
fn the_default_network_is_made_on_first_use() {
    let env = env_with_busybox();
    // Removed at the end whatever happens (its bridge is looked up then).
    let _net = Net {
        env: &env,
        name: "berth".into(),
        bridge: String::new(),
    };
    let out = env.ok(&[
        "run",
        "--rm",
        "--network",
        "bridge",
        "bb",
        "ip",
        "-o",
        "-4",
        "addr",
        "show",
        "eth0",
    ]);
    let info: Value = serde_json::from_str(&env.ok(&["network", "inspect", "berth"])).unwrap();
    let subnet = info[0]["subnet"].as_str().unwrap();
    assert!(
        subnet.starts_with("10.89.") && subnet.ends_with(".0/24"),
        "{subnet}"
    );
    let prefix = subnet.trim_end_matches("0/24");
    assert!(out.contains(&format!("inet {prefix}")), "{out}");
    assert_no_attachments(&env);
}

#[test]
fn gc_detaches_an_attachment_whose_container_record_is_gone() {
    // What a crash between CNI ADD and the container's record leaves.
    let env = env_with_busybox();
    let _net = Net::create(&env, "orphan", &[]);
    let nets = berth_network::Networks::open(env.root().join("networks"));
    let id = "0000000000000000000000000000abcd";
    let ns = env.root().join("run/netns").join(id);
    std::fs::create_dir_all(ns.parent().unwrap()).unwrap();
    berth_network::netns::create(&ns, || Ok(())).unwrap();
    let attached = nets.attach("orphan", id, &ns, &[]).unwrap();
    let ip = attached.ipv4().unwrap().0.to_string();
    let held = env.root().join("networks/ipam/orphan").join(&ip);
    assert!(held.exists());
    let out = env.ok(&["gc"]);
    assert!(
        out.contains(&format!(
            "detached the network of a removed container: {id}"
        )),
        "{out}"
    );
    assert!(!held.exists(), "address {ip} still allocated");
    assert_no_attachments(&env);
}

#[test]
fn a_hostname_longer_than_the_kernel_takes_is_refused_before_the_run() {
    let env = env_with_busybox();
    // Labels of 32: a valid DNS name, one byte past the kernel's 64.
    let long = format!("{}.{}", "h".repeat(32), "h".repeat(32));
    let out = env.berth(&[
        "run",
        "--rm",
        "--network",
        "none",
        "--hostname",
        &long,
        "bb",
        "true",
    ]);
    assert_eq!(out.status.code(), Some(125), "{}", env.describe(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("hostname \"{long}\"")) && err.contains("64"),
        "{err}"
    );
    let most = format!("{}.{}", "h".repeat(32), "h".repeat(31));
    let out = env.ok(&[
        "run",
        "--rm",
        "--network",
        "none",
        "--hostname",
        &most,
        "bb",
        "hostname",
    ]);
    assert_eq!(out.trim(), most);
    env.assert_no_containers_left();
}
