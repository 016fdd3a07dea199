//! Who is calling: tenants from config, recognised by the blake3 hash of their API key (keys
//! themselves are never stored or logged), the admin token, and the tags a request may carry.

use super::record::ANONYMOUS_TENANT;
use crate::config::{Config, TenantConfig};
use crate::error::ErrorClass;
use smol_str::SmolStr;
use std::sync::Arc;

#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum IdentityError {
    #[error("authorization: a tenant's API key is required (Authorization: Bearer <key>)")]
    Missing,
    #[error("authorization: the API key is not recognised")]
    Unknown,
    /// The admin token names nobody who pays, so it cannot call inference where every call
    /// must be billed to a tenant.
    #[error(
        "authorization: the admin token is not an inference key; call with a tenant's API key"
    )]
    AdminIsNotATenant,
    #[error(
        "authorization: this endpoint needs the admin token (Authorization: Bearer <admin token>)"
    )]
    AdminMissing,
    #[error("authorization: this endpoint needs the admin token, not a tenant's key")]
    NotAdmin,
    #[error("tags: {0}")]
    Tags(String),
}

impl IdentityError {
    pub fn class(&self) -> ErrorClass {
        match self {
            IdentityError::Missing
            | IdentityError::Unknown
            | IdentityError::AdminIsNotATenant
            | IdentityError::AdminMissing => ErrorClass::Unauthenticated,
            IdentityError::NotAdmin => ErrorClass::Forbidden,
            IdentityError::Tags(_) => ErrorClass::BadRequest,
        }
    }
}

/// The paying side of a request. `Text`, because every usage record carries these three.
#[derive(Debug, Clone, PartialEq)]
pub struct Tenant {
    pub name: SmolStr,
    pub team: SmolStr,
    pub project: SmolStr,
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
            name: SmolStr::new(&t.name),
            team: SmolStr::new(&t.team),
            project: SmolStr::new(&t.project),
        };
        Identities {
            tenants: config
                .tenants
                .iter()
                .filter_map(|t| Some((parse_hash(&t.api_key_blake3)?, Arc::new(tenant(t)))))
                .collect(),
            anonymous: Arc::new(Tenant {
                name: SmolStr::new_static(ANONYMOUS_TENANT),
                team: SmolStr::default(),
                project: SmolStr::default(),
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
    /// unknown key is the anonymous tenant, so attribution works where enforcement is off;
    /// with it, only a tenant's key is let in (the admin token included: it pays for nothing).
    pub fn caller(&self, bearer: Option<&str>) -> Result<Caller, IdentityError> {
        let hash = bearer.map(|key| blake3::hash(key.as_bytes()));
        let admin = self.is_admin(hash.as_ref());
        let tenant = match (self.tenant(hash.as_ref()), bearer, self.required) {
            (Some(tenant), _, _) => tenant,
            (None, _, false) => self.anonymous.clone(),
            (None, None, true) => return Err(IdentityError::Missing),
            (None, Some(_), true) if admin => return Err(IdentityError::AdminIsNotATenant),
            (None, Some(_), true) => return Err(IdentityError::Unknown),
        };
        Ok(Caller {
            tenant,
            tags: Vec::new(),
            admin,
        })
    }

    /// Resolves the bearer key of an admin or cost call: the admin token, or a tenant's key
    /// (which may read that tenant's own costs and records). With no admin token configured,
    /// every caller is admin (a development set-up; the gateway warns at start).
    pub fn admin_caller(&self, bearer: Option<&str>) -> Result<Caller, IdentityError> {
        let hash = bearer.map(|key| blake3::hash(key.as_bytes()));
        let admin = self.admin.is_none() || self.is_admin(hash.as_ref());
        let tenant = match (self.tenant(hash.as_ref()), bearer) {
            (Some(tenant), _) => tenant,
            _ if admin => self.anonymous.clone(),
            (None, None) => return Err(IdentityError::AdminMissing),
            (None, Some(_)) => return Err(IdentityError::Unknown),
        };
        Ok(Caller {
            tenant,
            tags: Vec::new(),
            admin,
        })
    }

    /// The caller a deferred job runs as: the tenant that submitted it, found by name (the
    /// anonymous tenant too); `None` when a reload has removed that tenant since.
    pub fn caller_by_name(&self, name: &str) -> Option<Caller> {
        let tenant = if name == ANONYMOUS_TENANT && !self.required {
            self.anonymous.clone()
        } else {
            self.tenants.iter().find(|(_, t)| t.name == name)?.1.clone()
        };
        Some(Caller {
            tenant,
            tags: Vec::new(),
            admin: false,
        })
    }

    fn is_admin(&self, hash: Option<&blake3::Hash>) -> bool {
        // blake3::Hash compares in constant time.
        matches!((hash, &self.admin), (Some(hash), Some(admin)) if hash == admin)
    }

    fn tenant(&self, hash: Option<&blake3::Hash>) -> Option<Arc<Tenant>> {
        let hash = hash?;
        // Every tenant is compared, so the time taken does not say which one matched.
        let mut found = None;
        for (known, tenant) in &self.tenants {
            if known == hash {
                found = Some(tenant.clone());
            }
        }
        found
    }

    /// Admin endpoints need the admin token; with none configured they are open (development).
    pub fn require_admin(&self, caller: &Caller) -> Result<(), IdentityError> {
        if caller.admin {
            Ok(())
        } else {
            Err(IdentityError::NotAdmin)
        }
    }

    /// Whether admin endpoints are guarded at all (the start-up line warns when they are not).
    pub fn admin_configured(&self) -> bool {
        self.admin.is_some()
    }

    pub fn auth_required(&self) -> bool {
        self.required
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
            budget_period: Default::default(),
            budget_action: Default::default(),
        });
        Identities::new(&config)
    }

    #[test]
    fn keys_resolve_to_tenants_by_hash() {
        let cases: &[(bool, Option<&str>, Result<&str, IdentityError>)] = &[
            (true, Some("s3cret"), Ok("search")),
            (true, None, Err(IdentityError::Missing)),
            (true, Some("guess"), Err(IdentityError::Unknown)),
            (true, Some("root"), Err(IdentityError::AdminIsNotATenant)),
            (false, Some("root"), Ok("anonymous")),
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
        let admin = ids.admin_caller(Some("root")).unwrap();
        assert!(ids.require_admin(&admin).is_ok());
        let tenant = ids.admin_caller(Some("s3cret")).unwrap();
        assert_eq!(tenant.tenant.name.as_str(), "search");
        assert_eq!(ids.require_admin(&tenant), Err(IdentityError::NotAdmin));
        assert_eq!(
            ids.admin_caller(None).unwrap_err(),
            IdentityError::AdminMissing
        );
        assert_eq!(
            ids.admin_caller(Some("guess")).unwrap_err(),
            IdentityError::Unknown
        );
        let mut open = Config::default();
        open.server.admin_token_blake3 = None;
        let open = Identities::new(&open);
        assert!(open
            .require_admin(&open.admin_caller(None).unwrap())
            .is_ok());
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
