//! Content negotiation of `/metrics`: OpenMetrics, or the Prometheus text
//! format 0.0.4 for scrapers that prefer `text/plain`.

/// Whether an `Accept` header prefers the Prometheus text format 0.0.4
/// (`text/plain`) to OpenMetrics: by quality, OpenMetrics winning ties and
/// answering `*/*` or no preference.
pub fn prefers_text_004(accept: &str) -> bool {
    let (mut om, mut text) = (-1.0f32, -1.0f32);
    for range in accept.split(',') {
        let mut parts = range.split(';').map(str::trim);
        let media = parts.next().unwrap_or("").to_ascii_lowercase();
        let q = parts
            .filter_map(|p| p.split_once('='))
            .find(|(k, _)| k.trim().eq_ignore_ascii_case("q"))
            .and_then(|(_, v)| v.trim().parse::<f32>().ok())
            .unwrap_or(1.0);
        match media.as_str() {
            "application/openmetrics-text" => om = om.max(q),
            "text/plain" => text = text.max(q),
            _ => {}
        }
    }
    text > 0.0 && text > om
}

/// The OpenMetrics text of [`Metrics::encode`] in the Prometheus text format
/// 0.0.4: counters' `HELP`/`TYPE` name the `_total` series, `UNIT` and `EOF`
/// lines are dropped. Samples are written the same way in both.
pub fn to_text_004(openmetrics: &str) -> String {
    let counters: std::collections::HashSet<&str> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line.starts_with("# UNIT ") || line == "# EOF" {
            continue;
        }
        let meta = ["# HELP ", "# TYPE "]
            .into_iter()
            .find_map(|p| line.strip_prefix(p).map(|rest| (p, rest)));
        match meta {
            Some((p, rest)) => {
                let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
                out.push_str(p);
                out.push_str(name);
                if counters.contains(name) {
                    out.push_str("_total");
                }
                out.push(' ');
                out.push_str(tail);
            }
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}
