//! TEMPORARY stub (replaced on merge).
use http::{HeaderMap, Method, StatusCode};
pub struct CorsPolicy;
impl CorsPolicy {
    pub fn from_raw(_r: &crate::config::raw::RawCors) -> Result<Self, String> {
        Ok(CorsPolicy)
    }
    pub fn allow_any() -> Self {
        CorsPolicy
    }
    pub fn is_preflight(_m: &Method, _h: &HeaderMap) -> bool {
        false
    }
    pub fn preflight(&self, _h: &HeaderMap) -> (StatusCode, HeaderMap) {
        (StatusCode::NO_CONTENT, HeaderMap::new())
    }
    pub fn apply(&self, _req: &HeaderMap, _resp: &mut HeaderMap) {}
}
