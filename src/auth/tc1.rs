//! TEMPORARY stub (replaced on merge).
use super::*;
use std::time::SystemTime;
pub struct Tc1Settings;
impl Tc1Settings {
    pub fn from_raw(_r: &crate::config::raw::RawTc1Auth) -> Result<Self, String> {
        Ok(Tc1Settings)
    }
}
pub fn body_limit(_m: &Method) -> Option<usize> {
    None
}
pub fn verify(
    _s: &Tc1Settings,
    _q: &RequestParts,
    _k: &Keys,
    _n: SystemTime,
) -> Result<Verified, AuthError> {
    Err(AuthError::Missing("stub".into()))
}
