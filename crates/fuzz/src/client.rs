//! Targets for berth-distribution, the registry client: what a registry
//! (or anyone in its place) sends back.

use berth_distribution::auth::{parse_challenge, Challenge};

/// A `WWW-Authenticate` value as a registry's 401 carries it
/// (`auth::parse_challenge`): the scheme decides the kind, and a Bearer
/// challenge's parameters come back trimmed.
pub fn client_challenge(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let scheme = text
        .trim()
        .split(' ')
        .next()
        .unwrap_or("")
        .to_ascii_lowercase();
    match parse_challenge(text) {
        Some(Challenge::Bearer {
            realm,
            service,
            scope,
        }) => {
            assert_eq!(scheme, "bearer", "{text:?}");
            for v in std::iter::once(&realm)
                .chain(service.iter())
                .chain(scope.iter())
            {
                assert_eq!(v.trim(), v, "{text:?}");
            }
        }
        Some(Challenge::Basic) => assert_eq!(scheme, "basic", "{text:?}"),
        None => assert!(scheme != "basic", "{text:?}"),
    }
}
