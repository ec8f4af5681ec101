//! TEMPORARY stub (replaced on merge).
use http::HeaderMap;
use std::net::IpAddr;
pub struct IpPolicy;
impl IpPolicy {
    pub fn parse(_m: &str, _i: &str) -> Result<IpPolicy, String> {
        Ok(IpPolicy)
    }
    pub fn allows(&self, _ip: IpAddr) -> bool {
        true
    }
}
#[derive(Default)]
pub struct TrustedProxies;
impl TrustedProxies {
    pub fn parse(_l: &[String]) -> Result<Self, String> {
        Ok(TrustedProxies)
    }
    pub fn contains(&self, _ip: IpAddr) -> bool {
        false
    }
}
pub fn client_ip(peer: IpAddr, _h: &HeaderMap, _t: &TrustedProxies) -> IpAddr {
    peer
}
