//! The URL grammar: `redis://[user[:password]@]host:port[/db]`, `rediss://…` for TLS,
//! `redis+sentinel://[user:password@]host:port[,host:port…]/<master-name>[/db]` and
//! `redis+cluster://[user:password@]host:port[,host:port…]`; and the masking of passwords in
//! what is shown.

pub(super) const SENTINEL_SCHEME: &str = "redis+sentinel://";
pub(super) const CLUSTER_SCHEME: &str = "redis+cluster://";

/// The parts of `[user:password@]host:port[,host:port…][/path]`.
pub(super) struct HostList<'a> {
    pub(super) hosts: Vec<String>,
    pub(super) userinfo: Option<&'a str>,
    /// Without its `/`.
    pub(super) path: Option<&'a str>,
}

/// Splits `[user:password@]host:port[,host:port…]` then, for Sentinel, `/path`. The user
/// information ends at the last `@` (a password may hold `/`, `@`, `,`).
pub(super) fn split_hosts<'a>(
    rest: &'a str,
    what: &str,
    expected: &str,
) -> Result<HostList<'a>, String> {
    let (userinfo, after) = match rest.rsplit_once('@') {
        Some((userinfo, after)) => (Some(userinfo), after),
        None => (None, rest),
    };
    let (hosts, path) = match after.split_once('/') {
        Some((hosts, path)) => (hosts, Some(path)),
        None => (after, None),
    };
    let hosts = hosts
        .split(',')
        .map(|host| {
            let (name, port) = host
                .rsplit_once(':')
                .ok_or_else(|| format!("{what} '{host}' has no port; {expected}"))?;
            if name.is_empty() || port.parse::<u16>().is_err() {
                return Err(format!("{what} '{host}' is not host:port; {expected}"));
            }
            Ok(host.to_owned())
        })
        .collect::<Result<_, String>>()?;
    Ok(HostList {
        hosts,
        userinfo,
        path,
    })
}

/// The servers' user, password and database, read by the redis crate from an equivalent
/// single-node URL.
pub(super) fn node_settings(
    userinfo: Option<&str>,
    password: Option<&str>,
    db: &str,
    expected: &str,
) -> Result<redis::RedisConnectionInfo, String> {
    let mut node_url = match userinfo {
        Some(userinfo) => format!("redis://{userinfo}@127.0.0.1:6379/{db}"),
        None => format!("redis://127.0.0.1:6379/{db}"),
    };
    if let Some(password) = password {
        node_url = with_password(&node_url, password)?;
    }
    let info =
        redis::IntoConnectionInfo::into_connection_info(node_url.as_str()).map_err(|_| {
            format!("the user or password cannot be used (percent-encode them); {expected}")
        })?;
    Ok(info.redis_settings().clone())
}

/// Puts `password` into the URL's user information, percent-encoded.
pub(super) fn with_password(url: &str, password: &str) -> Result<String, String> {
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| "expected redis://… or rediss://…".to_owned())?;
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let host = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host);
    let user = authority
        .rsplit_once('@')
        .map(|(info, _)| info.split(':').next().unwrap_or(""))
        .unwrap_or("");
    let mut encoded = String::new();
    for byte in password.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            encoded.push(byte as char);
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    Ok(format!("{scheme}://{user}:{encoded}@{host}{path}"))
}

/// Hides the password of a `redis://user:password@host` URL, for messages and logs.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let credentials = &url[scheme + 3..at];
            match credentials.find(':') {
                Some(colon) => format!(
                    "{}{}:***{}",
                    &url[..scheme + 3],
                    &credentials[..colon],
                    &url[at..]
                ),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

/// Masks the password of every `scheme://user:password@host` URL in `text`.
pub(crate) fn redact_urls(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(scheme) = rest.find("://") {
        let (head, tail) = rest.split_at(scheme + 3);
        out.push_str(head);
        let authority_end = tail
            .find(|c: char| c.is_whitespace() || "\"'`/?#".contains(c))
            .unwrap_or(tail.len());
        let authority = &tail[..authority_end];
        match authority.rfind('@') {
            Some(at) => {
                let userinfo = &authority[..at];
                match userinfo.find(':') {
                    Some(colon) => {
                        out.push_str(&userinfo[..colon]);
                        out.push_str(":***");
                    }
                    None => out.push_str(userinfo),
                }
                out.push_str(&authority[at..]);
            }
            None => out.push_str(authority),
        }
        rest = &tail[authority_end..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_redacted_from_urls() {
        assert_eq!(
            redact_url("redis://:s3cret@host:6379/0"),
            "redis://:***@host:6379/0"
        );
        assert_eq!(redact_url("redis://user:pw@host"), "redis://user:***@host");
        assert_eq!(redact_url("redis://host:6379"), "redis://host:6379");
        assert_eq!(
            redact_url("redis+sentinel://u:pw@h1:26379,h2:26379/main"),
            "redis+sentinel://u:***@h1:26379,h2:26379/main"
        );
    }

    #[test]
    fn issue_18_url_passwords_are_masked_in_messages() {
        assert_eq!(
            redact_urls(r#"string "redis://:hunter2@h:6379/0", expected x"#),
            r#"string "redis://:***@h:6379/0", expected x"#
        );
        assert_eq!(
            redact_urls("rediss://u:p@a and redis+sentinel://v:q@b,c/m"),
            "rediss://u:***@a and redis+sentinel://v:***@b,c/m"
        );
        assert_eq!(redact_urls("redis://h:6379 ok"), "redis://h:6379 ok");
    }
}
