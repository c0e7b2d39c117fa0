//! Attribution: who a request is for. From the request itself: a fingerprint of its API key,
//! configured identity headers, and the body's `user` field; from the process: the pod and
//! container its cgroup names, the pod's metadata from the Kubernetes API, and the tenant
//! (user, team, org) the operator's rules derive from both. The GPU share of each pod comes
//! from NVML.

mod attributor;
mod cgroup_paths;
pub mod gpu;
mod gpu_report;
mod identity;
pub mod kubernetes;
mod tenant;
mod workload;

pub use attributor::Attributor;
pub use cgroup_paths::CgroupPaths;
use gpu_report::PodTokens;
pub use gpu_report::{GpuFigures, GpuReporter, GpuUsageRecord};
pub use identity::{Identity, IdentityConfig, IdentityExtractor};
pub use tenant::{ApiKeyOwner, Source, Tenant, TenantConfig, TenantResolver, TenantRules};
pub use workload::Workload;
