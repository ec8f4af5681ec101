//! Counter stores for windows and quotas.
