//! TEMPORARY stub (replaced on merge).
use super::*;
use std::time::SystemTime;
pub struct HmacSettings;
impl HmacSettings {
    pub fn from_raw(_r: &crate::config::raw::RawHmacAuth) -> Result<Self, String> {
        Ok(HmacSettings)
    }
}
pub fn needs_body(_h: &HeaderMap) -> bool {
    false
}
pub fn verify(
    _s: &HmacSettings,
    _r: &RequestParts,
    _k: &Keys,
    _n: SystemTime,
) -> Result<Verified, AuthError> {
    Err(AuthError::Missing("stub".into()))
}
