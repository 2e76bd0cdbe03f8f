//! Subjects and filters: dot-separated tokens; in a filter `*` matches one
//! token and a final `>` matches one or more (NATS's rules, so operators
//! already know them).
//!
//! ```
//! use zmesh_wire::stream::subject::{Filter, check_subject};
//! let f = Filter::parse("orders.*.created").unwrap();
//! assert!(f.matches("orders.eu.created"));
//! assert!(!f.matches("orders.eu.paid"));
//! assert!(Filter::parse("orders.>").unwrap().matches("orders.eu.created"));
//! assert!(check_subject("orders.eu").is_ok());
//! ```

/// Longest subject or filter.
pub const SUBJECT_MAX: usize = 255;

fn check_tokens(s: &str, what: &str) -> Result<(), String> {
    if s.is_empty() || s.len() > SUBJECT_MAX {
        return Err(format!("{what} {s:?} must be 1-{SUBJECT_MAX} bytes"));
    }
    if s.split('.')
        .any(|t| t.is_empty() || t.chars().any(|c| c.is_whitespace()))
    {
        return Err(format!("{what} {s:?}: empty token or whitespace"));
    }
    Ok(())
}

/// A subject for publishing: no wildcards.
pub fn check_subject(s: &str) -> Result<(), String> {
    check_tokens(s, "subject")?;
    if s.split('.').any(|t| t == "*" || t == ">") {
        return Err(format!("subject {s:?} may not contain wildcards"));
    }
    Ok(())
}

/// A parsed subscription filter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Filter {
    tokens: Vec<String>,
}

impl Filter {
    /// Parse a filter; `>` only as the last token.
    pub fn parse(s: &str) -> Result<Filter, String> {
        check_tokens(s, "filter")?;
        let tokens: Vec<String> = s.split('.').map(str::to_owned).collect();
        if tokens[..tokens.len() - 1].iter().any(|t| t == ">") {
            return Err(format!("filter {s:?}: '>' only as the last token"));
        }
        Ok(Filter { tokens })
    }

    /// Does `subject` match?
    pub fn matches(&self, subject: &str) -> bool {
        let mut parts = subject.split('.');
        for (i, t) in self.tokens.iter().enumerate() {
            if t == ">" {
                return i < self.tokens.len() && parts.next().is_some();
            }
            match parts.next() {
                Some(p) if t == "*" || t == p => {}
                _ => return false,
            }
        }
        parts.next().is_none()
    }
}

impl std::fmt::Display for Filter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.tokens.join("."))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards() {
        let m = |f: &str, s: &str| Filter::parse(f).unwrap().matches(s);
        assert!(m(">", "a"));
        assert!(m(">", "a.b.c"));
        assert!(m("a.>", "a.b"));
        assert!(!m("a.>", "a"));
        assert!(m("a.*.c", "a.b.c"));
        assert!(!m("a.*", "a.b.c"));
        assert!(!m("a.b", "a.b.c"));
        assert!(Filter::parse("a.>.c").is_err());
        assert!(Filter::parse("a..b").is_err());
        assert!(check_subject("a.*").is_err());
    }
}
