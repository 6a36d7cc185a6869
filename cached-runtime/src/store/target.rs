//! The Redis a URL names: its topology (one server, a cluster, a master
//! found through sentinels), TLS or not, the nodes, the credentials.
//!
//! Parsed here rather than by the client so that every form is checked the
//! same way when the configuration is built, and so that no message about a
//! URL ever carries its password: errors and logs show [`redact`]ed URLs.

use std::fmt;

/// The topology a URL names.
#[derive(Clone, PartialEq, Eq)]
pub(crate) enum Topology {
    /// One server: `redis://`, `rediss://`.
    Single,
    /// A Redis Cluster: `redis+cluster://`, `rediss+cluster://`.
    Cluster,
    /// The master of `service` as sentinels report it:
    /// `redis+sentinel://`, `rediss+sentinel://`.
    Sentinel { service: String },
    /// A Unix socket (`redis+unix://`, `unix://`): handed to the client as
    /// written.
    Unix,
}

/// A parsed Redis URL. Its `Debug` shows no password.
#[derive(Clone)]
pub(crate) struct Target {
    pub(crate) topology: Topology,
    pub(crate) tls: bool,
    /// `host:port` pairs; for sentinel, the sentinels'.
    pub(crate) nodes: Vec<(String, u16)>,
    pub(crate) username: Option<String>,
    pub(crate) password: Option<String>,
    pub(crate) db: i64,
    /// The URL as given, for Unix sockets only.
    pub(crate) raw: String,
}

impl fmt::Debug for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Target")
            .field("url", &redact(&self.raw))
            .finish()
    }
}

const DEFAULT_PORT: u16 = 6379;
const DEFAULT_SENTINEL_PORT: u16 = 26379;

/// The schemes understood, for error messages.
pub(crate) const FORMS: &str = "redis://[user:password@]host:port/db, rediss://..., \
     redis+cluster://[user:password@]host:port[,host:port...], rediss+cluster://..., \
     redis+sentinel://[user:password@]host:port[,host:port...]/service_name[/db], \
     rediss+sentinel://..., or redis+unix:///path";

/// Parses `url`. The error names what is wrong and shows the URL redacted.
pub(crate) fn parse(url: &str) -> Result<Target, String> {
    let fail = |why: &str| format!("redis_url {:?}: {why}; expected {FORMS}", redact(url));
    let Some((scheme, rest)) = url.split_once("://") else {
        return Err(fail("no scheme"));
    };
    let (topology, tls) = match scheme.to_ascii_lowercase().as_str() {
        "redis" => (Topology::Single, false),
        "rediss" => (Topology::Single, true),
        "redis+cluster" => (Topology::Cluster, false),
        "rediss+cluster" => (Topology::Cluster, true),
        "redis+sentinel" => (
            Topology::Sentinel {
                service: String::new(),
            },
            false,
        ),
        "rediss+sentinel" => (
            Topology::Sentinel {
                service: String::new(),
            },
            true,
        ),
        "redis+unix" | "unix" => {
            return Ok(Target {
                topology: Topology::Unix,
                tls: false,
                nodes: Vec::new(),
                username: None,
                password: None,
                db: 0,
                raw: url.to_owned(),
            })
        }
        _ => return Err(fail("unknown scheme")),
    };
    let (userinfo, rest) = split_userinfo(rest);
    if rest.contains(['?', '#']) {
        return Err(fail("query parameters and fragments are not supported"));
    }
    let (hosts, path) = rest.split_once('/').unwrap_or((rest, ""));
    let (username, password) = match userinfo {
        None => (None, None),
        Some(info) => {
            let (user, pass) = match info.split_once(':') {
                Some((user, pass)) => (user, Some(pass)),
                // `redis://name@host` names a user without a password, as
                // the Redis client reads it (redaction still hides it, in
                // case it was meant as a password).
                None => (info, None),
            };
            let user = decode(user).ok_or_else(|| fail("bad percent-encoding in the user"))?;
            let pass = match pass {
                Some(p) => Some(decode(p).ok_or_else(|| fail("bad percent-encoding"))?),
                None => None,
            };
            (
                (!user.is_empty()).then_some(user),
                pass.filter(|p| !p.is_empty()),
            )
        }
    };
    let default_port = match topology {
        Topology::Sentinel { .. } => DEFAULT_SENTINEL_PORT,
        _ => DEFAULT_PORT,
    };
    let mut nodes = Vec::new();
    for host in hosts.split(',') {
        nodes.push(parse_host(host, default_port).ok_or_else(|| fail("bad host:port"))?);
    }
    if nodes.len() > 1 && topology == Topology::Single {
        return Err(fail(
            "several hosts: use redis+cluster:// or redis+sentinel://",
        ));
    }
    let mut segments = path.split('/').filter(|s| !s.is_empty());
    let topology = match topology {
        Topology::Sentinel { .. } => {
            let service = segments
                .next()
                .ok_or_else(|| fail("no service_name after the sentinels"))?;
            Topology::Sentinel {
                service: decode(service).ok_or_else(|| fail("bad service_name"))?,
            }
        }
        other => other,
    };
    let db = match segments.next() {
        None => 0,
        Some(db) => db
            .parse::<i64>()
            .ok()
            .filter(|db| *db >= 0)
            .ok_or_else(|| fail("the database must be a number"))?,
    };
    if segments.next().is_some() {
        return Err(fail("unexpected path segments"));
    }
    if db != 0 && topology == Topology::Cluster {
        return Err(fail("a cluster has only database 0"));
    }
    Ok(Target {
        topology,
        tls,
        nodes,
        username,
        password,
        db,
        raw: url.to_owned(),
    })
}

fn parse_host(text: &str, default_port: u16) -> Option<(String, u16)> {
    // `[::1]:6379` for IPv6 literals.
    let (host, port) = if let Some(rest) = text.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        // `[::1]6380` is a typo, not port 6379.
        let port = match after {
            "" => None,
            after => Some(after.strip_prefix(':')?),
        };
        (host, port)
    } else {
        match text.rsplit_once(':') {
            // An IPv6 literal without brackets (`::1`): its last group is
            // not a port.
            Some((host, _)) if host.contains(':') => return None,
            Some((host, port)) => (host, Some(port)),
            None => (text, None),
        }
    };
    if host.is_empty() || host.contains(['/', '@', ' ']) {
        return None;
    }
    let port = match port {
        Some(p) => p.parse().ok().filter(|p| *p != 0)?,
        None => default_port,
    };
    Some((host.to_owned(), port))
}

/// The user part (up to the last `@`: a password may hold `/`, `?`, `#`
/// or `@` when not percent-encoded) and the rest.
fn split_userinfo(rest: &str) -> (Option<&str>, &str) {
    match rest.rfind('@') {
        Some(at) => (Some(&rest[..at]), &rest[at + 1..]),
        None => (None, rest),
    }
}

/// Percent-decodes `text`; `None` for a malformed escape or non-UTF-8.
fn decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = text.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// `url` with its password (in the user part, or a `password=` / `pass=`
/// query parameter as Unix-socket URLs carry it) replaced by `***`. A user
/// part without `:` is taken for a password too. Safe on any text.
pub(crate) fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        // Not a URL: it may be anything, a password included.
        return "<unparsable URL>".to_owned();
    };
    let (userinfo, rest) = if scheme.ends_with("unix") {
        // A path, not a host: its password travels in the query.
        (None, rest)
    } else {
        split_userinfo(rest)
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (hosts, tail) = rest.split_at(end);
    let authority = match userinfo {
        Some(info) => match info.split_once(':') {
            Some((user, _)) => format!("{user}:***@{hosts}"),
            None => format!("***@{hosts}"),
        },
        None => hosts.to_owned(),
    };
    let tail = match tail.split_once('?') {
        None => tail.to_owned(),
        Some((path, query)) => {
            let (query, fragment) = match query.split_once('#') {
                Some((q, f)) => (q, Some(f)),
                None => (query, None),
            };
            let query: Vec<String> = query
                .split('&')
                .map(|pair| match pair.split_once('=') {
                    Some((k, _))
                        if k.eq_ignore_ascii_case("password") || k.eq_ignore_ascii_case("pass") =>
                    {
                        format!("{k}=***")
                    }
                    _ => pair.to_owned(),
                })
                .collect();
            let mut out = format!("{path}?{}", query.join("&"));
            if let Some(f) = fragment {
                out.push('#');
                out.push_str(f);
            }
            out
        }
    };
    format!("{scheme}://{authority}{tail}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_form_parses() {
        let t = parse("redis://127.0.0.1:6380/2").unwrap();
        assert!(t.topology == Topology::Single && !t.tls && t.db == 2);
        assert_eq!(t.nodes, [("127.0.0.1".to_owned(), 6380)]);
        let t = parse("rediss://u:p%40ss@host").unwrap();
        assert!(t.tls);
        assert_eq!(t.nodes, [("host".to_owned(), 6379)]);
        assert_eq!(t.username.as_deref(), Some("u"));
        assert_eq!(t.password.as_deref(), Some("p@ss"));
        let t = parse("redis+cluster://:pw@a:1,b:2,[::1]:3").unwrap();
        assert!(t.topology == Topology::Cluster && !t.tls);
        assert_eq!(t.nodes.len(), 3);
        assert_eq!(t.nodes[2], ("::1".to_owned(), 3));
        assert_eq!(t.username, None);
        assert_eq!(t.password.as_deref(), Some("pw"));
        let t = parse("rediss+sentinel://s1,s2:5000/mymaster/3").unwrap();
        assert!(t.tls && t.db == 3);
        assert!(
            t.topology
                == Topology::Sentinel {
                    service: "mymaster".into()
                }
        );
        assert_eq!(t.nodes[0], ("s1".to_owned(), 26379));
        assert!(parse("redis+unix:///tmp/redis.sock").unwrap().topology == Topology::Unix);
        let t = parse("redis://[::1]/1").unwrap();
        assert_eq!((t.nodes[0].clone(), t.db), (("::1".to_owned(), 6379), 1));
        let t = parse("redis://name@h").unwrap();
        assert_eq!((t.username.as_deref(), t.password), (Some("name"), None));
    }

    #[test]
    fn bad_urls_are_refused_without_their_password() {
        for url in [
            "http://u:hunter2@x",
            "redis://u:hunter2@a:1,b:2",
            "redis+sentinel://u:hunter2@a:1",
            "redis+cluster://u:hunter2@a:1/3",
            "redis://u:hunter2@a:notaport",
            "redis://u:hunter2@a:1/x",
            "redis://u:hunter2@a:1/0?protocol=resp3",
            "redis://u:hunter2@[::1]6380",
            "redis://u:hunter2@::1",
            "redis+cluster://u:hunter2@a:1,fe80::1:2",
            "hunter2",
        ] {
            let err = parse(url).unwrap_err();
            assert!(!err.contains("hunter2"), "{err}");
            assert!(err.contains("redis_url"), "{err}");
        }
    }

    #[test]
    fn redaction_hides_every_password_spelling() {
        assert_eq!(redact("redis://u:hunter2@h:1/0"), "redis://u:***@h:1/0");
        assert_eq!(redact("redis://hunter2@h"), "redis://***@h");
        assert_eq!(
            redact("rediss+cluster://:hunter2@a:1,b:2"),
            "rediss+cluster://:***@a:1,b:2"
        );
        assert_eq!(
            redact("redis+sentinel://u:p@ss:hunter2@s:1/m"),
            "redis+sentinel://u:***@s:1/m"
        );
        assert_eq!(
            redact("redis+unix:///s.sock?db=1&pass=hunter2"),
            "redis+unix:///s.sock?db=1&pass=***"
        );
        assert_eq!(redact("hunter2"), "<unparsable URL>");
        assert_eq!(redact("redis://u:hun/ter#2@h:1/0"), "redis://u:***@h:1/0");
        assert_eq!(redact("redis://h:1/0"), "redis://h:1/0");
    }
}
