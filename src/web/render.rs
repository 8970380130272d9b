//! The page templates (embedded in the binary, so `binfarm serve` works from any directory)
//! and the small formatters the pages share. `{{ }}` in the templates HTML-escapes.

use std::sync::OnceLock;

use handlebars::Handlebars;
use serde::Serialize;

use super::WebError;

/// (name, text) of every template; `header` and `footer` are partials.
const TEMPLATES: &[(&str, &str)] = &[
    ("header", include_str!("../../templates/web/header.hbs")),
    ("footer", include_str!("../../templates/web/footer.hbs")),
    ("error", include_str!("../../templates/web/error.hbs")),
    (
        "dashboard",
        include_str!("../../templates/web/dashboard.hbs"),
    ),
    ("request", include_str!("../../templates/web/request.hbs")),
    ("step_log", include_str!("../../templates/web/step_log.hbs")),
    (
        "snapshot_diff",
        include_str!("../../templates/web/snapshot_diff.hbs"),
    ),
];

fn registry() -> Result<&'static Handlebars<'static>, WebError> {
    static REGISTRY: OnceLock<Result<Handlebars<'static>, String>> = OnceLock::new();
    REGISTRY
        .get_or_init(|| {
            let mut hb = Handlebars::new();
            // A field a template names but the page does not give is a bug: fail loudly.
            hb.set_strict_mode(true);
            for (name, text) in TEMPLATES {
                hb.register_template_string(name, text)
                    .map_err(|e| format!("template {name}: {e}"))?;
            }
            Ok(hb)
        })
        .as_ref()
        .map_err(|message| WebError::Render {
            template: "(all)",
            message: message.clone(),
        })
}

/// What every page shows around its own content.
#[derive(Serialize)]
struct Page<'a, T: Serialize> {
    title: &'a str,
    now_utc: String,
    version: &'static str,
    #[serde(flatten)]
    body: &'a T,
}

/// Renders page `template` with `title` and the page's own data.
pub fn render<T: Serialize>(
    template: &'static str,
    title: &str,
    body: &T,
) -> Result<String, WebError> {
    let page = Page {
        title,
        now_utc: utc(crate::store::unix_now()),
        version: env!("CARGO_PKG_VERSION"),
        body,
    };
    registry()?
        .render(template, &page)
        .map_err(|e| WebError::Render {
            template,
            message: e.to_string(),
        })
}

/// The error page; plain escaped HTML if even that cannot be rendered.
pub fn error_page(title: &str, message: &str) -> String {
    #[derive(Serialize)]
    struct ErrorBody<'a> {
        message: &'a str,
    }
    render("error", title, &ErrorBody { message }).unwrap_or_else(|err| {
        format!(
            "<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>{0}</title></head>\
             <body><h1>{0}</h1><p>{1}</p><p>{2}</p></body></html>",
            escape(title),
            escape(message),
            escape(&err.to_string())
        )
    })
}

/// HTML-escapes text (for the fallback page; templates escape by themselves).
pub fn escape(text: &str) -> String {
    handlebars::html_escape(text)
}

/// `YYYY-MM-DD HH:MM:SS` (UTC) of Unix seconds.
pub fn utc(seconds: i64) -> String {
    crate::utc::UtcTime::from_unix(seconds).seconds()
}

/// A span of seconds for people: `45s`, `3m 12s`, `2h 05m`, `3d 4h`.
pub fn span(seconds: i64) -> String {
    let s = seconds.max(0);
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m {:02}s", s / 60, s % 60),
        3600..86_400 => format!("{}h {:02}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d {}h", s / 86_400, s % 86_400 / 3600),
    }
}

/// A duration in milliseconds: `850 ms` below a second, else like [`span`].
pub fn duration_ms(ms: i64) -> String {
    if ms < 1000 {
        format!("{} ms", ms.max(0))
    } else {
        span(ms / 1000)
    }
}

/// A size in bytes: `512 B`, `1.5 KiB`, `12.0 MiB`.
pub fn size(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_template_compiles() {
        let hb = registry().expect("templates compile");
        for (name, _) in TEMPLATES {
            assert!(hb.has_template(name), "{name}");
        }
    }

    #[test]
    fn formats() {
        assert_eq!(utc(1_795_660_200), "2026-11-26 02:30:00");
        assert_eq!(utc(0), "1970-01-01 00:00:00");
        assert_eq!(span(-5), "0s");
        assert_eq!(span(45), "45s");
        assert_eq!(span(192), "3m 12s");
        assert_eq!(span(7500), "2h 05m");
        assert_eq!(span(3 * 86_400 + 4 * 3600 + 59), "3d 4h");
        assert_eq!(duration_ms(850), "850 ms");
        assert_eq!(duration_ms(61_000), "1m 01s");
        assert_eq!(size(512), "512 B");
        assert_eq!(size(1536), "1.5 KiB");
        assert_eq!(size(12 * 1024 * 1024), "12.0 MiB");
    }

    #[test]
    fn error_page_escapes_the_message() {
        let page = error_page("Not found", "no request \"<script>alert(1)</script>\"");
        assert!(page.contains("&lt;script&gt;"), "{page}");
        assert!(!page.contains("<script>alert"), "{page}");
        assert!(
            page.contains("<title>Not found · binfarm</title>"),
            "{page}"
        );
    }
}
