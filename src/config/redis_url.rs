//! Redis addresses as written in the config: a string names one server (`redis://` or
//! `rediss://`, with `user:password@` and `/db` honoured), an array the seed nodes of a Redis
//! Cluster. Each URL is parsed once here, so a malformed one stops the start with its key.

use serde::Deserialize;
use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum RedisUrl {
    Server(String),
    Cluster(Vec<String>),
}

impl RedisUrl {
    /// Checks every URL the way the client will read it; the error is fit for a config error.
    pub fn check(&self) -> Result<(), String> {
        let urls = self.urls();
        if urls.is_empty() {
            return Err("a Redis Cluster needs at least one seed node".into());
        }
        for url in urls {
            if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
                return Err(format!(
                    "`{}` must start with redis:// or rediss://",
                    redacted(url)
                ));
            }
            let info = redis::IntoConnectionInfo::into_connection_info(url.as_str())
                .map_err(|error| format!("`{}`: {error}", redacted(url)))?;
            if matches!(self, RedisUrl::Cluster(_)) && info.redis_settings().db() != 0 {
                return Err(format!(
                    "`{}`: a Redis Cluster has only database 0",
                    redacted(url)
                ));
            }
        }
        Ok(())
    }

    pub fn urls(&self) -> &[String] {
        match self {
            RedisUrl::Server(url) => std::slice::from_ref(url),
            RedisUrl::Cluster(urls) => urls,
        }
    }
}

/// For logs: the URLs with any password replaced.
impl fmt::Display for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RedisUrl::Server(url) => f.write_str(&redacted(url)),
            RedisUrl::Cluster(urls) => {
                let shown: Vec<String> = urls.iter().map(|u| redacted(u)).collect();
                write!(f, "cluster [{}]", shown.join(", "))
            }
        }
    }
}

/// `redis://user:secret@host` → `redis://user:***@host`; a URL without a password is unchanged.
fn redacted(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((credentials, host)) => {
            let user = credentials.split_once(':').map_or("", |(user, _)| user);
            format!("{scheme}://{user}:***@{host}{path}")
        }
        None => url.to_string(),
    }
}

/// What a replica does with budgeted tenants while the fleet's Redis does not answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum OnRedisDown {
    /// Serve on this replica's own accounting, and fold its spend into Redis when it is back.
    #[default]
    FailOpen,
    /// Answer requests of budgeted tenants 503 until Redis answers again.
    FailClosed,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_checked_as_the_client_reads_them() {
        let cases: &[(RedisUrl, Option<&str>)] = &[
            (RedisUrl::Server("redis://127.0.0.1:6379".into()), None),
            (
                RedisUrl::Server("redis://u:pw@127.0.0.1:6379/3".into()),
                None,
            ),
            (
                RedisUrl::Server("rediss://cache.internal:6380/0".into()),
                None,
            ),
            (RedisUrl::Server("http://x".into()), Some("must start with")),
            (
                RedisUrl::Server("redis://127.0.0.1:6379/x".into()),
                Some("6379/x"),
            ),
            (RedisUrl::Cluster(vec![]), Some("at least one seed")),
            (
                RedisUrl::Cluster(vec!["redis://a:1".into(), "redis://b:2/1".into()]),
                Some("only database 0"),
            ),
        ];
        for (url, expected) in cases {
            match (url.check(), expected) {
                (Ok(()), None) => {}
                (Err(reason), Some(part)) => assert!(reason.contains(part), "{url:?}: {reason}"),
                (outcome, _) => panic!("{url:?}: {outcome:?}"),
            }
        }
    }

    #[test]
    fn passwords_never_reach_a_log() {
        let url = RedisUrl::Server("redis://app:hunter2@10.0.0.1:6379/2".into());
        assert_eq!(url.to_string(), "redis://app:***@10.0.0.1:6379/2");
        let cluster = RedisUrl::Cluster(vec!["redis://:pw@a:1".into(), "redis://b:2".into()]);
        assert_eq!(
            cluster.to_string(),
            "cluster [redis://:***@a:1, redis://b:2]"
        );
    }
}
