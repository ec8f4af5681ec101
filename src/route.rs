//! TEMPORARY stub with the interface of the real router (replaced on merge).
pub struct ServiceSpec {
    pub name: String,
    pub hosts: Vec<String>,
    pub environment: Option<String>,
    pub apis: Vec<ApiSpec>,
}
pub struct ApiSpec {
    pub id: usize,
    pub name: String,
    pub path: String,
    pub methods: Vec<String>,
}
pub struct Router {
    apis: Vec<(Option<String>, String, Vec<String>, usize)>,
}
pub struct RouteMatch<'a> {
    pub api: usize,
    pub params: Vec<(&'a str, &'a str)>,
    pub path: &'a str,
    pub matched_len: usize,
}
impl Router {
    pub fn build(services: &[ServiceSpec]) -> Result<Router, Vec<String>> {
        let mut apis = vec![];
        for s in services {
            for a in &s.apis {
                apis.push((
                    s.environment.clone(),
                    a.path.clone(),
                    a.methods.clone(),
                    a.id,
                ));
            }
        }
        Ok(Router { apis })
    }
    pub fn lookup<'a>(
        &'a self,
        _host: Option<&str>,
        path: &'a str,
        method: &http::Method,
    ) -> Option<RouteMatch<'a>> {
        let mut best: Option<RouteMatch<'a>> = None;
        for (env, p, methods, id) in &self.apis {
            let path = match env {
                Some(e) => match path
                    .strip_prefix('/')
                    .and_then(|r| r.strip_prefix(e.as_str()))
                {
                    Some(rest) if rest.is_empty() || rest.starts_with('/') => rest,
                    _ => continue,
                },
                None => path,
            };
            if !methods.iter().any(|m| m == "ANY" || m == method.as_str()) {
                continue;
            }
            if path.starts_with(p.as_str()) && best.as_ref().is_none_or(|b| b.matched_len < p.len())
            {
                best = Some(RouteMatch {
                    api: *id,
                    params: vec![],
                    path,
                    matched_len: p.len(),
                });
            }
        }
        best
    }
}
pub fn compose_backend_path(backend_path: &str, m: &RouteMatch) -> String {
    if backend_path.is_empty() {
        return m.path.to_string();
    }
    let rest = &m.path[m.matched_len..];
    if backend_path.ends_with('/') && rest.starts_with('/') {
        format!("{}{}", backend_path, &rest[1..])
    } else {
        format!("{backend_path}{rest}")
    }
}
