//! Writes the initial seed inputs of every fuzz target into
//! `fuzz/corpus/<target>/seed-*` (or the directory given as the first
//! argument): real tar layers (whiteouts, hardlinks, symlinks, PAX and GNU
//! long names, devices, hostile names), gzip and zstd streams, manifests,
//! indexes, configs, OCI and docker-save archives, references, routes,
//! headers, tokens, htpasswd files and runtime specs.
//!
//! `cargo run -p berth-fuzz --example seeds` (as root: the archives are
//! made with `berth import` / `berth save` into a scratch store).

use std::io::Write;
use std::path::{Path, PathBuf};

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use sha2::{Digest as _, Sha256};

type Seeds = Vec<(String, Vec<u8>)>;

fn seed(out: &mut Seeds, name: &str, data: impl Into<Vec<u8>>) {
    out.push((name.to_string(), data.into()));
}

/// Tar entry types used below.
#[derive(Clone, Copy)]
enum T {
    File,
    Dir,
    Sym,
    Hard,
    Char,
    Fifo,
}

/// An entry to write: type, name, link target.
type Entry<'a> = (T, &'a str, &'a str);

/// Appends one ustar entry with `name` written as raw bytes (so hostile
/// names such as `../x` or `/etc/passwd` can be built).
fn entry(b: &mut tar::Builder<Vec<u8>>, kind: T, name: &str, link: &str, data: &[u8]) {
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(match kind {
        T::File => tar::EntryType::Regular,
        T::Dir => tar::EntryType::Directory,
        T::Sym => tar::EntryType::Symlink,
        T::Hard => tar::EntryType::Link,
        T::Char => tar::EntryType::Char,
        T::Fifo => tar::EntryType::Fifo,
    });
    h.set_mode(match kind {
        T::Dir => 0o755,
        _ => 0o644,
    });
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(1_700_000_000);
    h.set_size(data.len() as u64);
    if let T::Char = kind {
        h.set_device_major(1).unwrap();
        h.set_device_minor(3).unwrap();
    }
    let old = h.as_old_mut();
    old.name = [0; 100];
    old.name[..name.len()].copy_from_slice(name.as_bytes());
    old.linkname = [0; 100];
    old.linkname[..link.len()].copy_from_slice(link.as_bytes());
    h.set_cksum();
    b.append(&h, data).unwrap();
}

/// A PAX extended header record block followed by its entry.
fn pax(b: &mut tar::Builder<Vec<u8>>, records: &[(&str, &[u8])]) {
    let mut body = Vec::new();
    for (k, v) in records {
        let rest = format!(" {k}=").len() + v.len() + 1;
        let mut len = rest + 1;
        while len.to_string().len() + rest != len {
            len += 1;
        }
        body.extend_from_slice(format!("{len} {k}=").as_bytes());
        body.extend_from_slice(v);
        body.push(b'\n');
    }
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(tar::EntryType::XHeader);
    h.set_path("PaxHeaders/x").unwrap();
    h.set_size(body.len() as u64);
    h.set_mode(0o644);
    h.set_cksum();
    b.append(&h, &body[..]).unwrap();
}

/// A GNU long name (`L`) or long link (`K`) record.
fn gnu_long(b: &mut tar::Builder<Vec<u8>>, kind: u8, value: &str) {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::new(kind));
    h.set_path("././@LongLink").unwrap();
    let mut data = value.as_bytes().to_vec();
    data.push(0);
    h.set_size(data.len() as u64);
    h.set_mode(0o644);
    h.set_cksum();
    b.append(&h, &data[..]).unwrap();
}

fn finish(b: tar::Builder<Vec<u8>>) -> Vec<u8> {
    b.into_inner().unwrap()
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn zstd(data: &[u8]) -> Vec<u8> {
    zstd::encode_all(data, 3).unwrap()
}

fn sha256(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Layer tars: (name, bytes).
fn layers() -> Seeds {
    let mut out = Seeds::new();
    let mut b = tar::Builder::new(Vec::new());
    entry(&mut b, T::Dir, "bin/", "", b"");
    entry(&mut b, T::File, "bin/sh", "", b"#!shell\n");
    entry(&mut b, T::Hard, "bin/ash", "bin/sh", b"");
    entry(&mut b, T::Sym, "bin/busybox", "sh", b"");
    entry(&mut b, T::Sym, "lib", "/usr/lib", b"");
    entry(&mut b, T::Dir, "usr/lib/", "", b"");
    entry(
        &mut b,
        T::File,
        "lib/libc.so",
        "",
        b"through an absolute symlink",
    );
    entry(&mut b, T::File, "etc/hostname", "", b"fuzz\n");
    out.push(("basic".into(), finish(b)));

    let mut b = tar::Builder::new(Vec::new());
    entry(&mut b, T::File, ".wh.file", "", b"");
    entry(&mut b, T::File, "dir/.wh..wh..opq", "", b"");
    entry(&mut b, T::File, "dir/new", "", b"new");
    entry(&mut b, T::File, "etc/.wh.passwd", "", b"");
    entry(&mut b, T::File, "dir/sub/.wh.file", "", b"");
    entry(&mut b, T::File, ".wh..wh.plnk", "", b"");
    entry(&mut b, T::Hard, "hard", "dir/other", b"");
    out.push(("whiteouts".into(), finish(b)));

    let mut b = tar::Builder::new(Vec::new());
    let long = format!("{}/file", "d".repeat(120));
    pax(
        &mut b,
        &[
            ("path", long.as_bytes()),
            ("mtime", b"1700000000.123456789"),
            ("atime", b"-1.5"),
            ("SCHILY.xattr.user.comment", b"hello"),
            ("SCHILY.xattr.trusted.overlay.opaque", b"y"),
            ("uid", b"1000"),
            ("gid", b"1000"),
        ],
    );
    entry(&mut b, T::File, "short", "", b"pax data");
    pax(&mut b, &[("linkpath", long.as_bytes())]);
    entry(&mut b, T::Sym, "to-long", "", b"");
    pax(&mut b, &[("size", b"3")]);
    entry(&mut b, T::File, "sized", "", b"abc");
    out.push(("pax".into(), finish(b)));

    let mut b = tar::Builder::new(Vec::new());
    gnu_long(&mut b, b'L', &format!("{}/gnu", "g".repeat(150)));
    entry(&mut b, T::File, "ignored", "", b"gnu long name");
    gnu_long(&mut b, b'K', &format!("{}/gnu", "g".repeat(150)));
    entry(&mut b, T::Hard, "gnu-hard", "", b"");
    entry(&mut b, T::Char, "dev/null", "", b"");
    entry(&mut b, T::Fifo, "run/fifo", "", b"");
    out.push(("gnu-devices".into(), finish(b)));

    // Hostile entries, one archive each (the first refusal ends a layer).
    let hostile: [(&str, &[Entry]); 7] = [
        ("dotdot", &[(T::File, "../escape", "")]),
        ("absolute", &[(T::File, "/abs", "")]),
        (
            "through-links",
            &[
                (T::File, "up/secret", ""),
                (T::File, "abs/secret", ""),
                (T::File, "etclink/passwd", ""),
                (T::Sym, "evil", "../../.."),
                (T::File, "evil/tmp/x", ""),
            ],
        ),
        (
            "hardlinks",
            &[
                (T::Hard, "h2", "up/secret"),
                (T::Hard, "h", "../outside/secret"),
            ],
        ),
        ("hardlink-abs", &[(T::Hard, "h", "/etc/passwd")]),
        ("replace-root", &[(T::Sym, "./", "/.")]),
        (
            "whiteout-link",
            &[
                (T::File, ".wh.up", ""),
                (T::Dir, "up/", ""),
                (T::File, "up/x", ""),
            ],
        ),
    ];
    for (name, entries) in hostile {
        let mut b = tar::Builder::new(Vec::new());
        for (kind, path, link) in entries {
            let data: &[u8] = if matches!(kind, T::File) { b"x" } else { b"" };
            entry(&mut b, *kind, path, link, data);
        }
        out.push((format!("hostile-{name}"), finish(b)));
    }

    out.push(("empty".into(), vec![0u8; 1024]));
    out
}

/// A config + layer image as an OCI archive (via berth import + save),
/// and a docker-save archive built by hand.
fn archives(rootfs_tar: &[u8]) -> Seeds {
    let mut out = Seeds::new();
    let dir = tempfile::tempdir().unwrap();
    let images = berth_image::Images::open(&dir.path().join("root")).unwrap();
    let input = dir.path().join("rootfs.tar");
    std::fs::write(&input, rootfs_tar).unwrap();
    berth_image::import::import(
        &images,
        &input,
        "seed/image:1",
        &berth_image::import::ImportOptions {
            cmd: vec!["/bin/sh".into()],
            ..Default::default()
        },
    )
    .unwrap();
    let archive = dir.path().join("oci.tar");
    berth_image::save::save(&images, &["seed/image:1".into()], None, &archive).unwrap();
    let oci = std::fs::read(&archive).unwrap();
    out.push(("oci-archive".into(), oci.clone()));
    out.push(("oci-archive-gzip".into(), gzip(&oci)));

    // docker save, legacy form: <id>/layer.tar, <config-hex>.json, manifest.json
    let layer = rootfs_tar.to_vec();
    let diff_id = sha256(&layer);
    let config = format!(
        r#"{{"architecture":"amd64","os":"linux","config":{{"Cmd":["/bin/sh"],"Env":["A=b"]}},"rootfs":{{"type":"layers","diff_ids":["sha256:{diff_id}"]}}}}"#
    );
    let config_hex = sha256(config.as_bytes());
    let manifest = format!(
        r#"[{{"Config":"{config_hex}.json","RepoTags":["seed/docker:1"],"Layers":["abc/layer.tar","def/layer.tar"]}}]"#
    );
    let config2 = config.replace(
        &format!("[\"sha256:{diff_id}\"]"),
        &format!("[\"sha256:{diff_id}\",\"sha256:{diff_id}\"]"),
    );
    let config2_hex = sha256(config2.as_bytes());
    let manifest = manifest.replace(&config_hex, &config2_hex);
    let mut b = tar::Builder::new(Vec::new());
    entry(&mut b, T::Dir, "abc/", "", b"");
    entry(&mut b, T::File, "abc/layer.tar", "", &layer);
    entry(&mut b, T::Dir, "def/", "", b"");
    entry(&mut b, T::Sym, "def/layer.tar", "../abc/layer.tar", b"");
    entry(
        &mut b,
        T::File,
        &format!("{config2_hex}.json"),
        "",
        config2.as_bytes(),
    );
    entry(&mut b, T::File, "manifest.json", "", manifest.as_bytes());
    entry(
        &mut b,
        T::File,
        "repositories",
        "",
        br#"{"seed/docker":{"1":"abc"}}"#,
    );
    out.push(("docker-save".into(), finish(b)));
    out
}

const D1: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
const D2: &str = "sha256:2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae";
const D512: &str = "sha512:cf83e1357eefb8bdf1542850d66d8007d620e4050b5715dc83f4a921d36ce9ce47d0d13c5d85f2b0ff8318d2877eec2f63b931bd47417a81a538327af927da3e";

fn json_docs() -> Seeds {
    let mut out = Seeds::new();
    seed(
        &mut out,
        "oci-manifest",
        format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{D1}","size":2}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"{D2}","size":3}},{{"mediaType":"application/vnd.oci.image.layer.v1.tar+zstd","digest":"{D1}","size":0,"urls":["https://example.com/l"]}}],"annotations":{{"a":"b"}}}}"#
        ),
    );
    seed(
        &mut out,
        "oci-manifest-subject",
        format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","artifactType":"application/vnd.example.sig","config":{{"mediaType":"application/vnd.oci.empty.v1+json","digest":"{D1}","size":0}},"layers":[],"subject":{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{D2}","size":3}}}}"#
        ),
    );
    seed(
        &mut out,
        "docker-manifest",
        format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v2+json","config":{{"mediaType":"application/vnd.docker.container.image.v1+json","digest":"{D1}","size":2}},"layers":[{{"mediaType":"application/vnd.docker.image.rootfs.diff.tar.gzip","digest":"{D2}","size":3}},{{"mediaType":"application/vnd.docker.image.rootfs.foreign.diff.tar.gzip","digest":"{D512}","size":3}}]}}"#
        ),
    );
    seed(
        &mut out,
        "oci-index",
        format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{D1}","size":2,"platform":{{"architecture":"amd64","os":"linux"}}}},{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{D2}","size":3,"platform":{{"architecture":"arm64","os":"linux","variant":"v8"}},"annotations":{{"org.opencontainers.image.ref.name":"1.0"}}}}],"subject":{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{D2}","size":3}}}}"#
        ),
    );
    seed(
        &mut out,
        "docker-list",
        format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.list.v2+json","manifests":[{{"mediaType":"application/vnd.docker.distribution.manifest.v2+json","digest":"{D1}","size":2,"platform":{{"architecture":"arm","os":"linux","variant":"v7"}}}}]}}"#
        ),
    );
    seed(
        &mut out,
        "config",
        format!(
            r#"{{"created":"2024-01-01T00:00:00Z","architecture":"amd64","os":"linux","config":{{"User":"user:users","Env":["PATH=/bin","A=b"],"Entrypoint":["/bin/sh","-c"],"Cmd":["echo hi"],"WorkingDir":"/srv/../app","Volumes":{{"/data":{{}},"/":{{}}}},"Labels":{{"l":"v"}},"StopSignal":"SIGTERM","ExposedPorts":{{"80/tcp":{{}}}}}},"rootfs":{{"type":"layers","diff_ids":["{D1}"]}},"history":[{{"created_by":"seed"}}]}}"#
        ),
    );
    seed(
        &mut out,
        "config-numeric-user",
        r#"{"architecture":"arm64","variant":"v8","os":"linux","config":{"User":"1000:1000","Cmd":["/x"]},"rootfs":{"type":"layers","diff_ids":[]}}"#,
    );
    seed(
        &mut out,
        "schema1",
        r#"{"schemaVersion":1,"name":"x","tag":"latest","fsLayers":[]}"#,
    );
    seed(
        &mut out,
        "artifact",
        r#"{"mediaType":"application/vnd.example+json","schemaVersion":2,"blobs":[]}"#,
    );
    out
}

fn references() -> Seeds {
    let mut out = Seeds::new();
    for (i, r) in [
        "busybox",
        "busybox:1.36",
        "library/busybox",
        "docker.io/library/busybox:latest",
        "index.docker.io/user/app",
        "localhost/app",
        "localhost:5000/team/app:v1.2_3-rc",
        &format!("example.com/a/b/c@{D1}"),
        &format!("registry.example.com:443/x:tag@{D512}"),
        "[::1]:5000/ipv6",
        "a.b-c__d---e/f",
        "UPPER/case",
        "x:",
        "localhost:port/x",
    ]
    .iter()
    .enumerate()
    {
        seed(&mut out, &format!("ref-{i}"), r.to_string());
    }
    out
}

fn names() -> Seeds {
    let mut out = Seeds::new();
    for (i, r) in [
        D1,
        D512,
        "sha256:E3B0",
        "md5:00",
        "library/busybox",
        "a.b_c__d---e/f0",
        "a//b",
        "_x.Y-1",
        &"a".repeat(129),
    ]
    .iter()
    .enumerate()
    {
        seed(&mut out, &format!("name-{i}"), r.to_string());
    }
    out
}

fn routes() -> Seeds {
    let mut out = Seeds::new();
    for (i, r) in [
        "/v2/",
        "/v2",
        "/v2/_catalog?n=2&last=a",
        "/metrics",
        "/token?service=x&scope=repository:a:pull",
        "/v2/library/busybox/tags/list?n=1&last=1.0",
        "/v2/a/b/manifests/latest",
        &format!("/v2/a/manifests/{D1}"),
        &format!("/v2/blobs/blobs/{D2}"),
        &format!("/v2/a/blobs/uploads/?mount={D1}&from=b/c"),
        "/v2/a/blobs/uploads",
        "/v2/a/blobs/uploads/0123456789abcdef",
        &format!("/v2/a/referrers/{D1}?artifactType=application/x"),
        "/v2/a/manifests/tags/list",
        "/v3/x",
    ]
    .iter()
    .enumerate()
    {
        seed(&mut out, &format!("route-{i}"), r.to_string());
    }
    out
}

fn ranges() -> Seeds {
    let mut out = Seeds::new();
    for (i, r) in [
        "bytes=0-0",
        "bytes=5-",
        "bytes=-3",
        "bytes=2-100",
        "bytes=0-1,3-4",
        " bytes=18446744073709551615-",
        "0-99",
        "bytes 5-9/*",
        "bytes 0-1023/4096",
    ]
    .iter()
    .enumerate()
    {
        seed(&mut out, &format!("range-{i}"), r.to_string());
    }
    out
}

const SECRET: &str = "fuzzing-secret-0123456789";

fn claims(exp: &str, aud: &str, grants: &str) -> String {
    format!(
        r#"{{"iss":"berth-registry","sub":"alice","aud":"{aud}","exp":{exp},"nbf":$NOW,"iat":$NOW,"jti":"0011","access":{grants}}}"#
    )
}

fn auth() -> (Seeds, Seeds, Seeds, Seeds) {
    let (mut headers, mut jwt, mut token, mut htpasswd) =
        (Seeds::new(), Seeds::new(), Seeds::new(), Seeds::new());
    let basic = |creds: &str| format!("Basic {}", STANDARD.encode(creds));
    let grants = r#"[{"type":"repository","name":"team/app","actions":["pull","push"]},{"type":"registry","name":"catalog","actions":["*"]}]"#;
    let c = claims("$LATER", "berth-fuzz", grants);
    // A token valid for 10 years, signed with the fuzzing key.
    let payload = c
        .replace("$LATER", "2100000000")
        .replace("$NOW", "1700000000");
    let h = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
    let signing = format!("{h}.{}", URL_SAFE_NO_PAD.encode(payload));
    let sig = URL_SAFE_NO_PAD.encode(berth_fuzz::hmac_sha256(
        SECRET.as_bytes(),
        signing.as_bytes(),
    ));
    for (i, v) in [
        basic("alice:alice-password"),
        basic("alice:wrong"),
        basic("nocolon"),
        "basic !!!".to_string(),
        format!("Bearer {signing}.{sig}"),
        format!("bearer  {signing}.{sig}x "),
        "Bearer a.b.c.d".to_string(),
        format!(
            "Bearer {}.e30.",
            URL_SAFE_NO_PAD.encode(br#"{"alg":"none"}"#)
        ),
        "Bearer metrics-token-0123456789".to_string(),
    ]
    .into_iter()
    .enumerate()
    {
        seed(&mut headers, &format!("header-{i}"), v);
    }
    seed(&mut jwt, "claims-ok", c.clone());
    seed(
        &mut jwt,
        "claims-expired",
        claims("1", "berth-fuzz", grants),
    );
    seed(
        &mut jwt,
        "claims-other-service",
        claims("$LATER", "other", grants),
    );
    seed(
        &mut jwt,
        "claims-wildcard",
        claims(
            "$LATER",
            "berth-fuzz",
            r#"[{"type":"repository","name":"team/app","actions":["*"]}]"#,
        ),
    );
    seed(&mut jwt, "claims-bad-types", r#"{"exp":-1,"access":"x"}"#);
    for (i, v) in [
        "\nservice=berth-fuzz&scope=repository:public:pull".to_string(),
        "\nscope=repository:public:pull,push&scope=repository:team/app:pull".to_string(),
        format!(
            "{}\nservice=berth-fuzz&scope=repository:team/app:pull,push,delete registry:catalog:*",
            basic("alice:alice-password")
        ),
        "\ngrant_type=password&username=alice&password=alice-password&scope=repository%3Ateam%2Fx%3Apush".to_string(),
        "\ngrant_type=password&username=alice&password=bad".to_string(),
        format!("{}\nscope=repository:a:b:c:pull", basic("bob:x")),
    ]
    .into_iter()
    .enumerate()
    {
        seed(&mut token, &format!("token-{i}"), v);
    }
    let hash = bcrypt::hash("pw", 4).unwrap();
    seed(
        &mut htpasswd,
        "htpasswd-ok",
        format!("# users\nalice:{hash}\n\n  bob:{hash}  \r\n"),
    );
    seed(&mut htpasswd, "htpasswd-md5", "carol:$apr1$abc$def\n");
    seed(&mut htpasswd, "htpasswd-nocolon", "justaname\n");
    (headers, jwt, token, htpasswd)
}

fn runtime() -> Seeds {
    let mut out = Seeds::new();
    let spec = berth_runtime::spec_template::default_spec_json(false);
    seed(
        &mut out,
        "config-default",
        serde_json::to_vec_pretty(&spec).unwrap(),
    );
    let rootless = berth_runtime::spec_template::default_spec_json(true);
    seed(
        &mut out,
        "config-rootless",
        serde_json::to_vec(&rootless).unwrap(),
    );
    let mut s = spec.clone();
    s["hostname"] = "box".into();
    s["linux"]["sysctl"] =
        serde_json::json!({"net.ipv4.ip_forward": "1", "kernel.shmmax": "1", "fs/mqueue/x": "1"});
    s["linux"]["rootfsPropagation"] = "rslave".into();
    s["linux"]["devices"] =
        serde_json::json!([{"path": "/dev/fuse", "type": "c", "major": 10, "minor": 229}]);
    seed(&mut out, "config-edges", serde_json::to_vec(&s).unwrap());
    let mut s = spec.clone();
    s["process"]["user"] =
        serde_json::json!({"uid": 4294967295u32, "gid": 0, "additionalGids": [5]});
    s["process"]["rlimits"] = serde_json::json!([{"type": "RLIMIT_NOFILE", "hard": 1, "soft": 2}]);
    seed(
        &mut out,
        "config-user-rlimits",
        serde_json::to_vec(&s).unwrap(),
    );
    seed(
        &mut out,
        "process",
        r#"{"terminal":false,"user":{"uid":0,"gid":0},"args":["sh"],"env":["A=b","=bad"],"cwd":"/","capabilities":{"bounding":["CAP_KILL"]}}"#,
    );
    seed(
        &mut out,
        "resources",
        r#"{"memory":{"limit":1048576,"swap":-1},"cpu":{"shares":512,"quota":-1,"period":100000,"cpus":"0-1"},"pids":{"limit":10},"devices":[{"allow":false,"access":"rwm"}]}"#,
    );
    seed(
        &mut out,
        "config-bad-field",
        r#"{"ociVersion":"1.0.2","process":{"args":"not a list"}}"#,
    );
    out
}

fn registry_manifests() -> Seeds {
    let mut out = json_docs();
    out.retain(|(n, _)| n != "config" && n != "config-numeric-user");
    out
}

fn main() {
    let root: PathBuf = std::env::args_os()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus"));
    let layers = layers();
    let basic = layers[0].1.clone();
    let whiteouts = layers[1].1.clone();
    let mut compressed = Seeds::new();
    seed(&mut compressed, "basic-gzip", gzip(&basic));
    seed(&mut compressed, "whiteouts-zstd", zstd(&whiteouts));
    let mut multi = gzip(&basic[..512]);
    multi.extend(gzip(&basic[512..]));
    seed(&mut compressed, "basic-gzip-2-members", multi);
    let mut sniff = compressed.clone();
    seed(&mut sniff, "plain", basic.clone());
    let gz = gzip(&basic);
    seed(&mut sniff, "gzip-truncated", gz[..gz.len() / 2].to_vec());
    let mut trailing = gzip(&basic);
    trailing.extend_from_slice(b"trailing garbage");
    seed(&mut sniff, "gzip-trailing", trailing);
    let mut apply = layers.clone();
    apply.extend(compressed.clone());
    let mut import = Seeds::new();
    seed(&mut import, "rootfs", basic.clone());
    seed(&mut import, "rootfs-gzip", gzip(&basic));
    seed(&mut import, "rootfs-zstd", zstd(&basic));
    seed(&mut import, "not-tar", "hello");
    let (headers, jwt, token, htpasswd) = auth();
    let targets: Vec<(&str, Seeds)> = vec![
        ("tar_stream", layers.clone()),
        ("layer_apply", apply.clone()),
        ("layer_apply_overlay", apply),
        ("layer_sniff", sniff),
        ("image_json", json_docs()),
        ("image_load", archives(&basic)),
        ("image_import", import),
        ("image_reference", references()),
        ("registry_names", names()),
        ("registry_route", routes()),
        ("registry_range", ranges()),
        ("registry_auth_header", headers),
        ("registry_jwt_claims", jwt),
        ("registry_token_request", token),
        ("registry_htpasswd", htpasswd),
        ("registry_manifest", registry_manifests()),
        ("runtime_config", runtime()),
    ];
    for (target, seeds) in targets {
        assert!(
            berth_fuzz::target(target).is_some(),
            "unknown target {target}"
        );
        let dir = root.join(target);
        std::fs::create_dir_all(&dir).unwrap();
        for (name, data) in seeds {
            std::fs::write(dir.join(format!("seed-{name}")), data).unwrap();
        }
        println!("{}", dir.display());
    }
}
