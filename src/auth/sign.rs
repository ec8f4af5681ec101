//! TEMPORARY stub (replaced on merge).
use std::time::SystemTime;
pub fn sign_hmac(
    _id: &str,
    _secret: &str,
    _alg: &str,
    _h: &[(String, String)],
    _now: SystemTime,
) -> Result<Vec<(String, String)>, String> {
    Err("stub".into())
}
pub fn keygen() -> (String, String) {
    (String::new(), String::new())
}
