//! containerd's CRI plugin drives `containerd-shim-berth-v2` the way the
//! kubelet would: each test starts Debian's docker-registry on loopback
//! (holding a busybox image and a pause-like sandbox image made from the
//! host's busybox-static) and containerd 1.6 with its CRI plugin on, a
//! runtime handler `berth` (`runtime_type = "io.containerd.berth.v2"`) and
//! `sandbox_image` in that registry, then talks CRI `runtime.v1` gRPC to it
//! (berth-cri-client). Pods use the host's network (NamespaceMode NODE), with
//! containerd's CNI directories private and empty, or, in one test, a CNI
//! ptp network of their own (Debian's plugins, a private conflist and IPAM
//! directory).

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use berth_cri_client::tonic;
use berth_cri_client::v1;
use berth_testutil::registry::DockerRegistry;
use berth_testutil::{busybox_layout, require_peer, require_root, run_ok, Containerd};
use berth_testutil::{unique_id, ContainerdOptions};
use v1::image_service_client::ImageServiceClient;
use v1::runtime_service_client::RuntimeServiceClient;

type RuntimeClient = RuntimeServiceClient<tonic::transport::Channel>;
type ImageClient = ImageServiceClient<tonic::transport::Channel>;

/// Debian's CNI ptp plugin (containernetworking-plugins).
const CNI_PTP: &str = "/usr/lib/cni/ptp";

/// The runtime handler the containerd config names for berth's shim.
const HANDLER: &str = "berth";

/// The directory holding the shim binary cargo built for these tests.
fn shim_dir() -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_containerd-shim-berth-v2"))
        .parent()
        .expect("the shim's directory")
        .to_path_buf()
}

/// A registry with the test images, a containerd with the CRI plugin and
/// the `berth` handler, and CRI clients connected to it.
struct Cri {
    rt: tokio::runtime::Runtime,
    runtime: RuntimeClient,
    images: ImageClient,
    cd: Containerd,
    _registry: DockerRegistry,
    /// `HOST:PORT/berth-test/busybox:1` in the test's registry.
    busybox: String,
    /// The pods' cgroup parent (as the kubelet's `/kubepods/...`).
    cgroup_parent: String,
    /// The pods' network: the host's (NODE) or a CNI network (POD).
    network: v1::NamespaceMode,
    dir: tempfile::TempDir,
}

impl Cri {
    /// For host-network pods: containerd's CNI directories are empty.
    fn new() -> Cri {
        Cri::start(None)
    }

    /// With `subnet` (a /30), pods get a network namespace of their own on
    /// a CNI ptp network (Debian's plugins) with that subnet.
    fn start(subnet: Option<&str>) -> Cri {
        require_root();
        for peer in ["containerd", "docker-registry", "skopeo", "umoci"] {
            require_peer(peer);
        }
        let dir = tempfile::Builder::new()
            .prefix("berth-cri-")
            .tempdir()
            .expect("tempdir");
        let registry = DockerRegistry::start(dir.path(), None);
        let (busybox, pause) = push_images(dir.path(), &registry.addr);
        let cd = Containerd::start_with(
            &dir.path().join("containerd"),
            ContainerdOptions {
                path_prefix: Some(shim_dir()),
                namespace: "k8s.io".into(),
                cri: Some(cri_config(dir.path(), &registry.addr, &pause, subnet)),
            },
        );
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a tokio runtime");
        let channel = rt
            .block_on(berth_cri_client::connect(cd.socket()))
            .unwrap_or_else(|e| panic!("{e}\ncontainerd log:\n{}", cd.log_text()));
        let mut cri = Cri {
            rt,
            runtime: RuntimeServiceClient::new(channel.clone()),
            images: ImageServiceClient::new(channel),
            cd,
            _registry: registry,
            busybox,
            cgroup_parent: format!("/{}", unique_id("berth-cri")),
            network: match subnet {
                None => v1::NamespaceMode::Node,
                Some(_) => v1::NamespaceMode::Pod,
            },
            dir,
        };
        cri.wait_cri_ready();
        cri
    }

    /// Runs one RuntimeService call `what` (`call` gets a client) to
    /// completion, failing with containerd's log when it fails.
    fn runtime<T, F>(&self, what: &str, call: impl FnOnce(RuntimeClient) -> F) -> T
    where
        F: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        self.finish(what, call(self.runtime.clone()))
    }

    /// [`Cri::runtime`] for the ImageService.
    fn image<T, F>(&self, what: &str, call: impl FnOnce(ImageClient) -> F) -> T
    where
        F: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        self.finish(what, call(self.images.clone()))
    }

    fn finish<T>(
        &self,
        what: &str,
        fut: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    ) -> T {
        match self.rt.block_on(fut) {
            Ok(r) => r.into_inner(),
            Err(status) => panic!("CRI {what} failed: {status}\n{}", self.problems()),
        }
    }

    /// containerd's warnings and errors and the berth shim's lines.
    fn problems(&self) -> String {
        self.cd
            .log_text()
            .lines()
            .filter(|l| {
                l.contains("level=error")
                    || l.contains("level=warn")
                    || l.contains("runtime=io.containerd.berth.v2")
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Waits until the CRI plugin answers `Status` with RuntimeReady (it
    /// initialises after containerd serves; a readiness wait).
    fn wait_cri_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let status = self
                .rt
                .block_on(self.runtime.status(v1::StatusRequest::default()));
            let ready = status.as_ref().is_ok_and(|s| {
                s.get_ref().status.as_ref().is_some_and(|st| {
                    st.conditions
                        .iter()
                        .any(|c| c.r#type == "RuntimeReady" && c.status)
                })
            });
            if ready {
                return;
            }
            // No RuntimeService at all: the plugin did not load.
            if let Err(e) = &status {
                assert!(
                    e.code() != tonic::Code::Unimplemented,
                    "containerd's CRI plugin is not serving: {e}\n{}",
                    self.problems()
                );
            }
            assert!(
                Instant::now() < deadline,
                "containerd's CRI plugin never became ready: {status:?}\n{}",
                self.problems()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Pulls the busybox image from the test's registry (the kubelet's
    /// step before creating a container); returns its image id.
    fn pull_busybox(&self) -> String {
        let req = v1::PullImageRequest {
            image: Some(v1::ImageSpec {
                image: self.busybox.clone(),
                ..Default::default()
            }),
            ..Default::default()
        };
        self.image("PullImage", |mut c| async move { c.pull_image(req).await })
            .image_ref
    }

    /// A pod's config, as the kubelet sends it.
    fn pod_config(&self, name: &str) -> v1::PodSandboxConfig {
        let uid = unique_id("uid");
        let log_directory = self.dir.path().join("pods").join(&uid);
        std::fs::create_dir_all(&log_directory).expect("create the pod's log directory");
        v1::PodSandboxConfig {
            metadata: Some(v1::PodSandboxMetadata {
                name: name.into(),
                uid: uid.clone(),
                namespace: "default".into(),
                attempt: 0,
            }),
            // The kubelet sends no hostname for a host-network pod (its
            // UTS namespace is the host's, so the OCI spec may not set one).
            hostname: match self.network {
                v1::NamespaceMode::Node => String::new(),
                _ => name.into(),
            },
            log_directory: log_directory.to_string_lossy().into_owned(),
            linux: Some(v1::LinuxPodSandboxConfig {
                cgroup_parent: format!("{}/{uid}", self.cgroup_parent),
                security_context: Some(v1::LinuxSandboxSecurityContext {
                    namespace_options: Some(namespaces(self.network)),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// Runs a pod sandbox with the `berth` handler; returns its id.
    fn run_pod(&self, config: &v1::PodSandboxConfig) -> String {
        let req = v1::RunPodSandboxRequest {
            config: Some(config.clone()),
            runtime_handler: HANDLER.into(),
        };
        self.runtime("RunPodSandbox", |mut c| async move {
            c.run_pod_sandbox(req).await
        })
        .pod_sandbox_id
    }

    /// Creates and starts container `name` running `command` in the pod,
    /// logging to `name/0.log` under the pod's log directory; returns its id.
    fn start_container(
        &self,
        pod: &str,
        pod_config: &v1::PodSandboxConfig,
        name: &str,
        command: &[&str],
        memory_limit: i64,
    ) -> String {
        // The kubelet makes the container's log directory.
        std::fs::create_dir_all(Path::new(&pod_config.log_directory).join(name))
            .expect("create the container's log directory");
        let req = v1::CreateContainerRequest {
            pod_sandbox_id: pod.into(),
            config: Some(v1::ContainerConfig {
                metadata: Some(v1::ContainerMetadata {
                    name: name.into(),
                    attempt: 0,
                }),
                image: Some(v1::ImageSpec {
                    image: self.busybox.clone(),
                    ..Default::default()
                }),
                command: command.iter().map(|a| a.to_string()).collect(),
                log_path: format!("{name}/0.log"),
                linux: Some(v1::LinuxContainerConfig {
                    resources: Some(v1::LinuxContainerResources {
                        memory_limit_in_bytes: memory_limit,
                        ..Default::default()
                    }),
                    security_context: Some(v1::LinuxContainerSecurityContext {
                        namespace_options: Some(namespaces(self.network)),
                        ..Default::default()
                    }),
                }),
                ..Default::default()
            }),
            sandbox_config: Some(pod_config.clone()),
        };
        let id = self
            .runtime("CreateContainer", |mut c| async move {
                c.create_container(req).await
            })
            .container_id;
        let req = v1::StartContainerRequest {
            container_id: id.clone(),
        };
        self.runtime("StartContainer", |mut c| async move {
            c.start_container(req).await
        });
        id
    }

    /// The container's status, with containerd's verbose info.
    fn container_status(&self, id: &str) -> v1::ContainerStatusResponse {
        let req = v1::ContainerStatusRequest {
            container_id: id.into(),
            verbose: true,
        };
        self.runtime("ContainerStatus", |mut c| async move {
            c.container_status(req).await
        })
    }

    /// Waits until the container has exited (a readiness wait) and
    /// returns its status.
    fn wait_exited(&self, id: &str) -> v1::ContainerStatus {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let status = self.container_status(id).status.expect("a status");
            if status.state == v1::ContainerState::ContainerExited as i32 {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "container {id} never exited: {status:?}\n{}",
                self.problems()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops and removes the container, then stops and removes the pod,
    /// as the kubelet does when a pod is deleted.
    fn remove_pod(&self, pod: &str, containers: &[&str]) {
        for id in containers {
            let req = v1::StopContainerRequest {
                container_id: id.to_string(),
                timeout: 10,
            };
            self.runtime("StopContainer", |mut c| async move {
                c.stop_container(req).await
            });
            let req = v1::RemoveContainerRequest {
                container_id: id.to_string(),
            };
            self.runtime("RemoveContainer", |mut c| async move {
                c.remove_container(req).await
            });
        }
        let req = v1::StopPodSandboxRequest {
            pod_sandbox_id: pod.into(),
        };
        self.runtime("StopPodSandbox", |mut c| async move {
            c.stop_pod_sandbox(req).await
        });
        let req = v1::RemovePodSandboxRequest {
            pod_sandbox_id: pod.into(),
        };
        self.runtime("RemovePodSandbox", |mut c| async move {
            c.remove_pod_sandbox(req).await
        });
    }

    /// Asserts that no pod, container, shim or mount is left: what the
    /// kubelet expects after removing every pod.
    fn assert_nothing_left(&self) {
        let pods = self
            .runtime("ListPodSandbox", |mut c| async move {
                c.list_pod_sandbox(v1::ListPodSandboxRequest::default())
                    .await
            })
            .items;
        assert!(pods.is_empty(), "pods left: {pods:?}");
        let containers = self
            .runtime("ListContainers", |mut c| async move {
                c.list_containers(v1::ListContainersRequest::default())
                    .await
            })
            .containers;
        assert!(containers.is_empty(), "containers left: {containers:?}");
        // The shim exits once containerd has deleted its last task (it
        // answers the delete first: a readiness wait).
        let deadline = Instant::now() + Duration::from_secs(60);
        while !self.cd.shim_pids().is_empty() {
            assert!(
                Instant::now() < deadline,
                "shims left running: {:?}\n{}",
                self.cd.shim_pids(),
                self.problems()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let mounts = mounts_under(self.dir.path());
        assert!(mounts.is_empty(), "mounts left: {mounts:?}");
        // The pods' cgroups are the kubelet's to remove; the containers'
        // (named by their 64-hex ids) go with them.
        let mut left = Vec::new();
        if let Ok(hierarchies) = std::fs::read_dir("/sys/fs/cgroup") {
            for h in hierarchies.flatten() {
                let parent = h.path().join(self.cgroup_parent.trim_start_matches('/'));
                container_cgroups(&parent, &mut left);
            }
        }
        assert!(left.is_empty(), "container cgroups left: {left:?}");
    }
}

impl Drop for Cri {
    /// After a failing test: removes what containerd still knows of, then
    /// unmounts what is left under the test's directory and removes the
    /// pods' cgroups.
    fn drop(&mut self) {
        let mut c = self.runtime.clone();
        let pods = self
            .rt
            .block_on(c.list_pod_sandbox(v1::ListPodSandboxRequest::default()));
        for pod in pods.map(|p| p.into_inner().items).unwrap_or_default() {
            let pod_sandbox_id = pod.id;
            let _ = self
                .rt
                .block_on(c.stop_pod_sandbox(v1::StopPodSandboxRequest {
                    pod_sandbox_id: pod_sandbox_id.clone(),
                }));
            let _ = self
                .rt
                .block_on(c.remove_pod_sandbox(v1::RemovePodSandboxRequest { pod_sandbox_id }));
        }
        for p in mounts_under(self.dir.path()) {
            let _ = nix::mount::umount2(p.as_str(), nix::mount::MntFlags::MNT_DETACH);
        }
        if let Ok(hierarchies) = std::fs::read_dir("/sys/fs/cgroup") {
            for h in hierarchies.flatten() {
                remove_cgroup_tree(&h.path().join(self.cgroup_parent.trim_start_matches('/')));
            }
        }
    }
}

/// Adds the cgroups under `dir` named like a CRI container id (64 hex
/// digits) to `found`.
fn container_cgroups(dir: &Path, found: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            let name = e.file_name();
            let name = name.to_string_lossy();
            if name.len() == 64 && name.bytes().all(|b| b.is_ascii_hexdigit()) {
                found.push(e.path());
            }
            container_cgroups(&e.path(), found);
        }
    }
}

/// Removes a cgroup directory and the (empty) cgroups below it.
fn remove_cgroup_tree(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                remove_cgroup_tree(&e.path());
            }
        }
    }
    let _ = std::fs::remove_dir(dir);
}

/// The `network` namespace mode (NODE: the host's, POD: the pod's own), a
/// pid namespace per container, the pod's IPC namespace: the kubelet's
/// choice.
fn namespaces(network: v1::NamespaceMode) -> v1::NamespaceOption {
    v1::NamespaceOption {
        network: network as i32,
        pid: v1::NamespaceMode::Container as i32,
        ipc: v1::NamespaceMode::Pod as i32,
        ..Default::default()
    }
}

/// Builds busybox (running `sh`) and a pause-like image (busybox's `sleep`
/// for ever) from the host's busybox-static with umoci and pushes both to
/// the registry at `addr` with skopeo; returns their references.
fn push_images(dir: &Path, addr: &str) -> (String, String) {
    let layout = busybox_layout(&dir.join("images"));
    let image = |tag: &str| format!("{}:{tag}", layout.display());
    run_ok(Command::new("umoci").args([
        "config",
        "--image",
        &image("latest"),
        "--config.env",
        "PATH=/bin:/sbin:/usr/bin",
        "--config.cmd",
        "sh",
    ]));
    run_ok(Command::new("umoci").args([
        "config",
        "--image",
        &image("latest"),
        "--tag",
        "pause",
        "--config.entrypoint",
        "/bin/sleep",
        "--config.cmd",
        "2147483647",
    ]));
    let busybox = format!("{addr}/berth-test/busybox:1");
    let pause = format!("{addr}/berth-test/pause:1");
    for (tag, reference) in [("latest", &busybox), ("pause", &pause)] {
        run_ok(Command::new("skopeo").args([
            "copy",
            "--quiet",
            "--dest-tls-verify=false",
            &format!("oci:{}", image(tag)),
            &format!("docker://{reference}"),
        ]));
    }
    (busybox, pause)
}

/// The CRI plugin's tables: the `berth` handler beside the default `runc`
/// one (so a pod not run by `berth` would show), the sandbox image from the
/// test's registry (plain http, through a hosts.toml under `dir`), private
/// empty CNI directories, and the stream server on a free loopback port.
/// OOM score adjustments are kept at or above containerd's own (the
/// kubelet's -998 for a sandbox needs CAP_SYS_RESOURCE, which a test
/// machine inside a container may lack).
fn cri_config(dir: &Path, registry: &str, pause: &str, subnet: Option<&str>) -> String {
    let hosts = dir.join("certs.d").join(registry);
    std::fs::create_dir_all(&hosts).expect("create the registry hosts directory");
    std::fs::write(
        hosts.join("hosts.toml"),
        format!(
            "server = \"http://{registry}\"\n[host.\"http://{registry}\"]\n  capabilities = [\"pull\", \"resolve\"]\n"
        ),
    )
    .expect("write hosts.toml");
    for d in ["cni/bin", "cni/conf"] {
        std::fs::create_dir_all(dir.join(d)).expect("create a CNI directory");
    }
    let bin_dir = match subnet {
        None => dir.join("cni/bin"),
        Some(subnet) => {
            let ptp = require_peer(CNI_PTP);
            let conflist = serde_json::json!({
                "cniVersion": "0.4.0",
                "name": "berth-cri",
                "plugins": [{
                    "type": "ptp",
                    "ipMasq": false,
                    "ipam": {
                        "type": "host-local",
                        "ranges": [[{"subnet": subnet}]],
                        "dataDir": dir.join("cni/ipam"),
                    },
                }],
            });
            std::fs::write(
                dir.join("cni/conf/10-berth-cri.conflist"),
                conflist.to_string(),
            )
            .expect("write the CNI conflist");
            ptp.parent()
                .expect("the CNI plugins' directory")
                .to_path_buf()
        }
    };
    let cri = "[plugins.\"io.containerd.grpc.v1.cri\"";
    format!(
        "{cri}]\n  sandbox_image = \"{pause}\"\n  netns_mounts_under_state_dir = true\n  stream_server_address = \"127.0.0.1\"\n  stream_server_port = \"0\"\n  disable_apparmor = true\n  enable_selinux = false\n  restrict_oom_score_adj = true\n\
         {cri}.containerd]\n  snapshotter = \"overlayfs\"\n  default_runtime_name = \"runc\"\n\
         {cri}.containerd.runtimes.runc]\n  runtime_type = \"io.containerd.runc.v2\"\n\
         {cri}.containerd.runtimes.{HANDLER}]\n  runtime_type = \"io.containerd.berth.v2\"\n\
         {cri}.cni]\n  bin_dir = \"{}\"\n  conf_dir = \"{}\"\n\
         {cri}.registry]\n  config_path = \"{}\"\n",
        bin_dir.display(),
        dir.join("cni/conf").display(),
        dir.join("certs.d").display(),
    )
}

/// Mount points under `dir` (deepest first).
fn mounts_under(dir: &Path) -> Vec<String> {
    let dir = dir.to_string_lossy().into_owned();
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut points: Vec<String> = mountinfo
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|p| p.starts_with(dir.as_str()))
        .map(str::to_string)
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.len()));
    points
}

/// The pid containerd reports in a verbose status's `info` JSON.
fn info_pid(info: &std::collections::HashMap<String, String>) -> i32 {
    let json = info.get("info").expect("verbose info");
    let value: serde_json::Value = serde_json::from_str(json).expect("info is JSON");
    value["pid"]
        .as_i64()
        .and_then(|p| i32::try_from(p).ok())
        .filter(|p| *p > 0)
        .unwrap_or_else(|| panic!("no pid in {json}"))
}

/// The parent pid of `pid` (from /proc/PID/status).
fn parent_of(pid: i32) -> i32 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("PPid:"))
        .and_then(|p| p.trim().parse().ok())
        .expect("a PPid line")
}

/// The memory limit of the cgroup `pid` is in: cgroup v1's
/// memory.limit_in_bytes, or cgroup v2's memory.max.
fn memory_limit_of(pid: i32) -> u64 {
    let cgroups = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).expect("read cgroup");
    let v1 = cgroups.lines().find_map(|l| {
        let mut parts = l.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        controllers
            .split(',')
            .any(|c| c == "memory")
            .then(|| format!("/sys/fs/cgroup/memory{path}/memory.limit_in_bytes"))
    });
    let file = v1.unwrap_or_else(|| {
        let path = cgroups
            .lines()
            .find_map(|l| l.strip_prefix("0::"))
            .expect("a cgroup v2 line");
        format!("/sys/fs/cgroup{path}/memory.max")
    });
    let text = std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("read {file}: {e}"));
    text.trim()
        .parse()
        .unwrap_or_else(|_| panic!("{file} holds {text:?}"))
}

/// Waits until the CRI log file at `path` has a line for `stream` holding
/// `text` (the log is written as output arrives: a readiness wait); returns
/// the file.
fn wait_log_line(path: &Path, stream: &str, text: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let log = std::fs::read_to_string(path).unwrap_or_default();
        // A CRI log line: TIMESTAMP STREAM TAG(F full, P partial) TEXT.
        let found = log.lines().any(|l| {
            let mut f = l.splitn(4, ' ');
            let (_, s, tag, rest) = (f.next(), f.next(), f.next(), f.next());
            s == Some(stream) && tag == Some("F") && rest == Some(text)
        });
        if found {
            return log;
        }
        assert!(
            Instant::now() < deadline,
            "{} never had a {stream} line {text:?}:\n{log}",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_pod_and_its_container_run_through_the_cri_under_one_berth_shim() {
    let cri = Cri::new();

    // What the kubelet asks first.
    let version = cri.runtime("Version", |mut c| async move {
        c.version(v1::VersionRequest::default()).await
    });
    assert_eq!(version.runtime_name, "containerd");
    assert_eq!(version.runtime_api_version, "v1");

    // The image, pulled from the test's registry.
    let image_ref = cri.pull_busybox();
    assert!(image_ref.starts_with("sha256:"), "{image_ref}");

    // The pod, with the sandbox image pulled by containerd itself.
    let pod_config = cri.pod_config("web");
    let pod = cri.run_pod(&pod_config);
    let req = v1::PodSandboxStatusRequest {
        pod_sandbox_id: pod.clone(),
        verbose: true,
    };
    let pod_status = cri.runtime("PodSandboxStatus", |mut c| async move {
        c.pod_sandbox_status(req).await
    });
    let status = pod_status.status.as_ref().expect("a pod status");
    assert_eq!(status.state, v1::PodSandboxState::SandboxReady as i32);
    assert_eq!(status.runtime_handler, HANDLER);
    let sandbox_pid = info_pid(&pod_status.info);

    // A long-running container writing to stdout, stopped gracefully.
    let script = "trap 'echo got TERM; exit 0' TERM; echo hello from berth under CRI; \
                  while :; do sleep 1 & wait $!; done";
    let limit: i64 = 256 << 20;
    let app = cri.start_container(&pod, &pod_config, "app", &["sh", "-c", script], limit);
    let status = cri.container_status(&app);
    let app_pid = info_pid(&status.info);
    let state = status.status.as_ref().expect("a status").state;
    assert_eq!(state, v1::ContainerState::ContainerRunning as i32);

    // The sandbox and the container: children of one berth shim, and no
    // runc shim anywhere for this containerd.
    let shims = cri.cd.shim_pids();
    assert_eq!(shims.len(), 1, "one shim for the pod, not {shims:?}");
    let cmdline = std::fs::read(format!("/proc/{}/cmdline", shims[0])).expect("shim cmdline");
    assert!(
        String::from_utf8_lossy(&cmdline).contains("containerd-shim-berth-v2"),
        "{}",
        String::from_utf8_lossy(&cmdline)
    );
    assert_eq!(parent_of(sandbox_pid), shims[0], "the sandbox's parent");
    assert_eq!(parent_of(app_pid), shims[0], "the container's parent");

    // ExecSync: output and exit code come back.
    let req = v1::ExecSyncRequest {
        container_id: app.clone(),
        cmd: ["sh", "-c", "echo out; echo err >&2; exit 7"]
            .map(String::from)
            .to_vec(),
        timeout: 0,
    };
    let exec = cri.runtime("ExecSync", |mut c| async move { c.exec_sync(req).await });
    assert_eq!(
        (
            exec.stdout.as_slice(),
            exec.stderr.as_slice(),
            exec.exit_code
        ),
        (&b"out\n"[..], &b"err\n"[..], 7)
    );

    // The container's output in its CRI log file.
    let log_path = Path::new(&pod_config.log_directory).join("app/0.log");
    wait_log_line(&log_path, "stdout", "hello from berth under CRI");

    // ContainerStats (what the kubelet's summary API reads): the shim's
    // cgroup metrics, decoded by containerd.
    let req = v1::ContainerStatsRequest {
        container_id: app.clone(),
    };
    let stats = cri
        .runtime("ContainerStats", |mut c| async move {
            c.container_stats(req).await
        })
        .stats
        .expect("container stats");
    let working_set = stats
        .memory
        .as_ref()
        .and_then(|m| m.working_set_bytes.as_ref())
        .map(|v| v.value);
    assert!(working_set > Some(0), "{stats:?}");
    let cpu = stats
        .cpu
        .as_ref()
        .and_then(|c| c.usage_core_nano_seconds.as_ref())
        .map(|v| v.value);
    assert!(cpu > Some(0), "{stats:?}");

    // UpdateContainerResources reaches the container's cgroup.
    assert_eq!(memory_limit_of(app_pid), limit as u64);
    let smaller: i64 = 64 << 20;
    let req = v1::UpdateContainerResourcesRequest {
        container_id: app.clone(),
        linux: Some(v1::LinuxContainerResources {
            memory_limit_in_bytes: smaller,
            ..Default::default()
        }),
        ..Default::default()
    };
    cri.runtime("UpdateContainerResources", |mut c| async move {
        c.update_container_resources(req).await
    });
    assert_eq!(memory_limit_of(app_pid), smaller as u64);

    // StopContainer's SIGTERM reaches the process, which exits 0.
    let req = v1::StopContainerRequest {
        container_id: app.clone(),
        timeout: 30,
    };
    cri.runtime("StopContainer", |mut c| async move {
        c.stop_container(req).await
    });
    let status = cri.wait_exited(&app);
    assert_eq!(status.exit_code, 0, "{status:?}");
    wait_log_line(&log_path, "stdout", "got TERM");

    cri.remove_pod(&pod, &[&app]);
    cri.assert_nothing_left();
}

#[test]
fn a_container_that_exits_reports_its_exit_code() {
    let cri = Cri::new();
    cri.pull_busybox();
    let pod_config = cri.pod_config("job");
    let pod = cri.run_pod(&pod_config);
    let job = cri.start_container(
        &pod,
        &pod_config,
        "job",
        &["sh", "-c", "echo done >&2; exit 3"],
        0,
    );
    let status = cri.wait_exited(&job);
    assert_eq!(status.exit_code, 3, "{status:?}");
    assert_eq!(status.reason, "Error", "{status:?}");
    // containerd stamps started_at when the start call returns, which may
    // be after a quick process has already exited: only order against the
    // creation.
    assert!(status.started_at > status.created_at, "{status:?}");
    assert!(status.finished_at > status.created_at, "{status:?}");
    let log_path = Path::new(&pod_config.log_directory).join("job/0.log");
    wait_log_line(&log_path, "stderr", "done");
    cri.remove_pod(&pod, &[&job]);
    cri.assert_nothing_left();
}

#[test]
fn a_pod_on_a_cni_network_shares_its_network_namespace_with_its_containers() {
    // A /30 of its own (the pod gets .2, the host side of the ptp link
    // .1), away from berth's 10.89.N.0/24 bridges.
    let third = std::process::id() % 256;
    let subnet = format!("10.251.{third}.0/30");
    let pod_ip = format!("10.251.{third}.2");
    let cri = Cri::start(Some(&subnet));
    cri.pull_busybox();
    let pod_config = cri.pod_config("net");
    let pod = cri.run_pod(&pod_config);
    let req = v1::PodSandboxStatusRequest {
        pod_sandbox_id: pod.clone(),
        verbose: true,
    };
    let pod_status = cri.runtime("PodSandboxStatus", |mut c| async move {
        c.pod_sandbox_status(req).await
    });
    let ip = pod_status
        .status
        .as_ref()
        .and_then(|s| s.network.as_ref())
        .map(|n| n.ip.clone());
    assert_eq!(ip.as_deref(), Some(pod_ip.as_str()), "{pod_status:?}");
    let sandbox_pid = info_pid(&pod_status.info);

    let app = cri.start_container(&pod, &pod_config, "app", &["sleep", "1000"], 0);
    let app_pid = info_pid(&cri.container_status(&app).info);
    // The container joined the sandbox's network namespace, not the host's.
    let netns = |pid: &str| std::fs::read_link(format!("/proc/{pid}/ns/net")).expect("netns");
    assert_eq!(netns(&app_pid.to_string()), netns(&sandbox_pid.to_string()));
    assert_ne!(netns(&app_pid.to_string()), netns("self"));
    // ... where the CNI plugin put the pod's address.
    let req = v1::ExecSyncRequest {
        container_id: app.clone(),
        cmd: ["ip", "-4", "-o", "addr", "show", "eth0"]
            .map(String::from)
            .to_vec(),
        timeout: 0,
    };
    let exec = cri.runtime("ExecSync", |mut c| async move { c.exec_sync(req).await });
    let shown = String::from_utf8_lossy(&exec.stdout).into_owned();
    assert!(
        exec.exit_code == 0 && shown.contains(&format!(" {pod_ip}/30 ")),
        "{exec:?}"
    );

    cri.remove_pod(&pod, &[&app]);
    cri.assert_nothing_left();
    // StopPodSandbox ran the CNI DEL: the host's route to the pod is gone.
    let routes = run_ok(Command::new(require_peer("ip")).args(["-4", "route", "show"]));
    let routes = String::from_utf8_lossy(&routes.stdout).into_owned();
    assert!(!routes.contains(&pod_ip), "{routes}");
}
