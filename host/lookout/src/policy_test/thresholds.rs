//! The thresholds of `lookout policy test` (`--min-caught a=0.97,b=0.6,c=0.6`,
//! `--min-kept 0.9`) and their checks against the overall counts. A threshold that cannot be
//! measured — `--min-caught` with no `tp` example — does not hold: a CI gate that checks
//! nothing must not pass.

use super::score::{Placement, Tally};

/// `--min-caught`: the least share of secrets caught, per placement.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct MinCaught(pub [Option<f64>; 3]);

/// Every threshold given; none means the run always passes.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Thresholds {
    pub min_caught: MinCaught,
    /// The least share of non-secrets kept, in every placement.
    pub min_kept: Option<f64>,
}

/// One threshold, checked.
#[derive(Clone, Debug, PartialEq)]
pub struct Check {
    /// `caught a`, `kept c`, …
    pub name: String,
    pub min: f64,
    /// `None` when there was nothing to measure.
    pub actual: Option<f64>,
    pub held: bool,
}

/// Parses `a=0.97,b=0.6,c=0.6` (any of the three; a bare number sets all of them).
pub fn parse_min_caught(text: &str) -> Result<MinCaught, String> {
    let mut min = [None; 3];
    if !text.contains('=') {
        return Ok(MinCaught([Some(parse_fraction(text)?); 3]));
    }
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (letter, value) = part
            .split_once('=')
            .ok_or_else(|| format!("`{part}` is not placement=fraction (a=0.97)"))?;
        let placement = Placement::ALL
            .into_iter()
            .find(|p| letter.trim() == p.letter().to_string())
            .ok_or_else(|| format!("unknown placement `{letter}`: use a, b or c"))?;
        min[placement as usize] = Some(parse_fraction(value.trim())?);
    }
    Ok(MinCaught(min))
}

/// Parses a share between 0 and 1.
pub fn parse_fraction(text: &str) -> Result<f64, String> {
    let value: f64 = text
        .trim()
        .parse()
        .map_err(|_| format!("`{text}` is not a number between 0 and 1"))?;
    if (0.0..=1.0).contains(&value) {
        Ok(value)
    } else {
        Err(format!(
            "`{text}` is not between 0 and 1 (a share: 0.97 is 97 %)"
        ))
    }
}

impl Thresholds {
    /// Each threshold given, checked against `overall`.
    pub fn check(&self, overall: &Tally) -> Vec<Check> {
        let mut checks = Vec::new();
        for placement in Placement::ALL {
            if let Some(min) = self.min_caught.0[placement as usize] {
                checks.push(Check::new(
                    format!("caught {}", placement.letter()),
                    min,
                    overall.caught_rate(placement),
                ));
            }
        }
        if let Some(min) = self.min_kept {
            for placement in Placement::ALL {
                checks.push(Check::new(
                    format!("kept {}", placement.letter()),
                    min,
                    overall.kept_rate(placement),
                ));
            }
        }
        checks
    }
}

impl Check {
    fn new(name: String, min: f64, actual: Option<f64>) -> Check {
        Check {
            name,
            min,
            actual,
            held: actual.is_some_and(|a| a >= min),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn min_caught_takes_any_placement_or_one_share_for_all() {
        assert_eq!(
            parse_min_caught("a=0.97,b=0.6,c=0.6"),
            Ok(MinCaught([Some(0.97), Some(0.6), Some(0.6)]))
        );
        assert_eq!(
            parse_min_caught("b=1"),
            Ok(MinCaught([None, Some(1.0), None]))
        );
        assert_eq!(parse_min_caught("0.5"), Ok(MinCaught([Some(0.5); 3])));
        for (bad, says) in [
            ("d=0.5", "unknown placement `d`"),
            ("a=97", "not between 0 and 1"),
            ("a=x", "not a number"),
            ("a=0.5,b", "not placement=fraction"),
        ] {
            let err = parse_min_caught(bad).unwrap_err();
            assert!(err.contains(says), "{bad}: {err}");
        }
    }

    #[test]
    fn a_threshold_holds_at_the_share_and_fails_below_it_or_with_nothing_to_measure() {
        let overall = Tally {
            tp: 4,
            fp: 2,
            caught: [4, 3, 2],
            kept: [2, 1, 2],
            ..Tally::default()
        };
        let thresholds = Thresholds {
            min_caught: MinCaught([Some(1.0), Some(0.75), Some(0.6)]),
            min_kept: Some(0.9),
        };
        let failed: Vec<_> = thresholds
            .check(&overall)
            .into_iter()
            .filter(|c| !c.held)
            .map(|c| c.name)
            .collect();
        assert_eq!(failed, ["caught c", "kept b"]);
        let no_tp = Tally {
            fp: 1,
            kept: [1; 3],
            ..Tally::default()
        };
        let checks = thresholds.check(&no_tp);
        assert!(!checks[0].held && checks[0].actual.is_none());
        assert!(Thresholds::default().check(&no_tp).is_empty());
    }
}
