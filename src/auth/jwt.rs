//! TEMPORARY stub (replaced on merge).
use super::AuthError;
use http::HeaderMap;
use std::path::Path;
use std::time::{Duration, SystemTime};
pub struct JwtProvider;
pub struct JwtIdentity {
    pub subject: String,
    pub headers: Vec<(http::HeaderName, http::HeaderValue)>,
}
impl JwtProvider {
    pub fn from_raw(
        _r: &crate::config::raw::RawJwtProvider,
        _b: &Path,
    ) -> Result<JwtProvider, String> {
        Ok(JwtProvider)
    }
    pub fn verify(
        &self,
        _h: &HeaderMap,
        _l: Duration,
        _n: SystemTime,
    ) -> Result<JwtIdentity, AuthError> {
        Err(AuthError::Missing("stub".into()))
    }
}
