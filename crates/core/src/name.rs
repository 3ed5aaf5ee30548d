//! The distribution spec's grammar for repository names and tags, shared by
//! image references and the registry.

/// The longest repository name the registry accepts (distribution's limit).
pub const MAX_REPOSITORY_LEN: usize = 255;

fn is_lower_alnum(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit()
}

/// Whether `c` is one path component: `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`.
pub fn valid_component(c: &str) -> bool {
    let b = c.as_bytes();
    if b.is_empty() || !is_lower_alnum(b[0]) || !is_lower_alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if is_lower_alnum(b[i]) {
            i += 1;
            continue;
        }
        // A separator run: ".", "_", "__" or "-+".
        let start = i;
        while i < b.len() && !is_lower_alnum(b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        if !(sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-')) {
            return false;
        }
    }
    true
}

/// Whether `path` is a repository path: `/`-separated components, at most
/// [`MAX_REPOSITORY_LEN`] bytes.
pub fn valid_repository(path: &str) -> bool {
    !path.is_empty() && path.len() <= MAX_REPOSITORY_LEN && path.split('/').all(valid_component)
}

/// Whether `tag` matches `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`.
pub fn valid_tag(tag: &str) -> bool {
    let b = tag.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b.iter()
            .all(|&c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
}

/// Whether `text` is a media type as RFC 6838 shapes it: `type/subtype`,
/// each at most 127 of the restricted characters (letters, digits and
/// `!#$&-^_.+`), so it also fits in a `Content-Type` header.
pub fn valid_media_type(text: &str) -> bool {
    let part = |p: &str| {
        !p.is_empty()
            && p.len() <= 127
            && p.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$&-^_.+".contains(&b))
    };
    text.split_once('/')
        .is_some_and(|(t, s)| part(t) && part(s))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repositories_and_tags() {
        for ok in ["a", "library/busybox", "a.b_c__d---e/f0", "x/y/z"] {
            assert!(valid_repository(ok), "{ok}");
        }
        for bad in [
            "",
            "A",
            "Abc",
            "a//b",
            "-a",
            "a-",
            "a..b",
            "a___b",
            "_a",
            "a/_manifests",
            "a/",
        ] {
            assert!(!valid_repository(bad), "{bad}");
        }
        assert!(!valid_repository(&"a".repeat(256)));
        assert!(valid_tag("latest") && valid_tag("_x.Y-1") && !valid_tag(".x") && !valid_tag(""));
        assert!(valid_tag(&"a".repeat(128)) && !valid_tag(&"a".repeat(129)));
    }

    #[test]
    fn media_types() {
        for ok in [
            "application/vnd.oci.image.manifest.v1+json",
            "a/b",
            "x-y/z.w_1",
        ] {
            assert!(valid_media_type(ok), "{ok}");
        }
        for bad in [
            "",
            "a",
            "a/",
            "/b",
            "a/b/c",
            "a/b c",
            "a/b;x=y",
            "a/caf\u{e9}",
            "a/x\u{1}",
        ] {
            assert!(!valid_media_type(bad), "{bad}");
        }
    }
}
