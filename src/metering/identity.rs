//! Who is calling: tenants from config, recognised by the blake3 hash of their API key (keys
//! themselves are never stored or logged), the admin token, and the tags a request may carry.

use super::record::ANONYMOUS_TENANT;
use super::text::Text;
use crate::config::{Config, TenantConfig};
use std::sync::Arc;

#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum IdentityError {
    #[error("authorization: a bearer API key is required (Authorization: Bearer <key>)")]
    Missing,
    #[error("authorization: the API key is not recognised")]
    Unknown,
    #[error("authorization: this endpoint needs the admin token")]
    NotAdmin,
    #[error("tags: {0}")]
    Tags(String),
}

/// The paying side of a request. `Text`, because every usage record carries these three.
#[derive(Debug, Clone, PartialEq)]
pub struct Tenant {
    pub name: Text,
    pub team: Text,
    pub project: Text,
}

#[derive(Debug, Clone)]
pub struct Caller {
    pub tenant: Arc<Tenant>,
    pub tags: Vec<(String, String)>,
    pub admin: bool,
}

pub struct Identities {
    tenants: Vec<(blake3::Hash, Arc<Tenant>)>,
    anonymous: Arc<Tenant>,
    admin: Option<blake3::Hash>,
    required: bool,
    allowed_tags: Vec<String>,
}

fn parse_hash(hex: &str) -> Option<blake3::Hash> {
    blake3::Hash::from_hex(hex).ok()
}

impl Identities {
    pub fn new(config: &Config) -> Identities {
        let tenant = |t: &TenantConfig| Tenant {
            name: Text::copy(&t.name),
            team: Text::copy(&t.team),
            project: Text::copy(&t.project),
        };
        Identities {
            tenants: config
                .tenants
                .iter()
                .filter_map(|t| Some((parse_hash(&t.api_key_blake3)?, Arc::new(tenant(t)))))
                .collect(),
            anonymous: Arc::new(Tenant {
                name: Text::from_static(ANONYMOUS_TENANT),
                team: Text::EMPTY,
                project: Text::EMPTY,
            }),
            admin: config
                .server
                .admin_token_blake3
                .as_deref()
                .and_then(parse_hash),
            required: config.auth.required,
            allowed_tags: config.metering.allowed_tags.clone(),
        }
    }

    /// Resolves the bearer key of an inference call. Without `auth.required`, a missing or
    /// unknown key is the anonymous tenant, so attribution works where enforcement is off.
    pub fn caller(&self, bearer: Option<&str>) -> Result<Caller, IdentityError> {
        let hash = bearer.map(|key| blake3::hash(key.as_bytes()));
        let admin = match (&hash, &self.admin) {
            (Some(hash), Some(admin)) => hash == admin,
            _ => false,
        };
        let tenant = hash.as_ref().and_then(|hash| {
            // blake3::Hash compares in constant time; every tenant is compared.
            let mut found = None;
            for (known, tenant) in &self.tenants {
                if known == hash {
                    found = Some(tenant.clone());
                }
            }
            found
        });
        let tenant = match (tenant, bearer, self.required) {
            (Some(tenant), _, _) => tenant,
            (None, _, false) => self.anonymous.clone(),
            (None, None, true) => return Err(IdentityError::Missing),
            (None, Some(_), true) if admin => self.anonymous.clone(),
            (None, Some(_), true) => return Err(IdentityError::Unknown),
        };
        Ok(Caller {
            tenant,
            tags: Vec::new(),
            admin,
        })
    }

    /// Admin endpoints need the admin token; with none configured they are open (development).
    pub fn require_admin(&self, caller: &Caller) -> Result<(), IdentityError> {
        if self.admin.is_none() || caller.admin {
            Ok(())
        } else {
            Err(IdentityError::NotAdmin)
        }
    }

    pub fn admin_configured(&self) -> bool {
        self.admin.is_some()
    }

    /// Parses `k=v,k2=v2`, keeping only keys the config allows; any other key is an error, so a
    /// typo is caught rather than silently unbilled.
    pub fn tags(&self, text: &str) -> Result<Vec<(String, String)>, IdentityError> {
        let mut tags = Vec::new();
        for pair in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (key, value) = pair
                .split_once('=')
                .ok_or_else(|| IdentityError::Tags(format!("`{pair}` is not key=value")))?;
            let (key, value) = (key.trim(), value.trim());
            if !self.allowed_tags.iter().any(|allowed| allowed == key) {
                return Err(IdentityError::Tags(format!(
                    "key `{key}` is not allowed (allowed: {})",
                    if self.allowed_tags.is_empty() {
                        "none; list keys in metering.allowed_tags".to_string()
                    } else {
                        self.allowed_tags.join(", ")
                    }
                )));
            }
            if value.len() > 128 {
                return Err(IdentityError::Tags(format!(
                    "the value of `{key}` is over 128 bytes"
                )));
            }
            tags.push((key.to_string(), value.to_string()));
        }
        tags.sort();
        tags.dedup_by(|a, b| a.0 == b.0);
        Ok(tags)
    }

    pub fn tenants(&self) -> impl Iterator<Item = &Arc<Tenant>> {
        self.tenants.iter().map(|(_, t)| t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identities(required: bool) -> Identities {
        let mut config = Config::default();
        config.auth.required = required;
        config.metering.allowed_tags = vec!["env".into(), "feature".into()];
        config.server.admin_token_blake3 = Some(blake3::hash(b"root").to_hex().to_string());
        config.tenants.push(TenantConfig {
            name: "search".into(),
            api_key_blake3: blake3::hash(b"s3cret").to_hex().to_string(),
            team: "search-team".into(),
            project: "ranking".into(),
            budget_usd: None,
            budget_period: "month".into(),
            budget_action: "alert".into(),
        });
        Identities::new(&config)
    }

    #[test]
    fn keys_resolve_to_tenants_by_hash() {
        let cases: &[(bool, Option<&str>, Result<&str, IdentityError>)] = &[
            (true, Some("s3cret"), Ok("search")),
            (true, None, Err(IdentityError::Missing)),
            (true, Some("guess"), Err(IdentityError::Unknown)),
            (false, None, Ok("anonymous")),
            (false, Some("guess"), Ok("anonymous")),
            (false, Some("s3cret"), Ok("search")),
        ];
        for (required, key, want) in cases {
            let got = identities(*required)
                .caller(*key)
                .map(|c| c.tenant.name.clone());
            assert_eq!(
                got.as_deref().map_err(Clone::clone),
                want.clone(),
                "{required} {key:?}"
            );
        }
    }

    #[test]
    fn only_the_admin_token_opens_admin_endpoints() {
        let ids = identities(true);
        let admin = ids.caller(Some("root")).unwrap();
        assert!(ids.require_admin(&admin).is_ok());
        let tenant = ids.caller(Some("s3cret")).unwrap();
        assert_eq!(ids.require_admin(&tenant), Err(IdentityError::NotAdmin));
    }

    #[test]
    fn only_allowed_tag_keys_pass() {
        let ids = identities(false);
        assert_eq!(
            ids.tags("feature=a, env=prod").unwrap(),
            vec![
                ("env".into(), "prod".into()),
                ("feature".into(), "a".into())
            ]
        );
        assert!(ids
            .tags("team=x")
            .unwrap_err()
            .to_string()
            .contains("`team` is not allowed"));
        assert!(ids
            .tags("env")
            .unwrap_err()
            .to_string()
            .contains("not key=value"));
        assert_eq!(ids.tags("").unwrap(), vec![]);
    }
}
