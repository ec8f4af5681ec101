//! TEMPORARY stub (replaced on merge).
use super::*;
use std::time::SystemTime;
pub struct Tc3Settings;
impl Tc3Settings {
    pub fn from_raw(_r: &crate::config::raw::RawTc3Auth) -> Result<Self, String> {
        Ok(Tc3Settings)
    }
}
pub fn body_limit(_m: &Method, _h: &HeaderMap) -> Option<usize> {
    None
}
pub fn verify(
    _s: &Tc3Settings,
    _p: Option<&str>,
    _r: bool,
    _q: &RequestParts,
    _k: &Keys,
    _n: SystemTime,
) -> Result<Verified, AuthError> {
    Err(AuthError::Missing("stub".into()))
}
