//! Attribution: who a request is for. From the request itself: a fingerprint of its API key,
//! configured identity headers, and the body's `user` field. (Pods, namespaces and tenants
//! from Kubernetes come with their own stage.)

mod identity;

pub use identity::{Identity, IdentityConfig, IdentityExtractor};
