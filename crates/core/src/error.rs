//! Showing an error with its causes.

/// `err` and its causes as one line, `outer: cause: …`, with each cause
/// said once: a cause whose text the line already holds (an error that
/// prints its own cause and also returns it as its `source`) is skipped.
pub fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut line = err.to_string();
    let mut cause = err.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
        cause = c.source();
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Shows(std::io::Error);
    impl std::fmt::Display for Shows {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "cannot listen on 127.0.0.1:5000: {}", self.0)
        }
    }
    impl std::error::Error for Shows {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    #[derive(Debug)]
    struct Hides(std::io::Error);
    impl std::fmt::Display for Hides {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("starting the registry")
        }
    }
    impl std::error::Error for Hides {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn each_cause_is_said_once() {
        let inner = || std::io::Error::from(std::io::ErrorKind::AddrInUse);
        assert_eq!(
            error_chain(&Shows(inner())),
            format!("cannot listen on 127.0.0.1:5000: {}", inner())
        );
        assert_eq!(
            error_chain(&Hides(inner())),
            format!("starting the registry: {}", inner())
        );
    }
}
