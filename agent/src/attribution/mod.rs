//! Attribution: who a request is for. From the request itself: a fingerprint of its API key,
//! configured identity headers, and the body's `user` field; from the process: the pod and
//! container its cgroup names. (Pod metadata and tenants from the Kubernetes API come with
//! their own change.)

mod identity;
mod workload;

pub use identity::{Identity, IdentityConfig, IdentityExtractor};
pub use workload::Workload;
