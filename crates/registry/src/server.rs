//! Starting, serving and stopping the registry: TCP or TLS accept loop,
//! header timeouts, graceful shutdown, the GC task and the sweep of
//! abandoned upload sessions.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::api::{router, App};
use crate::auth::{Auth, AuthError};
use crate::config::Config;
use crate::lowat::ConnSocket;
use crate::metrics::Metrics;
use crate::storage::FsDriver;
use crate::store::Store;

/// Error starting the registry.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The storage root could not be created.
    #[error("storage root {path}: {source}")]
    Storage {
        /// The directory.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source} (is another registry running there?)")]
    Bind {
        /// The address.
        addr: String,
        /// Why.
        source: std::io::Error,
    },
    /// Auth configuration is wrong.
    #[error(transparent)]
    Auth(#[from] AuthError),
    /// TLS files are wrong.
    #[error("TLS: {0}")]
    Tls(String),
}

/// A running registry.
pub struct Server {
    addr: SocketAddr,
    app: Arc<App>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
    log_task: Option<tokio::task::JoinHandle<()>>,
}

impl Server {
    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The shared state (store, metrics).
    pub fn app(&self) -> &Arc<App> {
        &self.app
    }

    /// Stops accepting, lets requests in flight finish (up to `grace`), and returns.
    pub async fn shutdown(self, grace: Duration) {
        let _ = self.stop.send(true);
        let _ = tokio::time::timeout(grace + Duration::from_secs(1), self.task).await;
        // The access log ends when the last handle on the app is gone;
        // wait for it so every line of a finished request is written.
        drop(self.app);
        if let Some(log) = self.log_task {
            let _ = tokio::time::timeout(Duration::from_secs(5), log).await;
        }
    }

    /// Waits until the server stops by itself (it only does on shutdown).
    pub async fn wait(self) {
        let _ = self.task.await;
    }
}

fn tls_acceptor(cfg: &crate::config::TlsConfig) -> Result<tokio_rustls::TlsAcceptor, StartError> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&cfg.cert)
        .map_err(|e| StartError::Tls(format!("certificate file {}: {e}", cfg.cert.display())))?
        .collect::<Result<_, _>>()
        .map_err(|e| StartError::Tls(format!("certificate file {}: {e}", cfg.cert.display())))?;
    let key = PrivateKeyDer::from_pem_file(&cfg.key)
        .map_err(|e| StartError::Tls(format!("key file {}: {e}", cfg.key.display())))?;
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let mut sc = tokio_rustls::rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| StartError::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| {
            StartError::Tls(format!(
                "{} / {}: {e}",
                cfg.cert.display(),
                cfg.key.display()
            ))
        })?;
    sc.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(sc)))
}

/// Attaches a plain-TCP connection's [`ConnSocket`] to each of its
/// requests (for [`crate::lowat`]).
#[derive(Clone)]
struct WithSocket<S> {
    inner: S,
    socket: Option<ConnSocket>,
}

impl<S, B> hyper::service::Service<hyper::Request<B>> for WithSocket<S>
where
    S: hyper::service::Service<hyper::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn call(&self, mut req: hyper::Request<B>) -> Self::Future {
        if let Some(socket) = &self.socket {
            req.extensions_mut().insert(socket.clone());
        }
        self.inner.call(req)
    }
}

/// Tunes glibc's malloc for a server that streams uploads through buffers
/// of up to ~1 MiB. Call before starting threads.
///
/// - Two arenas: without the cap every blocking-pool thread that touches a
///   buffer gets its own arena, and resident memory grows with the thread
///   count rather than with the work.
/// - Buffers below 2 MiB come from the arenas, and up to 16 MiB of freed
///   memory stays there. With glibc's defaults each ~400 KiB receive buffer
///   was a fresh `mmap` (or heap growth after a trim): the kernel then
///   zeroed and mapped ~1,400 pages per pushed image, 90 % of them faulted
///   in by `recv` itself; now ~200.
pub fn tune_malloc() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets allocator parameters, all with valid
    // positive values, before other threads exist.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
        libc::mallopt(libc::M_MMAP_THRESHOLD, 2 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 16 << 20);
    }
}

/// Starts the task writing access-log lines (JSON, one per request) to
/// stdout, batching writes so logging never blocks a request.
fn spawn_access_log() -> (
    tokio::sync::mpsc::UnboundedSender<String>,
    tokio::task::JoinHandle<()>,
) {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    let task = tokio::spawn(async move {
        use tokio::io::AsyncWriteExt;
        let mut out = tokio::io::BufWriter::new(tokio::io::stdout());
        while let Some(line) = rx.recv().await {
            let mut ok =
                out.write_all(line.as_bytes()).await.is_ok() && out.write_all(b"\n").await.is_ok();
            while let Ok(line) = rx.try_recv() {
                ok = ok
                    && out.write_all(line.as_bytes()).await.is_ok()
                    && out.write_all(b"\n").await.is_ok();
            }
            if !ok || out.flush().await.is_err() {
                return;
            }
        }
    });
    (tx, task)
}

/// Removes abandoned upload sessions while the registry serves (see
/// [`Store::expire_uploads`]). Sessions in memory are checked every quarter
/// of the idle timeout (at most every minute), so one goes at most 25 %
/// after its time; storage is listed for sessions left from before a
/// restart once per idle timeout (at most hourly), as listing costs a
/// request per session on S3.
async fn expire_uploads(app: Arc<App>, mut stopped: watch::Receiver<bool>) {
    let idle = app.store.upload_idle_timeout;
    let tick = (idle / 4).clamp(Duration::from_millis(250), Duration::from_secs(60));
    let scan_every = idle.min(Duration::from_secs(3600));
    let mut last_scan = std::time::Instant::now();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(tick) => {}
            _ = stopped.changed() => return,
        }
        let stored = last_scan.elapsed() >= scan_every;
        if stored {
            last_scan = std::time::Instant::now();
        }
        match app.store.expire_uploads(stored).await {
            Ok(0) => {}
            Ok(n) => {
                app.metrics
                    .uploads_expired
                    .fetch_add(n, std::sync::atomic::Ordering::Relaxed);
                tracing::info!(uploads = n, "abandoned upload sessions removed");
            }
            Err(e) => tracing::warn!(error = %e, "removing abandoned upload sessions failed"),
        }
    }
}

/// Where the token signing key lives when `auth.token.secret` is not set.
const TOKEN_SECRET_KEY: &str = "secrets/token";

/// The token signing key every replica sharing the storage uses: read
/// from storage, or created there by the first replica to start (a
/// conditional create, so concurrent starts agree on one). A token issued
/// by one replica is then accepted by all, and survives restarts.
async fn shared_token_secret(driver: &dyn crate::storage::Driver) -> std::io::Result<String> {
    use crate::storage::Precondition;
    loop {
        if let Some(s) = driver.get(TOKEN_SECRET_KEY).await? {
            return Ok(String::from_utf8_lossy(&s).into_owned());
        }
        let fresh = crate::storage::random_hex(32);
        let created = driver
            .put_if(
                TOKEN_SECRET_KEY,
                fresh.clone().into(),
                &Precondition::Absent,
            )
            .await?;
        if created.is_some() {
            return Ok(fresh);
        }
    }
}

/// Starts a registry for `config` on the current tokio runtime.
pub async fn start(config: Config) -> Result<Server, StartError> {
    let driver: Arc<dyn crate::storage::Driver> =
        match &config.storage.s3 {
            Some(s3) => Arc::new(crate::storage::S3Driver::new(s3).map_err(|source| {
                StartError::Storage {
                    path: format!("{}/{}", s3.endpoint, s3.bucket),
                    source,
                }
            })?),
            None => Arc::new(FsDriver::new(&config.storage.root).map_err(|source| {
                StartError::Storage {
                    path: config.storage.root.display().to_string(),
                    source,
                }
            })?),
        };
    let mut store = Store::new(driver);
    store.max_blob_size = config.limits.max_blob_size;
    store.max_uploads_per_repo = config.limits.max_uploads_per_repo;
    store.upload_idle_timeout = Duration::from_secs(config.limits.upload_idle_timeout_secs.max(1));
    store.touch_after = Duration::from_secs(10).min(Duration::from_secs(config.gc.grace_secs) / 4);
    let mut auth_config = config.auth.clone();
    if let Some(token) = auth_config.token.as_mut() {
        if token.secret.is_none() {
            let secret = shared_token_secret(store.driver.as_ref()).await;
            token.secret = Some(secret.map_err(|source| StartError::Storage {
                path: TOKEN_SECRET_KEY.into(),
                source,
            })?);
        }
    }
    let auth = if auth_config.htpasswd.is_some() || auth_config.token.is_some() {
        Auth::from_config(&auth_config)?
    } else {
        Auth::open()
    };
    if let Some(token) = &config.metrics.token {
        crate::auth::require_long_secret("metrics.token", token)?;
    }
    let tls = config.tls.as_ref().map(tls_acceptor).transpose()?;
    let (access_log, log_task) = match config.log.access {
        true => {
            let (tx, task) = spawn_access_log();
            (Some(tx), Some(task))
        }
        false => (None, None),
    };
    let app = Arc::new(App {
        store,
        auth,
        metrics: Metrics::default(),
        read_only: config.read_only,
        tls: tls.is_some(),
        body_idle_timeout: Duration::from_secs(config.limits.body_idle_timeout_secs.max(1)),
        request_timeout: Duration::from_secs(config.limits.request_timeout_secs.max(1)),
        max_in_flight: config
            .limits
            .max_in_flight
            .map(|n| i64::try_from(n).unwrap_or(i64::MAX)),
        access_log,
        metrics_token: config.metrics.token.clone(),
    });
    let listener = TcpListener::bind(&config.addr)
        .await
        .map_err(|source| StartError::Bind {
            addr: config.addr.clone(),
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| StartError::Bind {
        addr: config.addr.clone(),
        source,
    })?;
    let (stop, mut stopped) = watch::channel(false);

    if config.gc.enabled && !config.read_only {
        let app = app.clone();
        let gc = config.gc.clone();
        let mut stopped = stopped.clone();
        tokio::spawn(async move {
            let every = Duration::from_secs(gc.interval_secs.max(1));
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(every) => {}
                    _ = stopped.changed() => return,
                }
                match crate::gc::collect(&app.store, &gc, &app.metrics).await {
                    Ok(r) => tracing::info!(
                        blobs = r.blobs,
                        manifests = r.manifests,
                        uploads = r.uploads,
                        "gc run finished"
                    ),
                    Err(e) => tracing::warn!(error = %e, "gc run failed"),
                }
            }
        });
    }

    if !config.read_only {
        tokio::spawn(expire_uploads(app.clone(), stopped.clone()));
    }

    let header_timeout = Duration::from_secs(config.limits.header_timeout_secs.max(1));
    let service = TowerToHyperService::new(router(app.clone()));
    let task = tokio::spawn(async move {
        let graceful = hyper_util::server::graceful::GracefulShutdown::new();
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(header_timeout);
        loop {
            let (stream, peer) = tokio::select! {
                r = listener.accept() => match r {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                _ = stopped.changed() => break,
            };
            let _ = stream.set_nodelay(true);
            let service = service.clone();
            match &tls {
                None => {
                    let service = WithSocket {
                        inner: service,
                        socket: ConnSocket::of(&stream),
                    };
                    let conn =
                        builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
                    let conn = graceful.watch(conn.into_owned());
                    tokio::spawn(async move {
                        if let Err(e) = conn.await {
                            tracing::debug!(%peer, error = %e, "connection ended with an error");
                        }
                    });
                }
                Some(acceptor) => {
                    let acceptor = acceptor.clone();
                    let builder = builder.clone();
                    let watcher = graceful.watcher();
                    tokio::spawn(async move {
                        let tls_stream =
                            match tokio::time::timeout(header_timeout, acceptor.accept(stream))
                                .await
                            {
                                Ok(Ok(s)) => s,
                                Ok(Err(e)) => {
                                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                                    return;
                                }
                                Err(_) => return,
                            };
                        let conn = builder
                            .serve_connection_with_upgrades(TokioIo::new(tls_stream), service);
                        if let Err(e) = watcher.watch(conn.into_owned()).await {
                            tracing::debug!(%peer, error = %e, "connection ended with an error");
                        }
                    });
                }
            }
        }
        drop(listener);
        if tokio::time::timeout(Duration::from_secs(30), graceful.shutdown())
            .await
            .is_err()
        {
            tracing::warn!("connections still open after 30s; closing them");
        }
    });
    Ok(Server {
        addr,
        app,
        stop,
        task,
        log_task,
    })
}
