//! The messages between the runtime's processes, as one enum: every send
//! and receive on the two channels below goes through [`Message::encode`]
//! and [`Message::decode`] (or [`decode_stream`]).
//!
//! - The **sync channel** (`channel.rs`): a `SOCK_SEQPACKET` pair between
//!   the parent (`create`, `exec`) and the children it forks (P1 and the
//!   init; exec's child and process). One message per packet: the tag
//!   byte, then the payload up to the end of the packet.
//! - The **start channel**: `<root>/<id>/exec.sock`, a `SOCK_STREAM`
//!   socket the created init waits on. `start` connects and reads until
//!   EOF; the init writes one or two messages. The socket is close-on-exec,
//!   so EOF right after [`Message::Exec`] means the process was exec'd. On
//!   this stream a message without payload is its tag byte alone, and a
//!   message with a payload takes the rest of the stream.
//!
//! Wire table (tag byte → message → payload):
//!
//! | tag | message | channel: sender → receiver | payload |
//! |-----|---------|----------------------------|---------|
//! | `G` | [`Message::Go`] | sync: parent → P1, exec's child | JSON list of `[cgroup directory, hierarchy]` pairs the init binds on /sys/fs/cgroup (`[]` for exec); sent once the cgroup limits are written |
//! | `U` | [`Message::UserNsCreated`] | sync: P1 → parent | none; P1 unshared its user namespace: write its uid_map and gid_map |
//! | `u` | [`Message::IdMapsWritten`] | sync: parent → P1 | none |
//! | `P` | [`Message::Pid`] | sync: P1, exec's child → parent | the host pid of the init (or of the exec'd process), in decimal |
//! | `H` | [`Message::HooksWanted`] | sync: init → parent | none; the rootfs is ready: run the prestart and createRuntime hooks |
//! | `h` | [`Message::HookState`] | sync: parent → init | the state JSON the hooks were given (status `creating`), for the in-container hooks |
//! | `R` | [`Message::Ready`] | sync: init → parent | none; set up, now waiting on exec.sock |
//! | `E` | [`Message::Error`] | sync: any child → parent; start: init → `start` | the error, UTF-8; the sender exits |
//! | `0` | [`Message::Exec`] | start: init → `start` | none; startContainer hooks passed, exec'ing the process |
//! | `S` | [`Message::SeccompListener`] | sync: init, exec's process → parent | the number, in the sender, of the seccomp listener fd its filter's SCMP_ACT_NOTIFY rules gave it, decimal; the parent takes it with pidfd_getfd and passes it to `linux.seccomp.listenerPath` |
//! | `s` | [`Message::SeccompListenerTaken`] | sync: parent → init, exec's process | none; the sender may close its copy |
//! | `X` | [`Message::ExecFailed`] | start: exec trampoline → `start` | the errno of the failed execve, decimal digits (the trampoline writes four) |
//!
//! Decoding an unknown tag, or a payload that does not fit its tag, is an
//! error naming the tag.

use std::fmt;
use std::path::PathBuf;

/// One message of the sync or the start channel (see the module's table).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Message {
    /// `G`: go on; the cgroup binds for /sys/fs/cgroup.
    Go(Vec<(PathBuf, String)>),
    /// `U`: a new user namespace waits for its id maps.
    UserNsCreated,
    /// `u`: the id maps are written.
    IdMapsWritten,
    /// `P`: the host pid of the init or of the exec'd process.
    Pid(i32),
    /// `H`: run the prestart and createRuntime hooks.
    HooksWanted,
    /// `h`: the state JSON given to the hooks.
    HookState(Vec<u8>),
    /// `R`: the init is ready and waits for `start`.
    Ready,
    /// `E`: a child failed; it exits after sending this.
    Error(String),
    /// `0`: the init execs the container's process.
    Exec,
    /// `X`: the exec trampoline's execve failed with this errno.
    ExecFailed(i32),
    /// `S`: the sender's seccomp listener is its fd with this number.
    SeccompListener(i32),
    /// `s`: the parent has the seccomp listener.
    SeccompListenerTaken,
}

/// Why a message could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum DecodeError {
    /// Nothing to decode.
    #[error("empty message")]
    Empty,
    /// The tag byte is none of the table's.
    #[error("unknown message tag {}", show_tag(*.0))]
    UnknownTag(u8),
    /// The payload does not fit the tag.
    #[error("message {} ({name}): {problem}", show_tag(*.tag))]
    BadPayload {
        /// The tag byte.
        tag: u8,
        /// The message's name.
        name: &'static str,
        /// What is wrong with the payload.
        problem: String,
    },
}

/// A tag byte as `0x47 'G'` (the character only when printable).
fn show_tag(tag: u8) -> String {
    if tag.is_ascii_graphic() {
        format!("0x{tag:02x} '{}'", tag as char)
    } else {
        format!("0x{tag:02x}")
    }
}

/// Whether messages of `tag` carry a payload; None for an unknown tag.
fn has_payload(tag: u8) -> Option<bool> {
    match tag {
        b'G' | b'P' | b'h' | b'E' | b'X' | b'S' => Some(true),
        b'U' | b'u' | b'H' | b'R' | b'0' | b's' => Some(false),
        _ => None,
    }
}

impl Message {
    /// The tag byte.
    pub(crate) fn tag(&self) -> u8 {
        match self {
            Message::Go(_) => b'G',
            Message::UserNsCreated => b'U',
            Message::IdMapsWritten => b'u',
            Message::Pid(_) => b'P',
            Message::HooksWanted => b'H',
            Message::HookState(_) => b'h',
            Message::Ready => b'R',
            Message::Error(_) => b'E',
            Message::Exec => b'0',
            Message::ExecFailed(_) => b'X',
            Message::SeccompListener(_) => b'S',
            Message::SeccompListenerTaken => b's',
        }
    }

    /// The message's name in the table (for errors).
    pub(crate) fn name(&self) -> &'static str {
        name_of(self.tag())
    }

    /// The message on the wire: the tag byte, then the payload.
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = vec![self.tag()];
        match self {
            Message::Go(binds) => {
                // Paths and names serialize as JSON strings; this cannot fail.
                out.extend(serde_json::to_vec(binds).unwrap_or_else(|_| b"[]".to_vec()));
            }
            Message::Pid(pid) => out.extend(pid.to_string().as_bytes()),
            Message::HookState(json) => out.extend(json),
            Message::Error(msg) => out.extend(msg.as_bytes()),
            Message::ExecFailed(errno) => out.extend(errno.to_string().as_bytes()),
            Message::SeccompListener(fd) => out.extend(fd.to_string().as_bytes()),
            Message::SeccompListenerTaken
            | Message::UserNsCreated
            | Message::IdMapsWritten
            | Message::HooksWanted
            | Message::Ready
            | Message::Exec => {}
        }
        out
    }

    /// Decodes one whole message: the tag byte and its payload, nothing
    /// more (a sync channel packet).
    pub(crate) fn decode(buf: &[u8]) -> Result<Message, DecodeError> {
        let (&tag, payload) = buf.split_first().ok_or(DecodeError::Empty)?;
        let bad = |problem: String| DecodeError::BadPayload {
            tag,
            name: name_of(tag),
            problem,
        };
        let number = |what: &str| -> Result<i32, DecodeError> {
            std::str::from_utf8(payload)
                .ok()
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| bad(format!("{what} {:?} is not a number", lossy(payload))))
        };
        if has_payload(tag) == Some(false) && !payload.is_empty() {
            return Err(bad(format!(
                "{} unexpected payload bytes (this message has none)",
                payload.len()
            )));
        }
        Ok(match tag {
            b'G' => Message::Go(
                serde_json::from_slice(payload)
                    .map_err(|e| bad(format!("cgroup binds are not valid JSON: {e}")))?,
            ),
            b'U' => Message::UserNsCreated,
            b'u' => Message::IdMapsWritten,
            b'P' => {
                let pid = number("pid")?;
                if pid <= 0 {
                    return Err(bad(format!("pid {pid} is not a process")));
                }
                Message::Pid(pid)
            }
            b'H' => Message::HooksWanted,
            b'h' => Message::HookState(payload.to_vec()),
            b'R' => Message::Ready,
            b'E' => Message::Error(lossy(payload)),
            b'0' => Message::Exec,
            b'X' => Message::ExecFailed(number("errno")?),
            b'S' => {
                let fd = number("fd")?;
                if fd < 0 {
                    return Err(bad(format!("fd {fd} is not a descriptor")));
                }
                Message::SeccompListener(fd)
            }
            b's' => Message::SeccompListenerTaken,
            other => return Err(DecodeError::UnknownTag(other)),
        })
    }
}

impl fmt::Display for Message {
    /// The tag and name, without the payload (which may be large).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", show_tag(self.tag()), self.name())
    }
}

fn name_of(tag: u8) -> &'static str {
    match tag {
        b'G' => "go",
        b'U' => "user namespace created",
        b'u' => "id maps written",
        b'P' => "pid",
        b'H' => "hooks wanted",
        b'h' => "hook state",
        b'R' => "ready",
        b'E' => "error",
        b'0' => "exec",
        b'X' => "exec failed",
        b'S' => "seccomp listener",
        b's' => "seccomp listener taken",
        _ => "unknown",
    }
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Decodes everything read from a start channel up to EOF: messages
/// without payload are one byte each; the first message with a payload
/// ends the stream.
pub(crate) fn decode_stream(mut buf: &[u8]) -> Result<Vec<Message>, DecodeError> {
    let mut out = Vec::new();
    while let Some(&tag) = buf.first() {
        match has_payload(tag) {
            None => return Err(DecodeError::UnknownTag(tag)),
            Some(false) => {
                out.push(Message::decode(&buf[..1])?);
                buf = &buf[1..];
            }
            Some(true) => {
                out.push(Message::decode(buf)?);
                break;
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all() -> Vec<Message> {
        vec![
            Message::Go(vec![(
                PathBuf::from("/sys/fs/cgroup/memory/c1"),
                "memory".into(),
            )]),
            Message::Go(Vec::new()),
            Message::UserNsCreated,
            Message::IdMapsWritten,
            Message::Pid(4242),
            Message::HooksWanted,
            Message::HookState(br#"{"status":"creating"}"#.to_vec()),
            Message::Ready,
            Message::Error("cannot mount proc: EPERM".into()),
            Message::Exec,
            Message::ExecFailed(2),
            Message::SeccompListener(7),
            Message::SeccompListenerTaken,
        ]
    }

    #[test]
    fn every_message_decodes_to_itself() {
        for m in all() {
            assert_eq!(Message::decode(&m.encode()), Ok(m.clone()), "{m}");
        }
    }

    #[test]
    fn tags_are_unique_and_as_the_table_says() {
        let tags: Vec<u8> = all().iter().map(Message::tag).collect();
        assert_eq!(tags, b"GGUuPHhRE0XSs");
        let mut unique = tags.clone();
        unique.dedup();
        assert_eq!(unique.len(), 12);
        assert!(all().iter().all(|m| has_payload(m.tag()).is_some()));
    }

    #[test]
    fn an_unknown_tag_is_an_error_naming_it() {
        let err = Message::decode(b"Zxyz").unwrap_err();
        assert_eq!(err, DecodeError::UnknownTag(b'Z'));
        assert_eq!(err.to_string(), "unknown message tag 0x5a 'Z'");
        let err = decode_stream(b"0\x01").unwrap_err();
        assert_eq!(err.to_string(), "unknown message tag 0x01");
        assert_eq!(Message::decode(b""), Err(DecodeError::Empty));
    }

    #[test]
    fn bad_payloads_name_the_message() {
        let err = Message::decode(b"Pabc").unwrap_err().to_string();
        assert_eq!(err, "message 0x50 'P' (pid): pid \"abc\" is not a number");
        let err = Message::decode(b"P0").unwrap_err().to_string();
        assert!(err.contains("pid 0 is not a process"), "{err}");
        let err = Message::decode(b"Rx").unwrap_err().to_string();
        assert!(err.contains("'R' (ready)"), "{err}");
        let err = Message::decode(b"G{").unwrap_err().to_string();
        assert!(err.contains("'G' (go)"), "{err}");
    }

    #[test]
    fn a_start_reply_is_a_stream_ended_by_its_payload() {
        assert_eq!(decode_stream(b""), Ok(vec![]));
        assert_eq!(decode_stream(b"0"), Ok(vec![Message::Exec]));
        // What the trampoline writes when execve fails with ENOENT.
        assert_eq!(
            decode_stream(b"0X0002"),
            Ok(vec![Message::Exec, Message::ExecFailed(2)])
        );
        assert_eq!(
            decode_stream(b"0Eexec \"x\": ENOENT 0"),
            Ok(vec![
                Message::Exec,
                Message::Error("exec \"x\": ENOENT 0".into())
            ])
        );
        assert_eq!(
            decode_stream(b"Ehook failed"),
            Ok(vec![Message::Error("hook failed".into())])
        );
    }

    #[test]
    fn display_leaves_the_payload_out() {
        let m = Message::HookState(vec![b'x'; 10_000]);
        assert_eq!(m.to_string(), "0x68 'h' (hook state)");
    }
}
