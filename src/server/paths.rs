//! The route templates: what the router serves and what the request metrics are labelled by
//! (PINs never become labels).

pub(crate) const ROUTE_CLUSTERS: &str = "/api/v1/clusters";
pub(crate) const ROUTE_CLUSTER: &str = "/api/v1/clusters/{pin}";
pub(crate) const ROUTE_KEYS: &str = "/api/v1/clusters/{pin}/keys";
pub(crate) const ROUTE_KEY: &str = "/api/v1/clusters/{pin}/keys/{key}";
pub(crate) const ROUTE_MEMBERS: &str = "/api/v1/clusters/{pin}/members";
pub(crate) const ROUTE_MEMBER: &str = "/api/v1/clusters/{pin}/members/{node}";
pub(crate) const ROUTE_HEALTHZ: &str = "/healthz";
pub(crate) const ROUTE_METRICS: &str = "/metrics";
pub(crate) const ROUTES: [&str; 8] = [
    ROUTE_CLUSTERS,
    ROUTE_CLUSTER,
    ROUTE_KEYS,
    ROUTE_KEY,
    ROUTE_MEMBERS,
    ROUTE_MEMBER,
    ROUTE_HEALTHZ,
    ROUTE_METRICS,
];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol;

    #[test]
    fn route_templates_follow_the_protocol_prefix() {
        for route in [
            ROUTE_CLUSTERS,
            ROUTE_CLUSTER,
            ROUTE_KEYS,
            ROUTE_KEY,
            ROUTE_MEMBERS,
            ROUTE_MEMBER,
        ] {
            assert!(route.starts_with(protocol::API_PREFIX), "{route}");
        }
    }
}
