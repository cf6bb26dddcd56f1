//! Comparing a block's variants: each variant's rate (clicks or orders per impression)
//! against the first one's, as a relative change with a 95% interval, and a verdict in
//! plain words. The interval is the delta method's on the log of the ratio of two
//! proportions: exact enough at the counts a block collects, and it never crosses zero
//! rates into negatives.

/// z for a two-sided 95% interval.
const Z95: f64 = 1.959_964;

/// A rate's successes out of trials (clicks out of impressions, say).
#[derive(Debug, Clone, Copy)]
pub struct Rate {
    pub hits: u64,
    pub trials: u64,
}

impl Rate {
    /// None without trials, or with more hits than trials (clicks whose impressions
    /// were never sent): no proportion to compare.
    fn share(self) -> Option<f64> {
        (self.trials > 0 && self.hits <= self.trials).then(|| self.hits as f64 / self.trials as f64)
    }
}

/// A variant's rate relative to the control's: `change` is +0.12 for 12% more.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Lift {
    pub change: f64,
    pub low: f64,
    pub high: f64,
}

/// The relative change of `variant`'s rate over `control`'s, with its 95% interval; none
/// while either rate has no hits (the ratio has no spread to speak of yet).
pub fn lift(control: Rate, variant: Rate) -> Option<Lift> {
    let (p0, p1) = (control.share()?, variant.share()?);
    if control.hits == 0 || variant.hits == 0 {
        return None;
    }
    let log_ratio = (p1 / p0).ln();
    let spread = ((1.0 - p0) / control.hits as f64 + (1.0 - p1) / variant.hits as f64).sqrt();
    Some(Lift {
        change: log_ratio.exp() - 1.0,
        low: (log_ratio - Z95 * spread).exp() - 1.0,
        high: (log_ratio + Z95 * spread).exp() - 1.0,
    })
}

fn signed_percent(share: f64) -> String {
    format!("{:+.0}%", share * 100.0)
}

/// What the comparison says, in a sentence: "variant b: CTR +12%, 95% interval +4% to
/// +20%: b does better".
pub fn verdict(
    variant: &str,
    control: &str,
    (metric, hits): (&str, &str),
    lift: Option<Lift>,
) -> String {
    let Some(lift) = lift else {
        return format!(
            "variant {variant}: too few {hits} yet to compare its {metric} with {control}'s"
        );
    };
    let figures = format!(
        "variant {variant}: {metric} {}, 95% interval {} to {}",
        signed_percent(lift.change),
        signed_percent(lift.low),
        signed_percent(lift.high)
    );
    let reading = if lift.low > 0.0 {
        format!("{variant} does better than {control}")
    } else if lift.high < 0.0 {
        format!("{variant} does worse than {control}")
    } else {
        "no clear difference yet: keep both running".to_string()
    };
    format!("{figures}: {reading}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_clear_difference_is_called() {
        let control = Rate {
            hits: 500,
            trials: 10_000,
        };
        let better = Rate {
            hits: 600,
            trials: 10_000,
        };
        let lift = lift(control, better).unwrap();
        assert!((lift.change - 0.2).abs() < 1e-9);
        assert!(lift.low > 0.05 && lift.high < 0.37, "{lift:?}");
        assert!(lift.low > 0.0, "the whole interval above zero");
        let said = verdict("b", "a", ("CTR", "clicks"), Some(lift));
        assert!(
            said.starts_with("variant b: CTR +20%, 95% interval +"),
            "{said}"
        );
        assert!(said.ends_with("b does better than a"), "{said}");
    }

    #[test]
    fn small_samples_are_not_called() {
        let control = Rate {
            hits: 5,
            trials: 100,
        };
        let variant = Rate {
            hits: 6,
            trials: 100,
        };
        let lift = lift(control, variant).unwrap();
        assert!(lift.low < 0.0 && lift.high > 0.0, "{lift:?}");
        assert!(verdict("b", "a", ("CTR", "clicks"), Some(lift)).contains("no clear difference"));
        assert_eq!(super::lift(control, Rate { hits: 0, trials: 0 }), None);
        let more_clicks_than_impressions = Rate { hits: 9, trials: 4 };
        assert_eq!(super::lift(control, more_clicks_than_impressions), None);
        assert!(verdict("b", "a", ("CTR", "clicks"), None).contains("too few clicks"));
    }
}
