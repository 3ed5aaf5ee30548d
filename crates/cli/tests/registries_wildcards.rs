//! registries.conf wildcard prefixes (`prefix = "*.corp.test"`) end to end,
//! with loopback only: a wildcard entry's `location` and a wildcard
//! entry's mirror both lead to berth's registry on 127.0.0.1 (no name
//! under `.test` is ever looked up), a blocked wildcard refuses a pull
//! before any connection, and an invalid wildcard is refused naming the
//! file and the entry.

mod common;

use common::registry::Serve;
use common::Env;

#[test]
fn wildcard_prefixes_in_registries_conf() {
    let env = Env::new();
    let reg = Serve::start(&env.path("storage"), &[]);
    env.import_busybox("bb", &[]);
    let digest = env
        .ok(&["push", "-q", "bb", &format!("{}/corp/bb:1", reg.addr)])
        .trim()
        .to_string();
    let conf = env.path("registries.conf");
    std::fs::write(
        &conf,
        format!(
            r#"
[[registry]]
prefix = "*.corp.test"
location = "{addr}/corp"

[[registry]]
prefix = "*.mirrored.test"
[[registry.mirror]]
location = "{addr}/corp"

[[registry]]
prefix = "*.blocked.test"
blocked = true
"#,
            addr = reg.addr
        ),
    )
    .unwrap();
    let conf_arg = conf.to_str().unwrap();

    let pulled = env.ok(&[
        "pull",
        "-q",
        "--registries-conf",
        conf_arg,
        "app.corp.test/bb:1",
    ]);
    assert_eq!(pulled.trim(), digest);
    let pulled = env.ok(&[
        "pull",
        "-q",
        "--registries-conf",
        conf_arg,
        "eu.dc.mirrored.test/bb:1",
    ]);
    assert_eq!(pulled.trim(), digest);
    let images = env.ok(&["images"]);
    assert!(
        images.contains("app.corp.test/bb") && images.contains("eu.dc.mirrored.test/bb"),
        "the images keep the names asked for: {images}"
    );

    let out = env.berth(&["pull", "--registries-conf", conf_arg, "x.blocked.test/bb:1"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{}", env.describe(&out));
    assert!(
        err.contains("x.blocked.test") && err.contains("blocked in registries.conf"),
        "{err}"
    );

    std::fs::write(
        &conf,
        "[[registry]]\nprefix = \"*.corp.test/team\"\nlocation = \"127.0.0.1:1/x\"\n",
    )
    .unwrap();
    let out = env.berth(&[
        "pull",
        "--registries-conf",
        conf_arg,
        "app.corp.test/team/bb:1",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{}", env.describe(&out));
    assert!(
        err.contains(conf_arg)
            && err.contains("[[registry]] entry 1")
            && err.contains("\"*.corp.test/team\"")
            && err.contains("*.DOMAIN"),
        "{err}"
    );
}
