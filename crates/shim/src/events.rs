//! Task events published back to containerd (TaskCreate, TaskStart,
//! TaskExit, ...): queued in order and sent by one thread over containerd's
//! ttrpc socket, reconnecting and retrying while containerd restarts, so an
//! exit that happens meanwhile is not lost.

use std::sync::mpsc::{channel, Receiver, Sender};
use std::time::{Duration, Instant, SystemTime};

use containerd_shim_protos::protobuf::well_known_types::any::Any;
use containerd_shim_protos::protobuf::well_known_types::timestamp::Timestamp;
use containerd_shim_protos::protobuf::MessageDyn;
use containerd_shim_protos::shim::event::Envelope;
use containerd_shim_protos::shim::events::ForwardRequest;
use containerd_shim_protos::ttrpc::Client;
use containerd_shim_protos::EventsClient;

/// How long one event is retried before it is dropped (with a log line).
const RETRY_FOR: Duration = Duration::from_secs(120);

/// One event: its topic and message.
type Event = (&'static str, Box<dyn MessageDyn>);

/// The queue of events to containerd.
pub struct Publisher {
    queue: Sender<Event>,
}

impl Publisher {
    /// Starts the sending thread for containerd's ttrpc `address`, with
    /// events in `namespace`.
    pub fn start(address: String, namespace: String) -> Publisher {
        let (queue, rx) = channel();
        std::thread::spawn(move || send_all(&address, &namespace, rx));
        Publisher { queue }
    }

    /// Queues `event` under `topic` (a `containerd_shim_protos::topics` name).
    pub fn publish(&self, topic: &'static str, event: impl MessageDyn) {
        let _ = self.queue.send((topic, Box::new(event)));
    }
}

/// Connects to containerd's ttrpc socket at `address`.
fn connect(address: &str) -> Option<EventsClient> {
    let path = address.strip_prefix("unix://").unwrap_or(address);
    let stream = std::os::unix::net::UnixStream::connect(path).ok()?;
    let client = Client::new(std::os::fd::IntoRawFd::into_raw_fd(stream)).ok()?;
    Some(EventsClient::new(client))
}

/// `event` in its envelope, as containerd's Forward takes it.
fn envelope(topic: &str, namespace: &str, event: &dyn MessageDyn) -> Option<ForwardRequest> {
    let any = Any {
        type_url: event.descriptor_dyn().full_name().to_string(),
        value: event.write_to_bytes_dyn().ok()?,
        ..Default::default()
    };
    Some(ForwardRequest {
        envelope: Some(Envelope {
            timestamp: Some(now()).into(),
            namespace: namespace.to_string(),
            topic: topic.to_string(),
            event: Some(any).into(),
            ..Default::default()
        })
        .into(),
        ..Default::default()
    })
}

fn send_all(address: &str, namespace: &str, rx: Receiver<Event>) {
    let mut client: Option<EventsClient> = None;
    for (topic, event) in rx {
        let Some(req) = envelope(topic, namespace, event.as_ref()) else {
            log::error!("cannot encode event {topic}");
            continue;
        };
        let deadline = Instant::now() + RETRY_FOR;
        loop {
            if client.is_none() {
                client = connect(address);
            }
            let sent = client.as_ref().map(|c| {
                let ctx = containerd_shim_protos::ttrpc::context::with_timeout(
                    Duration::from_secs(10).as_nanos() as i64,
                );
                c.forward(ctx, &req)
            });
            match sent {
                Some(Ok(_)) => break,
                Some(Err(e)) if Instant::now() > deadline => {
                    log::error!("dropping event {topic} after retrying for {RETRY_FOR:?}: {e}");
                    break;
                }
                None if Instant::now() > deadline => {
                    log::error!("dropping event {topic}: containerd at {address} unreachable for {RETRY_FOR:?}");
                    break;
                }
                _ => {
                    client = None;
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        }
    }
}

/// The current time as a protobuf timestamp.
pub fn now() -> Timestamp {
    let d = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    Timestamp {
        seconds: d.as_secs() as i64,
        nanos: d.subsec_nanos() as i32,
        ..Default::default()
    }
}
