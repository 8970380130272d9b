//! The `Range: bytes=...` request header (RFC 9110 §14), single ranges only.
//!
//! Portage resumes an interrupted download with one open range (`bytes=N-`); a
//! multi-range request is legal to answer with the whole file, which is what we do.

/// What a Range header asks of a file of a known length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeRequest {
    /// No usable Range header, or several ranges: send the whole file.
    Full,
    /// Send bytes `start..=end`.
    Partial { start: u64, end: u64 },
    /// A syntactically valid range that lies outside the file: 416.
    Unsatisfiable,
}

/// Interprets a Range header value for a file of `len` bytes.
pub fn parse(header: Option<&str>, len: u64) -> RangeRequest {
    let Some(spec) = header.and_then(|h| h.trim().strip_prefix("bytes=")) else {
        return RangeRequest::Full;
    };
    if spec.contains(',') {
        return RangeRequest::Full;
    }
    let Some((first, last)) = spec.trim().split_once('-') else {
        return RangeRequest::Full;
    };
    let (first, last) = (first.trim(), last.trim());
    let parse_num = |s: &str| s.parse::<u64>().ok();
    match (first.is_empty(), last.is_empty()) {
        // bytes=-N: the last N bytes
        (true, false) => match parse_num(last) {
            Some(0) => RangeRequest::Unsatisfiable,
            Some(_) if len == 0 => RangeRequest::Unsatisfiable,
            Some(n) => RangeRequest::Partial {
                start: len.saturating_sub(n),
                end: len - 1,
            },
            None => RangeRequest::Full,
        },
        // bytes=N-: from N to the end
        (false, true) => match parse_num(first) {
            Some(start) if start < len => RangeRequest::Partial {
                start,
                end: len - 1,
            },
            Some(_) => RangeRequest::Unsatisfiable,
            None => RangeRequest::Full,
        },
        (false, false) => match (parse_num(first), parse_num(last)) {
            (Some(start), Some(end)) if start <= end => {
                if start < len {
                    RangeRequest::Partial {
                        start,
                        end: end.min(len - 1),
                    }
                } else {
                    RangeRequest::Unsatisfiable
                }
            }
            // Invalid syntax (last < first) is ignored, as the RFC says.
            _ => RangeRequest::Full,
        },
        (true, true) => RangeRequest::Full,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms() {
        assert_eq!(parse(None, 10), RangeRequest::Full);
        assert_eq!(
            parse(Some("bytes=0-4"), 10),
            RangeRequest::Partial { start: 0, end: 4 }
        );
        assert_eq!(
            parse(Some("bytes=5-"), 10),
            RangeRequest::Partial { start: 5, end: 9 }
        );
        assert_eq!(
            parse(Some("bytes=-3"), 10),
            RangeRequest::Partial { start: 7, end: 9 }
        );
        assert_eq!(
            parse(Some("bytes=-30"), 10),
            RangeRequest::Partial { start: 0, end: 9 }
        );
        assert_eq!(
            parse(Some("bytes=8-100"), 10),
            RangeRequest::Partial { start: 8, end: 9 }
        );
        assert_eq!(parse(Some("bytes=10-"), 10), RangeRequest::Unsatisfiable);
        assert_eq!(parse(Some("bytes=10-12"), 10), RangeRequest::Unsatisfiable);
        assert_eq!(parse(Some("bytes=-0"), 10), RangeRequest::Unsatisfiable);
        assert_eq!(parse(Some("bytes=0-0"), 0), RangeRequest::Unsatisfiable);
        assert_eq!(parse(Some("bytes=4-2"), 10), RangeRequest::Full);
        assert_eq!(parse(Some("bytes=0-1,4-5"), 10), RangeRequest::Full);
        assert_eq!(parse(Some("items=0-1"), 10), RangeRequest::Full);
        assert_eq!(parse(Some("bytes=x-1"), 10), RangeRequest::Full);
    }
}
