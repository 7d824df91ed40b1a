//! The health words on the wire, as enums: a check's status, the report's status and a
//! check's rule.
//!
//! Serialized as their snake_case names. Read through a `String` and a match, not serde's
//! derived enum visitor: the dashboard already carries the string path, and a derived
//! visitor per enum costs its wasm budget. Reading stays lenient: a word this side does not
//! know (a newer host's) reads as the cautious variant, never as ok.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

macro_rules! wire_words {
    ($(#[$meta:meta])* $name:ident, unknown = $unknown:ident, { $($(#[$vmeta:meta])* $variant:ident = $word:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vmeta])* $variant,)+
        }

        impl $name {
            /// The word on the wire.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $word,)+
                }
            }

            /// The word read back; one this side does not know is the cautious variant.
            pub fn from_word(word: &str) -> $name {
                match word {
                    $($word => $name::$variant,)+
                    _ => $name::$unknown,
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<$name, D::Error> {
                String::deserialize(d).map(|w| $name::from_word(&w))
            }
        }
    };
}

wire_words!(
    /// One check, effective (after hysteresis) or pending.
    CheckStatus, unknown = Failing, {
        Ok = "ok",
        #[default]
        Failing = "failing",
    }
);

wire_words!(
    /// What the checks add up to.
    HealthStatus, unknown = NotReady, {
        /// Every check holds.
        Ok = "ok",
        /// Only checks that do not affect readiness fail (a quarantined consumer).
        Degraded = "degraded",
        /// A check that affects readiness fails.
        #[default]
        NotReady = "not_ready",
    }
);

wire_words!(
    /// What a check's value must be against its threshold.
    Rule, unknown = Equals, {
        AtLeast = "at_least",
        AtMost = "at_most",
        #[default]
        Equals = "equals",
    }
);

impl CheckStatus {
    /// `Ok` when `ok`, else `Failing`.
    pub fn of(ok: bool) -> CheckStatus {
        if ok {
            CheckStatus::Ok
        } else {
            CheckStatus::Failing
        }
    }
}

impl Rule {
    /// The rule in words, for a line a person reads ("at least").
    pub fn words(self) -> &'static str {
        match self {
            Rule::AtLeast => "at least",
            Rule::AtMost => "at most",
            Rule::Equals => "equals",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_go_out_and_come_back_and_unknown_ones_are_cautious() {
        for s in [CheckStatus::Ok, CheckStatus::Failing] {
            let json = serde_json::to_string(&s).unwrap();
            assert_eq!(serde_json::from_str::<CheckStatus>(&json).unwrap(), s);
        }
        assert_eq!(
            serde_json::to_string(&HealthStatus::NotReady).unwrap(),
            r#""not_ready""#
        );
        assert_eq!(
            serde_json::to_string(&Rule::AtLeast).unwrap(),
            r#""at_least""#
        );
        assert_eq!(
            serde_json::from_str::<CheckStatus>(r#""flapping""#).unwrap(),
            CheckStatus::Failing
        );
        assert_eq!(
            serde_json::from_str::<HealthStatus>(r#""warming""#).unwrap(),
            HealthStatus::NotReady
        );
    }
}
