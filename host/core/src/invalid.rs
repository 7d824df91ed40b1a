//! One setting that is wrong, and why: the one shape every configuration check in lookout
//! reports in — the crates' `problems()`, the config parser, `PATCH /api/v1/config`'s 422 —
//! so a refusal reads the same wherever it comes from.

use serde::Serialize;

/// A wrong setting: its dotted path (`bus.batch_size`, `pools.billing.size`; empty when the
/// whole text is at fault) and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Invalid {
    pub field: String,
    pub reason: String,
}

impl Invalid {
    pub fn new(field: impl Into<String>, reason: impl Into<String>) -> Invalid {
        Invalid {
            field: field.into(),
            reason: reason.into(),
        }
    }

    /// The same problem seen from a containing section: `under("plugins.budget")` turns
    /// `total_memory_mib` into `plugins.budget.total_memory_mib`.
    pub fn under(self, section: &str) -> Invalid {
        let field = match (section.is_empty(), self.field.is_empty()) {
            (true, _) => self.field,
            (false, true) => section.to_string(),
            (false, false) => format!("{section}.{}", self.field),
        };
        Invalid { field, ..self }
    }
}

impl std::fmt::Display for Invalid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.field.is_empty() {
            write!(f, "{}", self.reason)
        } else {
            write!(f, "`{}`: {}", self.field, self.reason)
        }
    }
}

impl std::error::Error for Invalid {}

#[cfg(test)]
mod tests {
    use super::Invalid;

    #[test]
    fn reads_as_the_field_then_why_and_nests_under_its_section() {
        let bad = Invalid::new("total_memory_mib", "must be at least 16");
        assert_eq!(bad.to_string(), "`total_memory_mib`: must be at least 16");
        let nested = bad.under("plugins.budget");
        assert_eq!(nested.field, "plugins.budget.total_memory_mib");
        assert_eq!(Invalid::new("", "not TOML").to_string(), "not TOML");
        assert_eq!(Invalid::new("", "x").under("config").field, "config");
    }
}
